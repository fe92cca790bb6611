"""The transport interface: one-sided writes, as NIXL and Mooncake expose them.

A transport has two halves:
- `Target` (decode side): registers its region, listens, and reports what was placed.
  For one-sided hardware transports (RDMA) the NIC places bytes; for stream transports
  (tcp, zerocopy, iouring, devmem) `progress()` runs the receive loop.
- `Initiator` (prefill side): registers its source region, connects to a target's
  descriptor, posts batches of writes and polls completions. A completion means the bytes
  are placed at the remote end (the target acknowledged them after placing them).

Every blocking call takes a timeout and raises TransportError when it expires.
Timestamps are `time.monotonic_ns()`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ..errors import ProtocolError, TransportError

__all__ = [
    "XFER_DTYPE",
    "COMPLETION_DTYPE",
    "PLACED_DTYPE",
    "NOTIFY_DTYPE",
    "READ_DTYPE",
    "Capability",
    "Target",
    "Initiator",
    "Transport",
    "TransportError",
    "ProtocolError",
    "check_region",
]

# One posted write. `xfer` is the caller's id (index into the plan); `notify` is the request
# id to announce to the target once this write is placed (like RDMA WRITE_WITH_IMM), or -1.
XFER_DTYPE = np.dtype(
    [("xfer", "<u8"), ("src_off", "<u8"), ("dst_off", "<u8"), ("nbytes", "<u8"), ("notify", "<i8")]
)
# Initiator side: which write completed and when the initiator learned it.
COMPLETION_DTYPE = np.dtype([("xfer", "<u8"), ("t_ns", "<u8")])
# Target side: what was placed where, and when the last byte landed.
PLACED_DTYPE = np.dtype([("xfer", "<u8"), ("dst_off", "<u8"), ("nbytes", "<u8"), ("t_ns", "<u8")])
NOTIFY_DTYPE = np.dtype([("request", "<u8"), ("t_ns", "<u8")])
# One posted one-sided READ (initiator pulls): copy the target's [remote_off, remote_off+nbytes)
# into the initiator's own region at local_off. Its completion comes back through poll() as a
# COMPLETION_DTYPE row with this `xfer` (ids are the caller's, shared with writes); a completion
# means every byte is in the local region. Same bounds and integrity rules as writes.
READ_DTYPE = np.dtype([("xfer", "<u8"), ("local_off", "<u8"), ("remote_off", "<u8"), ("nbytes", "<u8")])


@dataclass(frozen=True)
class Capability:
    """Result of a capability probe.

    available=False: `reason` says exactly what is missing (it becomes the skip reason).
    available=True: `reason` is empty and `data_path` says what the transport will do.
    """

    available: bool
    reason: str = ""
    data_path: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, data_path: str, **details: Any) -> "Capability":
        return cls(True, "", data_path, details)

    @classmethod
    def missing(cls, reason: str, **details: Any) -> "Capability":
        return cls(False, reason, "", details)


SHORT_REASON_CHARS = 200  # a skip reason fits a terminal line or two; the rest is in details


def short_reason(reasons: list[str], limit: int = SHORT_REASON_CHARS) -> str:
    """A skip reason of at most ~`limit` characters from several full reasons: each one cut to
    its start, and the count of those left out. The full list belongs in Capability.details."""
    if not reasons:
        return ""
    each = max(60, limit // min(len(reasons), 3))
    parts: list[str] = []
    used = 0
    for i, r in enumerate(reasons):
        head = r if len(r) <= each else r[: each - 3].rstrip(" ;,:") + "..."
        if parts and used + len(head) + 2 > limit:
            parts.append(f"+{len(reasons) - i} more")
            break
        parts.append(head)
        used += len(head) + 2
    return "; ".join(parts)


def check_region(region_len: int, dst_off: int, nbytes: int) -> str | None:
    """Why a write of [dst_off, dst_off+nbytes) does not fit a region, or None if it does."""
    if nbytes < 0 or dst_off < 0:
        return f"negative offset or length (dst_off={dst_off}, nbytes={nbytes})"
    if dst_off + nbytes > region_len:
        return (
            f"write [{dst_off}, {dst_off + nbytes}) outside registered region of {region_len} bytes"
        )
    return None


class Target(ABC):
    """Decode side of a transport."""

    # Thread CPU time this endpoint spent busy-polling with nothing to do (a transport that
    # spins before it sleeps, as RDMA tools poll their queues, adds to it; one that never
    # spins leaves it 0). The Result reports it apart from the CPU that moved bytes.
    spin_cpu_ns: int = 0

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        self.region = region  # writable, contiguous, format "B"
        self.options = dict(options)
        # Called as guard(dst_off, nbytes) before bytes are placed at [dst_off, dst_off+nbytes):
        # the decode endpoint uses it to verify pending pages before their slot is overwritten.
        self.write_guard: Callable[[int, int], None] | None = None

    @abstractmethod
    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        """Start accepting; return a JSON-able descriptor for the initiator (address, rkey, size...)."""

    @abstractmethod
    def progress(self, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Make progress for up to timeout_s; return (placed PLACED_DTYPE, notifies NOTIFY_DTYPE).

        Returns early once something was placed. Raises TransportError if a peer failed,
        ProtocolError (connection closed) on a malformed or out-of-region frame.
        """

    @abstractmethod
    def data_path(self) -> dict[str, Any]:
        """What actually happened on this side (see Initiator.data_path)."""

    @abstractmethod
    def close(self) -> None:
        ...

    def peers_closed(self) -> bool:
        """True once every connected initiator has closed cleanly (end of run)."""
        return False


