"""The store's file tier: one real file on local disk, one fixed-size slot per object.

Opened with O_DIRECT where the filesystem takes it (the page cache would otherwise serve reads
from memory and the tier would measure DRAM twice); where it is refused (tmpfs, some overlay
filesystems) the file is used buffered and `data_path` says so with the reason. Transfers go
through one page-aligned bounce buffer (O_DIRECT needs aligned memory, offsets and lengths;
slots are 4 KiB multiples). Synchronous pread/pwrite: one object per call is already a large
sequential I/O, so io_uring would add no parallelism for a single staging client.
"""
from __future__ import annotations

import mmap
import os
import tempfile
import time
from typing import Any

import numpy as np

ALIGN = 4096


class FileTier:
    def __init__(self, directory: str | None, slots: int, obj_bytes: int, slot_bytes: int,
                 direct: bool = True) -> None:
        self.slots, self.obj_bytes, self.slot_bytes = int(slots), int(obj_bytes), int(slot_bytes)
        fd, self.path = tempfile.mkstemp(prefix="kvfabric-store-", suffix=".kv", dir=directory)
        os.close(fd)
        self.direct = False
        self.how = ""
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        try:
            if not direct:  # benchmarks compare with the page cache (benchmarks/bench_store_file.py)
                raise OSError(0, "not asked for")
            self.fd = os.open(self.path, flags | os.O_DIRECT)
            self.direct = True
            self.how = "O_DIRECT"
        except OSError as exc:
            self.fd = os.open(self.path, flags)
            self.how = f"buffered (O_DIRECT {'refused: ' + str(exc.strerror) if direct else 'not asked for'})"
        try:
            os.ftruncate(self.fd, self.slots * self.slot_bytes)
        except OSError:
            self.close()
            raise
        self._map = mmap.mmap(-1, self.slot_bytes)  # page aligned
        self.buf = np.frombuffer(self._map, dtype=np.uint8)
        self.read_bytes = self.write_bytes = 0
        self.read_ns = self.write_ns = 0

    def write(self, slot: int, src: np.ndarray) -> None:
        """Store one object's bytes (src, obj_bytes long) in `slot`."""
        self.buf[:self.obj_bytes] = src
        t0 = time.monotonic_ns()
        n = os.pwrite(self.fd, self._map, slot * self.slot_bytes)
        self.write_ns += time.monotonic_ns() - t0
        if n != self.slot_bytes:
            raise OSError(f"short write to the file tier ({n} of {self.slot_bytes} B)")
        self.write_bytes += n

    def read(self, slot: int, dst: np.ndarray) -> None:
        """Load `slot`'s object into dst (obj_bytes long)."""
        t0 = time.monotonic_ns()
        n = os.preadv(self.fd, [self._map], slot * self.slot_bytes)
        self.read_ns += time.monotonic_ns() - t0
        if n != self.slot_bytes:
            raise OSError(f"short read from the file tier ({n} of {self.slot_bytes} B)")
        self.read_bytes += n
        dst[:] = self.buf[:self.obj_bytes]

    def stats(self) -> dict[str, Any]:
        return {"path_kind": self.how, "direct": self.direct, "read_bytes": self.read_bytes,
                "write_bytes": self.write_bytes, "read_s": self.read_ns / 1e9, "write_s": self.write_ns / 1e9}

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass
        buf, self.buf = self.buf, np.zeros(0, np.uint8)
        del buf
        try:
            self._map.close()
        except (BufferError, AttributeError):
            pass
