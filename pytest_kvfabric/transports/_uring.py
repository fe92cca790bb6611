"""Thin layer over the `liburing` PyPI package (2026.3.30): only what the iouring transport
needs, with the package's quirks worked around here and nowhere else.

Quirks and how we live with them (measured on this host, Linux 6.18, AMD EPYC without AVX-512):

1. `Ring()`, `Sqe()`, `Sockaddr()`, `Statx()` and `put_sqe()` die with SIGILL: the wheel's
   generated `__init__` zeroes its struct with AVX-512 (`vmovups %zmm0`), which this CPU
   lacks (objdump of liburing.so: those are the only AVX-512 sites, plus an error-name
   compare). We never call them: `Ring.__new__(Ring)` skips the crashing `__init__`, and we
   store a calloc()ed `struct io_uring` in the object's only field (PyOZ puts the Zig struct
   right after the 16-byte PyObject header; its `__del__` free()s that pointer, which is
   right because it came from calloc). `_check_layout` verifies the layout before use.
2. Prep functions take `bytes`/`bytearray` only, always the whole object (no offset, no
   length). We write the whole 64-byte uapi SQE into the next SQ slot ourselves (`put`,
   `put_many`, see "Hot path" below), pointing into the caller's region: no copy, no
   bytearray-backed pool, any buffer (mmap, numpy) works. `_check_encoding` compares our
   bytes with what the package's prep functions write (into a slot from `io_uring_get_sqe`,
   whose `SQE._sqe` pointer is read the same way as (1)), at every ring setup.
3. `CQE.res` raises OSError for any negative value, including a SEND_ZC notification whose
   res has bit 31 set (IORING_NOTIF_USAGE_ZC_COPIED). We never call the accessor: `drain()`
   reads user_data/res/flags straight from the CQ ring memory.
4. The package never releases the GIL, so a blocking `io_uring_wait_cqe*` would freeze every
   other Python thread. We never block inside it: `wait()` poll(2)s the ring fd (the GIL is
   released) and `drain()` only peeks completions that are already there.
5. `ZcrxIfqReg` has no constructor (its struct pointer stays NULL), so ZCRX registration
   goes through the raw io_uring_register(2) syscall with the uapi struct layout (below).

Hot path (why we touch the rings ourselves): one package call per SQE (io_uring_get_sqe +
memmove) and four per CQE (iter_next, cqe[0], string_at, unpack) cost more Python time than
the kernel spends sending 64 KiB. The package's `struct io_uring` is C liburing's (sq: khead,
ktail, ..., sqes, sqe_head, sqe_tail, ...; cq: khead, ktail, ..., cqes, ..., ring_mask,
ring_entries), so `_RingMap` maps the SQE array and the CQ ring with numpy: `put`/`put_many`
write SQEs straight into their slots and bump the library's `sqe_tail` (io_uring_submit then
publishes them exactly as for its own SQEs), `drain_np` copies every posted CQE in one slice
and advances `khead` once. `_RingMap.verify` checks this layout against the package at every
ring setup (io_uring_get_sqe's slot address and tail, io_uring_cq_ready); a mismatch is a
setup failure, never silent. x86-64 is TSO: plain loads/stores are the acquire/release that
liburing's inline helpers use; on any other machine `Ring()` refuses (the probe reports it).
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
import struct
import time
from typing import Any

try:  # the probe reports this text when the package is missing
    import liburing as _L

    IMPORT_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - depends on the environment
    _L = None  # type: ignore[assignment]
    IMPORT_ERROR = f"{type(_exc).__name__}: {_exc}"

_OBJ_DATA = 16  # sizeof(PyObject) on 64-bit CPython: where PyOZ stores the wrapped struct
# struct io_uring_sqe (64 B): opcode u8, flags u8, ioprio u16, fd s32, off u64, addr u64,
# len u32, op flags u32, user_data u64, buf_index u16, personality u16, file_index s32,
# addr3 u64, pad u64.
SQE = struct.Struct("<BBHiQQIIQHHiQQ")
_PLACEHOLDER_SEND = b"\0"
_PLACEHOLDER_RECV = bytearray(1)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.calloc.restype = ctypes.c_void_p
_libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long

SYS_IO_URING_REGISTER = 427
IORING_REGISTER_ZCRX_IFQ = 32
IO_URING_STRUCT_BYTES = 1024  # sizeof(struct io_uring) is ~216; generous on purpose

# Kernel uapi constants, taken from the package where it has them.
if _L is not None:
    OP_SEND = int(_L.io_uring_op.IORING_OP_SEND)
    OP_SEND_ZC = int(_L.io_uring_op.IORING_OP_SEND_ZC)
    OP_RECV = int(_L.io_uring_op.IORING_OP_RECV)
    OP_SENDMSG = int(_L.io_uring_op.IORING_OP_SENDMSG)
    OP_RECVMSG = int(_L.io_uring_op.IORING_OP_RECVMSG)
    OP_SENDMSG_ZC = int(_L.io_uring_op.IORING_OP_SENDMSG_ZC)
    IOSQE_IO_LINK = _L.IOSQE_IO_LINK
    IOSQE_CQE_SKIP_SUCCESS = _L.IOSQE_CQE_SKIP_SUCCESS
    CQE_F_MORE = _L.IORING_CQE_F_MORE
    CQE_F_NOTIF = _L.IORING_CQE_F_NOTIF
    SEND_ZC_REPORT_USAGE = _L.IORING_SEND_ZC_REPORT_USAGE
    NOTIF_USAGE_ZC_COPIED = _L.IORING_NOTIF_USAGE_ZC_COPIED
    SETUP_DEFER_TASKRUN = _L.IORING_SETUP_DEFER_TASKRUN
    SETUP_SINGLE_ISSUER = _L.IORING_SETUP_SINGLE_ISSUER
    SETUP_CQE32 = _L.IORING_SETUP_CQE32


class UringError(OSError):
    """The package or the kernel refused something; str() names the call and the errno."""


def errno_name(err: int) -> str:
    # errno.errorcode maps 95 to ENOTSUP; the kernel source (and `man 2`) say EOPNOTSUPP.
    return "EOPNOTSUPP" if err == errno.EOPNOTSUPP else errno.errorcode.get(err, str(err))


def _ptr_field(obj: Any) -> int:
    return ctypes.c_void_p.from_address(id(obj) + _OBJ_DATA).value or 0


def _check_layout() -> None:
    for cls in (_L.Ring, _L.SQE, _L.CQE):
        if cls.__basicsize__ != _OBJ_DATA + 16:
            raise UringError(
                errno.ENOTSUP,
                f"liburing {cls.__name__} object size {cls.__basicsize__} != 32: unknown package "
                "layout, cannot apply the ring/SQE/CQE workarounds",
            )


def buffer_address(buf: Any) -> int:
    """Address of a contiguous buffer (memoryview, mmap, bytearray, numpy) without copying."""
    import numpy as np

    arr = np.frombuffer(buf, dtype=np.uint8)
    return int(arr.ctypes.data) if arr.size else 0


CQE_DTYPE = None  # numpy dtype of struct io_uring_cqe (16 B), set on first use


def _cqe_dtype(nbytes: int = 16) -> Any:
    global CQE_DTYPE
    import numpy as np

    if CQE_DTYPE is None:
        CQE_DTYPE = np.dtype([("user_data", "<u8"), ("res", "<i4"), ("flags", "<u4")])
    if nbytes == 16:
        return CQE_DTYPE
    return np.dtype({"names": ["user_data", "res", "flags"], "formats": ["<u8", "<i4", "<u4"],
                     "offsets": [0, 8, 12], "itemsize": nbytes})  # CQE32: big_cqe[] ignored


class _RingMap:
    """numpy/ctypes views of the SQE array and CQ ring of the package's `struct io_uring`.

    Offsets are C liburing's x86-64 layout (struct io_uring_sq: 8 pointers, then sqe_head,
    sqe_tail, ring_sz, ring_ptr, ring_mask, ring_entries; struct io_uring_cq at byte 104:
    7 pointers, ring_sz, ring_ptr, ring_mask, ring_entries)."""

    def __init__(self, ring_struct: int, cqe_nbytes: int = 16) -> None:
        import numpy as np

        raw = ctypes.string_at(ring_struct, 192)
        sq_khead, _sq_ktail, _, _, _, _, _, sqes = struct.unpack_from("<8Q", raw, 0)
        self.sq_mask, self.sq_entries = struct.unpack_from("<II", raw, 88)
        cq_khead, cq_ktail, _, _, _, _, cqes = struct.unpack_from("<7Q", raw, 104)
        self.cq_mask, self.cq_entries = struct.unpack_from("<II", raw, 176)
        self.sqe_tail = ctypes.c_uint.from_address(ring_struct + 68)  # the library's own copy
        self.sq_khead = ctypes.c_uint.from_address(sq_khead)
        self.cq_khead = ctypes.c_uint.from_address(cq_khead)
        self.cq_ktail = ctypes.c_uint.from_address(cq_ktail)
        self.sqes_addr = sqes
        self.sq_mem = memoryview((ctypes.c_char * (64 * self.sq_entries)).from_address(sqes)).cast("B")
        self.cqe_nbytes = cqe_nbytes
        cq_raw = np.ctypeslib.as_array((ctypes.c_uint8 * (cqe_nbytes * self.cq_entries)).from_address(cqes))
        self.cqes = cq_raw.view(_cqe_dtype(cqe_nbytes))
        # the same 16-byte CQEs as pairs of u64 (user_data, res | flags << 32) for drain()
        self.cq_q = memoryview(cq_raw).cast("Q") if cqe_nbytes == 16 else None

    def verify(self, ring: Any, entries: int) -> None:
        """Our reading of the layout must agree with what the package itself does."""
        def bad(what: str) -> UringError:
            return UringError(errno.ENOTSUP, f"liburing struct io_uring layout not as expected ({what}): "
                                             "cannot write SQEs / read CQEs directly")
        machine = platform.machine()
        if machine not in ("x86_64", "AMD64"):
            raise bad(f"direct SQ/CQ ring access assumes x86-64 (TSO ordering, LP64 layout); this is {machine}")
        if self.sq_entries != entries or self.sq_mask != entries - 1 or self.cq_mask != self.cq_entries - 1:
            raise bad(f"sq entries {self.sq_entries} mask {self.sq_mask}, cq entries {self.cq_entries}")
        tail = self.sqe_tail.value
        sqe = _L.io_uring_get_sqe(ring)
        if sqe is None:
            raise bad("no free SQE at setup")
        if _ptr_field(sqe) != self.sqes_addr + 64 * (tail & self.sq_mask) or self.sqe_tail.value != tail + 1:
            raise bad(f"io_uring_get_sqe returned {_ptr_field(sqe):#x}, expected "
                      f"{self.sqes_addr + 64 * (tail & self.sq_mask):#x}")
        # hand the slot back as a NOP nobody claims (user_data 0)
        ctypes.memmove(_ptr_field(sqe), SQE.pack(0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 64)
        if _L.io_uring_sq_ready(ring) != (self.sqe_tail.value - self.sq_khead.value) & 0xFFFFFFFF:
            raise bad("io_uring_sq_ready disagrees with sqe_tail - khead")
        if _L.io_uring_cq_ready(ring) != (self.cq_ktail.value - self.cq_khead.value) & 0xFFFFFFFF:
            raise bad("io_uring_cq_ready disagrees with ktail - khead")


class Ring:
    """One io_uring instance, driven from a single thread."""

    def __init__(self, entries: int, flags: int = 0, defer_taskrun: bool = False) -> None:
        if _L is None:
            raise UringError(errno.ENOSYS, f"liburing not importable: {IMPORT_ERROR}")
        _check_layout()
        self.entries = int(entries)
        ring = _L.Ring.__new__(_L.Ring)  # NOT Ring(): its __init__ is AVX-512 code (SIGILL here)
        if _ptr_field(ring) != 0:
            raise UringError(errno.ENOTSUP, "liburing Ring.__new__ left a non-NULL pointer: unknown layout")
        mem = _libc.calloc(1, IO_URING_STRUCT_BYTES)
        if not mem:
            raise MemoryError("calloc(struct io_uring) failed")
        ctypes.c_void_p.from_address(id(ring) + _OBJ_DATA).value = mem  # freed by Ring.__del__
        self._ring = ring
        if defer_taskrun:
            # Completion work runs only when we ask (io_uring_get_events), in batches, instead of
            # interrupting the thread once per finished/linked request. Requires that only the
            # creating thread submits (SINGLE_ISSUER). poll(2) on the ring fd is not woken for
            # deferred work, so an eventfd registered on the ring is what we wait on.
            flags |= SETUP_DEFER_TASKRUN | SETUP_SINGLE_ISSUER
        try:
            _L.io_uring_queue_init(self.entries, ring, flags)
        except OSError as exc:
            raise UringError(exc.errno or 0, f"io_uring_queue_init({entries}, flags={flags:#x}): {exc}") from None
        self.fd = ring.ring_fd
        self._open = True
        self._efd = -1
        wait_fd = self.fd
        if defer_taskrun:
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            _L.io_uring_register_eventfd(ring, self._efd)
            wait_fd = self._efd
        self._wait_fd = wait_fd
        self._poll = select.poll()
        self._poll.register(wait_fd, select.POLLIN)
        self.submits = 0
        self.sqes_submitted = 0
        self._map = _RingMap(_ptr_field(ring), 32 if flags & SETUP_CQE32 else 16)
        self._map.verify(ring, self.entries)
        self._check_encoding()
        self._check_cq()

    # -- submission -----------------------------------------------------------------------
    def _get_sqe(self) -> Any:
        sqe = _L.io_uring_get_sqe(self._ring)
        if sqe is None:  # SQ full: hand what we have to the kernel and retry once
            self.submit()
            sqe = _L.io_uring_get_sqe(self._ring)
            if sqe is None:
                raise UringError(errno.EBUSY, "io_uring submission queue full")
        return sqe

    def _check_encoding(self) -> None:
        """Our SQE encoding must equal what the package's prep functions write (addr aside)."""
        for prep, op, ioprio in (
            (lambda q: _L.io_uring_prep_send(q, 5, _PLACEHOLDER_SEND, 0x100), OP_SEND, 0),
            (lambda q: _L.io_uring_prep_send_zc(q, 5, _PLACEHOLDER_SEND, 0x100, SEND_ZC_REPORT_USAGE),
             OP_SEND_ZC, SEND_ZC_REPORT_USAGE),
            (lambda q: _L.io_uring_prep_recv(q, 5, _PLACEHOLDER_RECV, 0x100), OP_RECV, 0),
        ):
            sqe = self._get_sqe()
            prep(sqe)
            sqe.user_data = 0x5EED
            ptr = _ptr_field(sqe)
            theirs = bytearray(ctypes.string_at(ptr, 64))
            theirs[16:24] = bytes(8)
            ours = SQE.pack(op, 0, ioprio, 5, 0, 0, 1, 0x100, 0x5EED, 0, 0, 0, 0, 0)
            # the slot is already queued: turn it into a NOP whose CQE nobody claims (user_data 0)
            ctypes.memmove(ptr, SQE.pack(0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), 64)
            if bytes(theirs) != ours:
                raise UringError(errno.ENOTSUP, f"liburing wrote SQE {bytes(theirs).hex()} for opcode {op}, "
                                                f"we would write {ours.hex()}: unknown SQE layout")
        self.submit()

    def _room(self, count: int) -> int:
        """Tail index where `count` SQEs fit; submits what is queued first if they do not."""
        m = self._map
        tail = m.sqe_tail.value
        if m.sq_entries - ((tail - m.sq_khead.value) & 0xFFFFFFFF) < count:
            self.submit()
            tail = m.sqe_tail.value
            if m.sq_entries - ((tail - m.sq_khead.value) & 0xFFFFFFFF) < count:
                raise UringError(errno.EBUSY, f"io_uring submission queue has no room for {count} SQEs")
        return tail

    def put(self, opcode: int, fd: int, addr: int, nbytes: int, user_data: int,
            msg_flags: int = 0, sqe_flags: int = 0, ioprio: int = 0) -> None:
        """Write one whole uapi SQE into the next SQ slot (quirk 2: the package's prep
        functions cannot point at a slice; our encoding is checked against theirs at setup)
        and bump the library's sqe_tail, as io_uring_get_sqe would."""
        m = self._map
        tail = m.sqe_tail.value
        if (tail - m.sq_khead.value) & 0xFFFFFFFF >= m.sq_entries:
            tail = self._room(1)
        SQE.pack_into(m.sq_mem, 64 * (tail & m.sq_mask), opcode, sqe_flags, ioprio, fd, 0, addr, nbytes,
                      msg_flags, user_data, 0, 0, 0, 0, 0)
        m.sqe_tail.value = tail + 1

    def put_many(self, sqes_addr: int, count: int) -> None:
        """Copy `count` ready-made 64-byte SQEs (e.g. a numpy array built for a whole chain)
        into consecutive SQ slots: at most two memmoves (the ring may wrap)."""
        m = self._map
        tail = self._room(count)
        first = tail & m.sq_mask
        n1 = min(count, m.sq_entries - first)
        ctypes.memmove(m.sqes_addr + 64 * first, sqes_addr, 64 * n1)
        if count > n1:
            ctypes.memmove(m.sqes_addr, sqes_addr + 64 * n1, 64 * (count - n1))
        m.sqe_tail.value = tail + count

    def prep_send(
        self, fd: int, addr: int, nbytes: int, user_data: int, msg_flags: int = 0,
        sqe_flags: int = 0, zc: bool = False,
    ) -> None:
        if zc:
            self.put(OP_SEND_ZC, fd, addr, nbytes, user_data, msg_flags, sqe_flags, SEND_ZC_REPORT_USAGE)
        else:
            self.put(OP_SEND, fd, addr, nbytes, user_data, msg_flags, sqe_flags)

    def prep_recv(
        self, fd: int, addr: int, nbytes: int, user_data: int, msg_flags: int = 0, sqe_flags: int = 0
    ) -> None:
        self.put(OP_RECV, fd, addr, nbytes, user_data, msg_flags, sqe_flags)

    def prep_nop(self, user_data: int) -> None:
        sqe = self._get_sqe()
        _L.io_uring_prep_nop(sqe)
        sqe.user_data = user_data

    def submit(self) -> int:
        """Hand every prepared SQE to the kernel in one io_uring_enter."""
        if _L.io_uring_sq_ready(self._ring) == 0:
            return 0
        try:
            n = _L.io_uring_submit(self._ring)
        except OSError as exc:
            raise UringError(exc.errno or 0, f"io_uring_submit: {exc}") from None
        self.submits += 1
        self.sqes_submitted += n or 0
        return n or 0

    # -- completion -----------------------------------------------------------------------
    def wait(self, timeout_s: float, extra_fds: tuple[int, ...] = ()) -> list[int]:
        """Block (GIL released) until a CQE is ready, an extra fd is readable, or timeout.

        Returns the extra fds that are readable (the ring itself is checked with cq_ready)."""
        if self.ready():
            return []
        poller = self._poll
        if extra_fds:
            poller = select.poll()
            poller.register(self._wait_fd, select.POLLIN)
            for fd in extra_fds:
                poller.register(fd, select.POLLIN)
        events = poller.poll(max(0, int(timeout_s * 1000 + 0.999)))
        if self._efd >= 0:
            try:
                os.eventfd_read(self._efd)
            except BlockingIOError:
                pass
        self.ready()
        return [fd for fd, _ in events if fd != self._wait_fd]

    def ready(self) -> int:
        """Completions waiting in the CQ ring; runs deferred completion work first if needed."""
        n = _L.io_uring_cq_ready(self._ring)
        if not n:
            # A wake-up may only mean completion work is pending; get_events runs it.
            try:
                _L.io_uring_get_events(self._ring)
            except OSError:
                pass
            n = _L.io_uring_cq_ready(self._ring)
        return n

    def drain_np(self) -> Any:
        """Every completion already posted, as a numpy CQE_DTYPE array (user_data, res, flags
        read from the ring memory: quirk 3), then one khead store for all of them."""
        m = self._map
        head = m.cq_khead.value
        n = (m.cq_ktail.value - head) & 0xFFFFFFFF
        if not n:
            return m.cqes[:0]
        first = head & m.cq_mask
        if first + n <= m.cq_entries:
            out = m.cqes[first:first + n].copy()
        else:
            import numpy as np

            out = np.concatenate((m.cqes[first:], m.cqes[:n - (m.cq_entries - first)]))
        m.cq_khead.value = head + n  # io_uring_cq_advance(n): entries are ours now
        return out

    def drain(self) -> list[tuple[int, int, int]]:
        """Every completion already posted as (user_data, res, flags) tuples, read from the
        ring memory (quirk 3), then one khead store for all of them."""
        m = self._map
        head = m.cq_khead.value
        n = (m.cq_ktail.value - head) & 0xFFFFFFFF
        if not n:
            return []
        if n <= 4 and m.cq_q is not None:  # the common case: plain integer reads, no numpy call
            q, mask, out = m.cq_q, m.cq_mask, []
            for i in range(head, head + n):
                j = (i & mask) << 1
                w = q[j + 1]  # res (s32) | flags (u32) << 32
                res = w & 0xFFFFFFFF
                out.append((q[j], res - (1 << 32) if res & 0x80000000 else res, w >> 32))
        else:
            first = head & m.cq_mask
            if first + n <= m.cq_entries:
                out = m.cqes[first:first + n].tolist()
            else:
                out = m.cqes[first:].tolist() + m.cqes[:n - (m.cq_entries - first)].tolist()
        m.cq_khead.value = head + n
        return out

    def cq_ready(self) -> int:
        """Completions posted and not yet drained (no system call, no deferred work run)."""
        m = self._map
        return (m.cq_ktail.value - m.cq_khead.value) & 0xFFFFFFFF

    def submit_and_get_events(self) -> None:
        """Submit what is queued and run deferred completion work in ONE io_uring_enter
        (io_uring_submit_and_get_events): a linked SQE behind a finished one is issued too."""
        try:
            n = _L.io_uring_submit_and_get_events(self._ring)
        except OSError as exc:
            raise UringError(exc.errno or 0, f"io_uring_submit_and_get_events: {exc}") from None
        self.submits += 1
        self.sqes_submitted += n or 0

    def _check_cq(self) -> None:
        """Our CQ reading against the package's: a NOP's CQE seen through both."""
        self.prep_nop(0xC0DE)
        self.submit()
        deadline = time.monotonic() + 2.0
        while not _L.io_uring_cq_ready(self._ring) and time.monotonic() < deadline:
            self.wait(0.05)
        ok = _L.io_uring_cq_ready(self._ring) == (self._map.cq_ktail.value - self._map.cq_khead.value) & 0xFFFFFFFF
        got = [c for c in self.drain() if c[0]]
        if not ok or got != [(0xC0DE, 0, 0)] or _L.io_uring_cq_ready(self._ring):
            raise UringError(errno.ENOTSUP, f"liburing CQ ring layout not as expected (NOP round trip read {got!r})")

    def close(self) -> None:
        if self._open:
            self._open = False
            _L.io_uring_queue_exit(self._ring)
            if self._efd >= 0:
                os.close(self._efd)

    def __del__(self) -> None:  # pragma: no cover - GC path
        try:
            self.close()
        except Exception:
            pass