class Initiator(ABC):
    """Prefill side of a transport."""

    spin_cpu_ns: int = 0  # as Target.spin_cpu_ns
    # True if poll() with a timeout under a millisecond busy-polls it out (an epoll sleep
    # would round it up to a whole one) and adds the idle part to spin_cpu_ns. The pacing
    # loop then hands such waits to poll(); otherwise it polls with poll(0) itself and
    # counts that whole stretch as spin, the transport's work in it included.
    spins_short_waits: bool = False

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        self.region = region
        self.options = dict(options)

    @abstractmethod
    def connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> None:
        ...

    @abstractmethod
    def post(self, batch: np.ndarray, timeout_s: float) -> None:
        """Post a batch (XFER_DTYPE) of writes. Must not copy payload in Python where the
        transport can avoid it. May block on back-pressure, at most timeout_s."""

    @abstractmethod
    def poll(self, timeout_s: float) -> np.ndarray:
        """Completions (COMPLETION_DTYPE) that arrived, waiting at most timeout_s for the first."""

    @abstractmethod
    def outstanding(self) -> int:
        """Writes posted and not yet completed."""

    @abstractmethod
    def data_path(self) -> dict[str, Any]:
        """What the kernel/NIC really did. Keys: transport, description, zero_copy (bool|None),
        and transport-specific evidence (e.g. zc_completions, copied_completions, copied_fraction)."""

    @abstractmethod
    def close(self) -> None:
        ...

    def stats(self) -> dict[str, Any]:
        """Transport counters worth reporting (e.g. tcp retransmits). Optional."""
        return {}

    def post_read(self, batch: np.ndarray, timeout_s: float) -> None:
        """Post a batch (READ_DTYPE) of one-sided reads; completions come through poll() and count
        in outstanding(). A transport that serves reads overrides this and Transport.probe_read."""
        raise TransportError(f"{type(self).__name__} has no one-sided READ")


def anonymous_region(nbytes: int) -> tuple[memoryview, str]:
    """A private anonymous mapping asking for transparent huge pages (MADV_HUGEPAGE), and
    how it is backed. A pool streamed through by the kernel's copies costs a page walk per
    4 KiB page; 2 MiB pages cut the sender's CPU per GB by about 5 % on loopback
    (BENCHMARKS.md). Private, not shared: the kernel gives THP to shared anonymous memory
    only if shmem_enabled allows it, which it usually does not."""
    import mmap

    n = max(int(nbytes), 1)
    mm = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if n < 2 << 20:
        return memoryview(mm), "4 KiB pages (region under 2 MiB)"
    try:
        mm.madvise(mmap.MADV_HUGEPAGE)
        kind = "transparent huge pages requested (madvise MADV_HUGEPAGE)"
    except (OSError, AttributeError) as exc:  # THP compiled out or disabled
        kind = f"4 KiB pages (MADV_HUGEPAGE failed: {exc})"
    return memoryview(mm), kind


class Transport(ABC):
    """A named transport: a probe plus the two halves. Subclasses set name, Initiator, Target."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    initiator_cls: ClassVar[type[Initiator]]
    target_cls: ClassVar[type[Target]]
    # The user parameters it takes (transports/params.py Param rows); None: not declared, not checked
    params: ClassVar[tuple[Any, ...] | None] = None

    @classmethod
    @abstractmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        """Check this host can run the transport; never raises for a missing capability."""

    @classmethod
    def probe_read(cls, options: Mapping[str, Any] | None = None) -> Capability:
        """Whether this transport can serve one-sided READs here (a store scenario needs them);
        unavailable gives the exact skip reason. Default: it has none."""
        return Capability.missing(f"transport {getattr(cls, 'name', cls.__name__)!r} does not implement one-sided READ")

    @classmethod
    def allocate(cls, nbytes: int, options: Mapping[str, Any]) -> memoryview:
        """Allocate an endpoint's region (emulated HBM) in memory this transport can use.

        Default: `anonymous_region` (page aligned, never copied, transparent huge pages
        where the kernel allows them). Transports override it where their data path needs
        other memory (bytearray for liburing's prep functions, a udmabuf dma-buf for devmem,
        hugetlb pages for an RDMA memory region). The caller keeps the returned memoryview
        alive for the whole run and calls `release` at the end."""
        return anonymous_region(nbytes)[0]

    @classmethod
    def release(cls, region: memoryview) -> None:
        """Free what allocate() returned (best effort; views must be released first)."""
        obj = region.obj
        region.release()
        close = getattr(obj, "close", None)
        if close is not None:
            try:
                close()
            except BufferError:
                pass  # another view is still alive; the GC frees it later

    @classmethod
    def initiator(cls, region: memoryview, options: Mapping[str, Any]) -> Initiator:
        return cls.initiator_cls(region, options)

    @classmethod
    def target(cls, region: memoryview, options: Mapping[str, Any]) -> Target:
        return cls.target_cls(region, options)
