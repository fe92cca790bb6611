"""The store's file tier: one real file on local disk, one fixed-size slot per object.

Opened with O_DIRECT where the filesystem takes it (the page cache would otherwise serve reads
from memory and the tier would measure DRAM twice); where it is refused (tmpfs, some overlay
filesystems) the file is used buffered and `data_path` says so with the reason. Transfers go
through one page-aligned bounce buffer (O_DIRECT needs aligned memory, offsets and lengths;
slots are 4 KiB multiples). A batch of objects (read_many / write_many) goes out on IO_THREADS
threads at once, each with its own bounce buffer: preadv/pwritev release the GIL, so the disk
sees a queue as io_uring would give it; on this host's virtio disk 4 concurrent O_DIRECT readers
read 1.3-1.5 GB/s where one reads 0.45-1.3 (benchmarks/bench_store_file.py, BENCHMARKS.md).
"""
from __future__ import annotations

import mmap
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

ALIGN = 4096
IO_THREADS = 4


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
        # Unlinked at once: the open descriptor keeps the file, and a store agent killed at teardown
        # (its run cut short) leaves nothing behind on the disk.
        os.unlink(self.path)
        try:
            os.ftruncate(self.fd, self.slots * self.slot_bytes)
        except OSError:
            self.close()
            raise
        self._maps = [mmap.mmap(-1, self.slot_bytes) for _ in range(IO_THREADS)]  # page aligned
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for m in self._maps:
            self._free.put(m)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.read_bytes = self.write_bytes = 0
        self.read_ns = self.write_ns = 0  # wall time of the batches (parallel I/O counts once)

    def _one(self, write: bool, slot: int, data: np.ndarray) -> None:
        buf = self._free.get()
        try:
            view = np.frombuffer(buf, dtype=np.uint8)
            if write:
                view[:self.obj_bytes] = data
                n = os.pwrite(self.fd, buf, slot * self.slot_bytes)
            else:
                n = os.preadv(self.fd, [buf], slot * self.slot_bytes)
            if n != self.slot_bytes:
                raise OSError(f"short {'write to' if write else 'read from'} the file tier ({n} of {self.slot_bytes} B)")
            if not write:
                data[:] = view[:self.obj_bytes]
            del view
        finally:
            self._free.put(buf)

    def _many(self, write: bool, items: Sequence[tuple[int, np.ndarray]]) -> None:
        if not items:
            return
        t0 = time.monotonic_ns()
        if len(items) == 1:
            self._one(write, *items[0])
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="kvf-store-io")
            for f in [self._pool.submit(self._one, write, slot, data) for slot, data in items]:
                f.result()
        took = time.monotonic_ns() - t0
        with self._lock:
            if write:
                self.write_ns += took
                self.write_bytes += len(items) * self.slot_bytes
            else:
                self.read_ns += took
                self.read_bytes += len(items) * self.slot_bytes

    def write_many(self, items: Sequence[tuple[int, np.ndarray]]) -> None:
        """Store each (slot, object bytes) pair, up to IO_THREADS at once."""
        self._many(True, items)

    def read_many(self, items: Sequence[tuple[int, np.ndarray]]) -> None:
        """Load each (slot, destination) pair, up to IO_THREADS at once."""
        self._many(False, items)

    def write(self, slot: int, src: np.ndarray) -> None:
        """Store one object's bytes (src, obj_bytes long) in `slot`."""
        self._many(True, [(slot, src)])

    def read(self, slot: int, dst: np.ndarray) -> None:
        """Load `slot`'s object into dst (obj_bytes long)."""
        self._many(False, [(slot, dst)])

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
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
        for m in getattr(self, "_maps", []):
            try:
                m.close()
            except BufferError:
                pass