def send_zc_supported() -> tuple[bool, str]:
    """Whether the kernel's opcode table has IORING_OP_SEND_ZC and IORING_OP_SENDMSG_ZC (the
    send_zc mode uses the latter) (io_uring_get_probe)."""
    probe = _L.io_uring_get_probe()
    try:
        missing = [name for name, op in (("IORING_OP_SEND_ZC", OP_SEND_ZC), ("IORING_OP_SENDMSG_ZC", OP_SENDMSG_ZC))
                   if not _L.io_uring_opcode_supported(probe, op)]
    finally:
        _L.io_uring_free_probe(probe)
    return not missing, f"{', '.join(missing)} not in io_uring_get_probe() opcode table" if missing else ""


# -- ZCRX ---------------------------------------------------------------------------------
# uapi (include/uapi/linux/io_uring.h, kernel 6.15+; 6.18 layout):
#   struct io_uring_region_desc  { u64 user_addr, size; u32 flags, id; u64 mmap_offset; u64 __resv[4]; }  64 B
#   struct io_uring_zcrx_area_reg { u64 addr, len, rq_area_token; u32 flags, dmabuf_fd; u64 __resv2[2]; } 48 B
#   struct io_uring_zcrx_ifq_reg  { u32 if_idx, if_rxq, rq_entries, flags; u64 area_ptr, region_ptr;
#       struct io_uring_zcrx_offsets { u32 head, tail, rqes, __resv2; u64 __resv[2]; } offsets;
#       u32 zcrx_id, rx_buf_len; u64 __resv[3]; }                                                     96 B
_REGION = struct.Struct("<QQIIQ32x")
_AREA = struct.Struct("<QQQII16x")
_IFQ = struct.Struct("<IIIIQQIIII16xII24x")
ZCRX_RING_FLAGS = 0  # filled below when the package is present
if _L is not None:
    ZCRX_RING_FLAGS = SETUP_DEFER_TASKRUN | SETUP_SINGLE_ISSUER | SETUP_CQE32


