"""The two devmem socket calls Python's socket module cannot express (ctypes over libc).

- `devmem_sendmsg`: sendmsg whose iov_base is an OFFSET into the bound TX dma-buf, with an
  SCM_DEVMEM_DMABUF cmsg carrying the TX binding id (Documentation/networking/devmem.rst,
  "Sending data"); Python's sendmsg only takes buffers.
- `dontneed`: setsockopt(SO_DEVMEM_DONTNEED) returning the kernel's count of frags freed
  (Python's setsockopt discards the positive return value).
"""
from __future__ import annotations

import ctypes
import os

from . import cmsg

_libc = ctypes.CDLL(None, use_errno=True)


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


_libc.sendmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_Msghdr), ctypes.c_int]
_libc.sendmsg.restype = ctypes.c_ssize_t
_libc.setsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
_libc.setsockopt.restype = ctypes.c_int


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def devmem_sendmsg(fd: int, dmabuf_offset: int, nbytes: int, binding_id: int,
                   flags: int = cmsg.MSG_ZEROCOPY | 0x40) -> int:
    """Send [dmabuf_offset, +nbytes) of TX binding `binding_id`; returns bytes accepted.

    Default flags: MSG_ZEROCOPY | MSG_DONTWAIT (0x40). Raises BlockingIOError on EAGAIN.
    """
    iov = _Iovec(ctypes.c_void_p(dmabuf_offset), nbytes)
    ctl = ctypes.create_string_buffer(cmsg.encode_cmsg(*cmsg.encode_tx_cmsg(binding_id)))
    msg = _Msghdr(None, 0, ctypes.pointer(iov), 1, ctypes.cast(ctl, ctypes.c_void_p),
                  len(ctl.raw), 0)
    n = _libc.sendmsg(fd, ctypes.byref(msg), flags)
    if n < 0:
        err = ctypes.get_errno()
        if err in (11,):  # EAGAIN
            raise BlockingIOError(err, os.strerror(err))
        _raise("sendmsg(SCM_DEVMEM_DMABUF)")
    return n


def dontneed(fd: int, runs: list[tuple[int, int]]) -> int:
    """Return tokens (one SO_DEVMEM_DONTNEED call); the kernel's count of frags freed."""
    raw = cmsg.encode_tokens(runs)
    buf = ctypes.create_string_buffer(raw, len(raw))
    r = _libc.setsockopt(fd, cmsg.SOL_SOCKET, cmsg.SO_DEVMEM_DONTNEED, buf, len(raw))
    if r < 0:
        _raise("setsockopt(SO_DEVMEM_DONTNEED)")
    return r


def buffer_address(view: memoryview) -> int:
    """Address of a writable buffer's first byte (to turn a pool slice into a dma-buf offset)."""
    holder = (ctypes.c_char * 1).from_buffer(view)
    try:
        return ctypes.addressof(holder)
    finally:
        del holder
