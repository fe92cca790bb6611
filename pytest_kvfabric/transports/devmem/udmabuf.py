"""A dma-buf made from a memfd through /dev/udmabuf: the emulated HBM of a devmem endpoint.

Same recipe as the kernel's devmem selftest (ncdevmem): memfd_create(MFD_ALLOW_SEALING),
ftruncate, F_ADD_SEALS F_SEAL_SHRINK (udmabuf refuses unsealed memfds), then ioctl
UDMABUF_CREATE on /dev/udmabuf, which returns the dma-buf fd. The CPU maps the dma-buf to
fill and verify it, bracketing accesses with DMA_BUF_IOCTL_SYNC.

UAPI (include/uapi/linux/udmabuf.h, include/uapi/linux/dma-buf.h):
    struct udmabuf_create { __u32 memfd; __u32 flags; __u64 offset; __u64 size; };
    #define UDMABUF_FLAGS_CLOEXEC 0x01
    #define UDMABUF_CREATE _IOW('u', 0x42, struct udmabuf_create)
    struct dma_buf_sync { __u64 flags; };
    #define DMA_BUF_IOCTL_SYNC _IOW('b', 0, struct dma_buf_sync)
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
from dataclasses import dataclass, field

UDMABUF_PATH = "/dev/udmabuf"
MISSING_REASON = f"no {UDMABUF_PATH} (kernel built without CONFIG_UDMABUF or module not loaded)"

UDMABUF_CREATE_ARG = struct.Struct("=IIQQ")
UDMABUF_FLAGS_CLOEXEC = 0x01
DMA_BUF_SYNC_ARG = struct.Struct("=Q")
DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE = 1, 2
DMA_BUF_SYNC_RW = 3
DMA_BUF_SYNC_START, DMA_BUF_SYNC_END = 0, 4
F_ADD_SEALS = 1033
F_SEAL_SHRINK = 0x0002


def _iow(type_: str, nr: int, size: int) -> int:
    # _IOC(_IOC_WRITE=1, type, nr, size) on the asm-generic ioctl layout (x86, arm64)
    return (1 << 30) | (size << 16) | (ord(type_) << 8) | nr


UDMABUF_CREATE = _iow("u", 0x42, UDMABUF_CREATE_ARG.size)  # 0x40187542
DMA_BUF_IOCTL_SYNC = _iow("b", 0, DMA_BUF_SYNC_ARG.size)  # 0x40086200


class UdmabufUnavailable(OSError):
    """No way to make a dma-buf here; str() is the probe reason."""


def page_round(nbytes: int) -> int:
    page = mmap.PAGESIZE
    return max(page, (nbytes + page - 1) // page * page)


def missing_reason() -> str | None:
    """Why no udmabuf can be created here, or None if /dev/udmabuf is usable."""
    if not os.path.exists(UDMABUF_PATH):
        return MISSING_REASON
    if not os.access(UDMABUF_PATH, os.R_OK | os.W_OK):
        return f"{UDMABUF_PATH} exists but is not readable and writable by uid {os.getuid()}"
    return None


@dataclass
class Udmabuf:
    """A dma-buf fd plus the CPU mapping of its pages."""

    dmabuf_fd: int
    memfd: int
    nbytes: int
    map: mmap.mmap
    closed: bool = field(default=False)

    def sync(self, start: bool, flags: int = DMA_BUF_SYNC_RW) -> None:
        """Bracket CPU access (start=True before, False after) as dma-buf requires."""
        arg = DMA_BUF_SYNC_ARG.pack(flags | (DMA_BUF_SYNC_START if start else DMA_BUF_SYNC_END))
        fcntl.ioctl(self.dmabuf_fd, DMA_BUF_IOCTL_SYNC, arg)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.map.close()
        except BufferError:
            pass  # a view is still alive; the mapping goes with it
        for fd in (self.dmabuf_fd, self.memfd):
            try:
                os.close(fd)
            except OSError:
                pass


def create(nbytes: int, name: str = "kvfabric-hbm") -> Udmabuf:
    """Create a page-rounded dma-buf of at least nbytes; raise UdmabufUnavailable with the
    exact reason when the host cannot."""
    reason = missing_reason()
    if reason:
        raise UdmabufUnavailable(reason)
    size = page_round(nbytes)
    memfd = os.memfd_create(name, os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    dev = -1
    try:
        os.ftruncate(memfd, size)
        fcntl.fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK)
        dev = os.open(UDMABUF_PATH, os.O_RDWR | os.O_CLOEXEC)
        # a mutable buffer: only then does fcntl.ioctl return the syscall's result (the new
        # dma-buf fd); with bytes it returns the (unchanged) argument bytes instead
        arg = bytearray(UDMABUF_CREATE_ARG.pack(memfd, UDMABUF_FLAGS_CLOEXEC, 0, size))
        try:
            dmabuf_fd = fcntl.ioctl(dev, UDMABUF_CREATE, arg, True)
        except OSError as exc:
            raise UdmabufUnavailable(f"ioctl UDMABUF_CREATE({size} bytes) failed: {exc}") from None
        try:
            m = mmap.mmap(dmabuf_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            os.close(dmabuf_fd)
            raise UdmabufUnavailable(f"mmap of the udmabuf failed: {exc}") from None
    except BaseException:
        os.close(memfd)
        raise
    finally:
        if dev >= 0:
            os.close(dev)
    return Udmabuf(dmabuf_fd, memfd, size, m)