class ZcrxIfq:
    """A zero-copy receive interface queue registered on a ring (IORING_REGISTER_ZCRX_IFQ).

    The ring must be created with ZCRX_RING_FLAGS (DEFER_TASKRUN, SINGLE_ISSUER, CQE32);
    the area is page-aligned anonymous memory the NIC's page pool will hand out."""

    def __init__(self, ring: Ring, ifindex: int, rxq: int, area_nbytes: int = 4 << 20,
                 rq_entries: int = 4096) -> None:
        import mmap

        self.area = mmap.mmap(-1, area_nbytes)
        area_addr = buffer_address(self.area)
        self._area_reg = ctypes.create_string_buffer(_AREA.pack(area_addr, area_nbytes, 0, 0, 0), _AREA.size)
        page = mmap.PAGESIZE
        region_nbytes = (64 + 16 * rq_entries + page - 1) // page * page + page
        self._region = ctypes.create_string_buffer(_REGION.pack(0, region_nbytes, 0, 0, 0), _REGION.size)
        self._reg = ctypes.create_string_buffer(
            _IFQ.pack(ifindex, rxq, rq_entries, 0, ctypes.addressof(self._area_reg),
                      ctypes.addressof(self._region), 0, 0, 0, 0, 0, 0), _IFQ.size)
        ret = _libc.syscall(
            ctypes.c_long(SYS_IO_URING_REGISTER), ctypes.c_long(ring.fd),
            ctypes.c_long(IORING_REGISTER_ZCRX_IFQ), ctypes.c_void_p(ctypes.addressof(self._reg)),
            ctypes.c_long(1))
        if ret < 0:
            err = ctypes.get_errno()
            raise UringError(err, f"IORING_REGISTER_ZCRX_IFQ(ifindex={ifindex}, rxq={rxq}) returned "
                                  f"{errno_name(err)} ({os.strerror(err)})")
        fields = _IFQ.unpack(self._reg.raw)
        self.offsets = {"head": fields[6], "tail": fields[7], "rqes": fields[8]}
        self.zcrx_id = fields[10]


