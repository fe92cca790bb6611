"""`zerocopy`: TCP with MSG_ZEROCOPY sends; completions also wait for the kernel's release.

The kernel pins the pool pages of each `sendmsg(..., MSG_ZEROCOPY)` call and later queues a
notification on the socket error queue: a `sock_extended_err` with ee_origin
SO_EE_ORIGIN_ZEROCOPY whose [ee_info, ee_data] is the inclusive range of send-call ids (the
kernel numbers successful MSG_ZEROCOPY calls 0, 1, 2, ... per socket) it released, and
ee_code & SO_EE_CODE_ZEROCOPY_COPIED set when it copied the data after all (always so on
loopback and veth: the skb is looped back to a local receiver). A write is complete only
when the target acknowledged it AND the notification covering the call that sent its last
byte arrived: until then the pool slot must not be reused (the NIC may still read it).
Receive side: as tcp (recv_into the pool; MSG_ZEROCOPY is send-side only).

A scenario that requires zero-copy probes with ``{"require_zero_copy": True, "host": addr}``
(loopback addresses are refused up front) and checks ``data_path()["zero_copy"]`` after the
run (veth is only known to copy once the kernel reported it).
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .stream_common import set_tcp_options
from .stream_conn import InitiatorConn
from .stream_initiator import StreamInitiator
from .stream_target import StreamTarget
from .params import STREAM_PARAMS
from .base import Capability, Transport
from ..errors import TransportError

# Linux constants (Python 3.11's socket module lacks most of them).
SO_ZEROCOPY = getattr(socket, "SO_ZEROCOPY", 60)
MSG_ZEROCOPY = getattr(socket, "MSG_ZEROCOPY", 0x4000000)
SOL_IP = 0
SOL_IPV6 = 41
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
# struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad;
#                            u32 ee_info; u32 ee_data; }  (native byte order, 16 bytes)
SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
_ANC_BUF = socket.CMSG_SPACE(SOCK_EXTENDED_ERR.size + 32)  # + the offender sockaddr
OPTMEM_MAX_PATH = "/proc/sys/net/core/optmem_max"

_RECV_ERR = {(SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)}


@dataclass(frozen=True)
class ZcNotification:
    """The kernel released send calls first..last (inclusive); copied: it copied them."""

    first: int
    last: int
    copied: bool

    @property
    def calls(self) -> int:
        return ((self.last - self.first) & 0xFFFFFFFF) + 1


def parse_zerocopy_cmsg(level: int, type_: int, data: bytes) -> ZcNotification | None:
    """Decode one control message read with MSG_ERRQUEUE.

    Returns None for a cmsg that is not a socket error (IP_RECVERR / IPV6_RECVERR); raises
    ValueError, naming what is wrong, for a truncated error or one that is not a zerocopy
    completion (a real socket error has ee_errno != 0 or another ee_origin)."""
    if (level, type_) not in _RECV_ERR:
        return None
    if len(data) < SOCK_EXTENDED_ERR.size:
        raise ValueError(
            f"truncated sock_extended_err: {len(data)} of {SOCK_EXTENDED_ERR.size} bytes"
        )
    ee_errno, origin, _type, code, _pad, info, last = SOCK_EXTENDED_ERR.unpack_from(data)
    if origin != SO_EE_ORIGIN_ZEROCOPY:
        raise ValueError(
            f"socket error queue holds a non-zerocopy error: ee_origin {origin}, "
            f"ee_errno {ee_errno} ({errno.errorcode.get(ee_errno, '?')})"
        )
    if ee_errno != 0:
        raise ValueError(f"zerocopy notification with ee_errno {ee_errno}")
    return ZcNotification(info, last, bool(code & SO_EE_CODE_ZEROCOPY_COPIED))


def parse_errqueue(ancdata: Iterable[tuple[int, int, bytes]]) -> list[ZcNotification]:
    """All zerocopy notifications in the ancillary data of one recvmsg(MSG_ERRQUEUE)."""
    out = []
    for level, type_, data in ancdata:
        note = parse_zerocopy_cmsg(level, type_, data)
        if note is not None:
            out.append(note)
    return out


class _ZcState:
    """Per-connection send-call accounting."""

    __slots__ = ("ncalls", "done", "early", "zc", "copied", "pinned")

    def __init__(self) -> None:
        self.ncalls = 0  # MSG_ZEROCOPY calls made (next call id)
        self.done = 0  # every call id below this is released
        self.early: dict[int, int] = {}  # out-of-order ranges first -> last
        self.zc = 0
        self.copied = 0
        # Sent buffers the kernel may still read: (last call id, buffers). The frame headers
        # are Python bytes objects; freeing them before the release would put whatever
        # reuses their memory on the wire.
        self.pinned: deque[tuple[int, list[Any]]] = deque()

    def release(self, first: int, last: int) -> None:
        if first == self.done:
            self.done = last + 1
            while self.done in self.early:
                self.done = self.early.pop(self.done) + 1
        elif first > self.done:
            self.early[first] = last
        pinned, done = self.pinned, self.done
        while pinned and pinned[0][0] < done:
            pinned.popleft()


def _data_path(zc: int, copied: int) -> dict[str, Any]:
    total = zc + copied
    frac = copied / total if total else 0.0
    if copied:
        desc = (
            f"TCP sendmsg with MSG_ZEROCOPY: kernel copied {frac * 100:.0f}% of MSG_ZEROCOPY "
            f"sends (loopback and veth always copy)"
        )
    elif total:
        desc = f"TCP sendmsg with MSG_ZEROCOPY: all {total} sends zero-copy (pool pages pinned)"
    else:
        desc = "TCP sendmsg with MSG_ZEROCOPY: no completions yet"
    return {
        "transport": "zerocopy",
        "description": desc,
        "zero_copy": (copied == 0) if total else None,
        "zc_completions": zc,
        "copied_completions": copied,
        "copied_fraction": frac,
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# What a zerocopy target does with READ requests (data_path and probe_read say it).
READ_RESPONSES = (
    "READ_DATA pieces sent with plain sendmsg from the region (kernel copy, not MSG_ZEROCOPY: "
    "a zero-copy response would have to hold the connection's later writes until the kernel "
    "released the pages, not implemented); MSG_ZEROCOPY stays the initiator's write path"
)


class ZeroCopyTarget(StreamTarget):
    transport_name = "zerocopy"

    def data_path(self) -> dict[str, Any]:
        d = super().data_path()
        d["description"] = "recv_into the pool (MSG_ZEROCOPY is send-side only; receive copies)"
        d["read_responses"] = READ_RESPONSES
        return d


class ZeroCopyInitiator(StreamInitiator):
    transport_name = "zerocopy"
    send_flags = MSG_ZEROCOPY

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self._zc: dict[int, _ZcState] = {}

    def configure_socket(self, sock: socket.socket) -> None:
        set_tcp_options(sock, self.options)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        except OSError as exc:
            raise TransportError(f"zerocopy: setsockopt(SO_ZEROCOPY) failed: {exc}") from None

    def _state(self, c: InitiatorConn) -> _ZcState:
        st = self._zc.get(c.index)
        if st is None:
            st = self._zc[c.index] = _ZcState()
        return st

    def on_sent(self, c: InitiatorConn, before: int, after: int) -> None:
        st = self._state(c)
        call = st.ncalls
        st.ncalls = call + 1
        if after > before:
            c.calls += [call] * (after - before)

    def retire(self, c: InitiatorConn, bufs: list[Any]) -> None:
        st = self._state(c)
        st.pinned.append((st.ncalls - 1, bufs))

    def send_would_wait(self, c: InitiatorConn, exc: OSError) -> bool:
        # ENOBUFS: the unread notifications exhausted optmem; read them and retry.
        if exc.errno == errno.ENOBUFS:
            self.read_extra(c)
            time.sleep(0.0001)
            return True
        return False

    def read_extra(self, c: InitiatorConn) -> None:
        st = self._state(c)
        recvmsg = c.sock.recvmsg
        for _ in range(4096):
            try:
                _data, anc, _flags, _addr = recvmsg(0, _ANC_BUF, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                raise TransportError(f"zerocopy: reading the error queue of {c.peer}: {exc}") from None
            try:
                notes = parse_errqueue(anc)
            except ValueError as exc:
                raise TransportError(f"zerocopy: connection to {c.peer}: {exc}") from None
            for n in notes:
                st.release(n.first, n.last)
                if n.copied:
                    st.copied += n.calls
                else:
                    st.zc += n.calls

    def ready(self, c: InitiatorConn) -> int:
        st = self._state(c)
        released = c.xbase + bisect_left(c.calls, st.done)
        return min(c.acked, released)

    def trim(self, c: InitiatorConn, k: int) -> None:
        del c.calls[:k]

    def more_pending(self) -> bool:
        return any(st.done < st.ncalls for st in self._zc.values())

    def data_path(self) -> dict[str, Any]:
        zc = sum(st.zc for st in self._zc.values())
        copied = sum(st.copied for st in self._zc.values())
        d = _data_path(zc, copied)
        d["connections"] = len(self._conns)
        d["send_calls"] = sum(st.ncalls for st in self._zc.values())
        d.update(self.read_report())
        return d


class ZeroCopyTransport(Transport):
    name = "zerocopy"
    params = STREAM_PARAMS
    description = "TCP with MSG_ZEROCOPY sends (completions from the socket error queue)"
    initiator_cls = ZeroCopyInitiator
    target_cls = ZeroCopyTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        try:
            with open(OPTMEM_MAX_PATH) as f:
                optmem = int(f.read().strip())
        except (OSError, ValueError) as exc:
            return Capability.missing(f"cannot read {OPTMEM_MAX_PATH} (net.core.optmem_max): {exc}")
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            return Capability.missing(f"cannot create a TCP socket: {exc}")
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        except OSError as exc:
            return Capability.missing(
                f"setsockopt(SOL_SOCKET, SO_ZEROCOPY) failed: {exc} (kernel without MSG_ZEROCOPY, "
                f"needs Linux >= 4.14)"
            )
        finally:
            s.close()
        opts = options or {}
        host = str(opts.get("host") or opts.get("bind_host") or "")
        if opts.get("require_zero_copy") and _is_loopback(host):
            return Capability.missing(
                f"zero-copy required, but the data path is loopback ({host}): the kernel copies "
                f"every MSG_ZEROCOPY send on loopback and veth (needs a real NIC)",
                optmem_max=optmem,
            )
        return Capability.ok(
            "TCP sendmsg with MSG_ZEROCOPY from the pool, completions from the socket error "
            "queue; the kernel copies on loopback and veth (zero-copy needs a real NIC)",
            optmem_max=optmem,
        )

    @classmethod
    def probe_read(cls, options: Mapping[str, Any] | None = None) -> Capability:
        cap = cls.probe(options)
        if not cap.available:
            return cap
        return Capability.ok("one-sided READ over the stream (READ request, READ_DATA pieces): "
                             + READ_RESPONSES, zero_copy=False)