def try_zcrx(ifname: str, rxq: int) -> tuple[int, str]:
    """Try a ZCRX registration on (ifname, rxq): (0, "") on success, else (errno, kernel's answer)."""
    import socket

    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError as exc:
        return errno.ENODEV, f"no interface {ifname!r}: {exc}"
    try:
        ring = Ring(8, ZCRX_RING_FLAGS)
    except UringError as exc:
        return exc.errno or errno.EINVAL, f"ZCRX ring setup (DEFER_TASKRUN|SINGLE_ISSUER|CQE32): {exc}"
    try:
        ZcrxIfq(ring, ifindex, rxq, area_nbytes=1 << 20, rq_entries=256)
        return 0, ""
    except UringError as exc:
        return exc.errno or 0, f"{ifname} queue {rxq}: {exc.strerror}"
    finally:
        ring.close()


def selftest(ifname: str, rxq: int) -> dict[str, Any]:
    """What the probe needs to know, gathered by really using the package (run in a child
    process by the probe: if the package dies with SIGILL/SIGSEGV, only the child dies)."""
    out: dict[str, Any] = {"import_error": IMPORT_ERROR}
    if _L is None:
        return out
    try:
        ring = Ring(8)
        ring.prep_nop(0xC0FFEE)
        ring.submit()
        ring.wait(2.0)
        deadline = time.monotonic() + 2.0
        got = [c for c in ring.drain() if c[0]]  # user_data 0: the encoding check's NOPs
        while not got and time.monotonic() < deadline:
            ring.wait(0.1)
            got = [c for c in ring.drain() if c[0]]
        ring.close()
        if got[:1] != [(0xC0FFEE, 0, 0)]:
            out["ring_error"] = f"NOP round trip through the ring returned {got!r}"
    except (UringError, OSError) as exc:
        out["ring_error"] = str(exc)
        return out
    ok, why = send_zc_supported()
    out["send_zc"] = ok
    out["send_zc_error"] = why
    out["zcrx_errno"], out["zcrx_error"] = try_zcrx(ifname, rxq)
    return out


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="io_uring/liburing self-test for the iouring probe")
    ap.add_argument("--ifname", default="lo")
    ap.add_argument("--rxq", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(selftest(args.ifname, args.rxq)))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
