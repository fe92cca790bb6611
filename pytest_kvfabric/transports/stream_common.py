"""What the stream transports share besides the wire (tcp, zerocopy, devmem; iouring reuses
the socket helpers): socket options, TCP_INFO, the handshake on a blocking socket, the
busy_poll_us option and the spin-then-select wait of `progress()` / `poll()`.

The protocol itself (what a connection accepts) is `wire`; the frames are `framing`; the
receive side is `stream_target.StreamTarget`, the send side `stream_initiator.StreamInitiator`,
their per-connection state `stream_conn`.
"""
from __future__ import annotations

import selectors
import socket
import struct
import time
from typing import Any, Callable, Iterator, Mapping, Protocol

from . import framing, handshake
from ..errors import TransportError

IOV_MAX = 1024  # Linux UIO_MAXIOV: sendmsg takes at most this many buffers per call
EAGAIN = (BlockingIOError, InterruptedError)  # a non-blocking socket call that would wait
THREAD_NS: Callable[[], int] = time.thread_time_ns  # a system call (~1 µs here): read only while spinning
EPOLL_GRAIN_S = 0.001  # epoll_wait sleeps whole milliseconds, rounded up


def family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def set_tcp_options(sock: socket.socket, options: Mapping[str, Any]) -> None:
    """TCP_NODELAY (a KV page must not wait for Nagle) and optional buffer sizes."""
    if options.get("nodelay", True):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if options.get("sndbuf"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(options["sndbuf"]))
    if options.get("rcvbuf"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(options["rcvbuf"]))


# struct tcp_info (include/uapi/linux/tcp.h), offsets stable since they were added:
# u8 fields first, then u32 from offset 8; u64 pacing/bytes fields from 104.
_TCP_INFO_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("state", 0, "B"),
    ("retransmits", 2, "B"),  # tcpi_retransmits: consecutive RTO retransmits now
    ("rto_us", 8, "I"),
    ("snd_mss", 16, "I"),
    ("unacked", 24, "I"),
    ("lost", 32, "I"),
    ("retrans", 36, "I"),  # segments currently retransmitted and unacked
    ("pmtu", 60, "I"),
    ("rtt_us", 68, "I"),
    ("rttvar_us", 72, "I"),
    ("snd_cwnd", 80, "I"),
    ("total_retrans", 100, "I"),  # tcpi_total_retrans: retransmitted segments over the life
    ("bytes_acked", 120, "Q"),
    ("bytes_received", 128, "Q"),
    ("segs_out", 136, "I"),
    ("segs_in", 140, "I"),
    ("delivery_rate", 160, "Q"),
    ("bytes_sent", 200, "Q"),
    ("bytes_retrans", 208, "Q"),
)
TCP_INFO_LEN = 256


# Spin (epoll with timeout 0) this long in poll()/progress() before sleeping, as RDMA tools
# poll their completion queues (perftest, nixlbench): a sleeping process's wake-up costs
# 30-70 µs on a virtual host, more than the 4 KiB round trip itself. Bounded, so an idle
# agent costs at most this much CPU per wait; busy_poll_us=0 sleeps at once.
DEFAULT_BUSY_POLL_US = 50.0
MAX_BUSY_POLL_US = 1_000_000.0


def busy_poll_s(options: Mapping[str, Any], transport: str) -> float:
    """The busy_poll_us option in seconds, validated (a number in [0, 1e6])."""
    raw = options.get("busy_poll_us", DEFAULT_BUSY_POLL_US)
    try:
        us = float(raw)
    except (TypeError, ValueError):
        us = float("nan")
    if not 0.0 <= us <= MAX_BUSY_POLL_US:  # also rejects NaN
        raise TransportError(
            f"{transport}: option busy_poll_us must be a number of microseconds in "
            f"[0, {MAX_BUSY_POLL_US:.0f}], got {raw!r}"
        )
    return us / 1e6


def parse_tcp_info(buf: bytes) -> dict[str, int]:
    """Decode the fields of struct tcp_info the buffer is long enough to hold (older kernels
    return a shorter struct)."""
    out: dict[str, int] = {}
    for name, off, fmt in _TCP_INFO_FIELDS:
        size = struct.calcsize(fmt)
        if off + size <= len(buf):
            out[name] = struct.unpack_from("<" + fmt, buf, off)[0]
    return out


def tcp_info(sock: socket.socket) -> dict[str, int]:
    try:
        return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN))
    except OSError:
        return {}


def peer_name(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "<unknown peer>"


def exchange_hello(sock: socket.socket, token: str, initiator: str, index: int, connections: int,
                   timeout_s: float, what: str) -> None:
    """Initiator side of the handshake on a blocking socket: read the target's CHALLENGE,
    send the HELLO that proves the token. Bounded by timeout_s; raises TransportError."""
    hs = handshake.InitiatorHandshake(token, initiator, index, connections)
    buf = memoryview(bytearray(framing.HEADER_SIZE + framing.MAX_CONTROL_PAYLOAD))
    deadline = time.monotonic() + timeout_s
    try:
        for _ in range(1000):  # a CHALLENGE is 2 reads; each read waits at most until the deadline
            want = hs.want()
            if not want:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError(f"{what}: no CHALLENGE from the target within {timeout_s:.1f} s")
            sock.settimeout(left)
            n = sock.recv_into(buf[:want])
            if not n:
                raise TransportError(f"{what}: the target closed the connection before its CHALLENGE")
            hs.feed(buf[:n])
        if hs.busy:
            raise TargetBusy(f"{what}: target {hs.error}")
        if hs.error or hs.hello_bytes is None:
            raise TransportError(f"{what}: target {hs.error or 'sent no CHALLENGE'}")
        sock.sendall(hs.hello_bytes)
    except socket.timeout:
        raise TransportError(f"{what}: no CHALLENGE from the target within {timeout_s:.1f} s") from None
    except OSError as exc:
        raise TransportError(f"{what}: handshake failed: {exc}") from None


class TargetBusy(TransportError):
    """The target refused this connection at the door (its places for unauthenticated
    connections were all taken by young ones): nothing was exchanged, another try may pass."""


def connect_with_hello(host: str, port: int, configure: Callable[[socket.socket], None], token: str,
                       initiator: str, index: int, connections: int, deadline: float,
                       what: str, what_connect: str) -> socket.socket:
    """A connected, proven socket: connect, configure, handshake; a BUSY refusal (a stranger
    flood holding the target's pending places) is retried with backoff until `deadline`.
    Raises TransportError (`what_connect: ...` when the connect itself fails)."""
    for attempt in range(10_000):  # bounded by the deadline long before the count
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if attempt:
                raise TransportError(f"{what}: the target stayed busy (every place for a new connection "
                                     "taken by unauthenticated ones) until the connect deadline")
            raise TransportError(f"{what_connect}: timed out")
        try:
            sock = socket.create_connection((host, port), timeout=remaining)
        except OSError as exc:
            raise TransportError(f"{what_connect}: {exc}") from None
        try:
            configure(sock)
            exchange_hello(sock, token, initiator, index, connections, deadline - time.monotonic(), what)
            return sock
        except TargetBusy:
            sock.close()
            time.sleep(min(0.02 * (1 << min(attempt, 5)), max(0.0, deadline - time.monotonic())))
        except OSError as exc:
            sock.close()
            raise TransportError(f"{what} failed: {exc}") from None
        except BaseException:
            sock.close()
            raise
    raise TransportError(f"{what}: the target stayed busy")  # not reached: the deadline ends it


def send_error_and_close(sock: socket.socket, reason: str) -> None:
    """Best effort: tell the peer why, then close (never blocks for more than 0.2 s)."""
    try:
        sock.settimeout(0.2)
        sock.sendall(framing.encode_error(reason))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass




class _SpinOwner(Protocol):
    spin_cpu_ns: int


def spin_then_select(
    select: Callable[[float], list[tuple[selectors.SelectorKey, int]]],
    timeout_s: float,
    busy_s: float,
    owner: _SpinOwner,
    spin_short: bool = False,
) -> Iterator[tuple[list[tuple[selectors.SelectorKey, int]], float, bool]]:
    """The wait of progress() and poll(): select with timeout 0 (spinning) for `busy_s`, then
    sleep in select until `timeout_s` is up. Yields (events, now, last) once per pass, `last`
    when the deadline has passed; the caller handles the events and stops iterating once it
    has something to return (or on `last`). The idle part of the spin (not the handling of
    what arrived during it) is added to owner.spin_cpu_ns. spin_short: also spin out a whole
    wait shorter than epoll's 1 ms grain, which epoll would round up."""
    now = time.monotonic()
    deadline = now + max(timeout_s, 0.0)
    spin_until = now + busy_s
    if spin_short and busy_s and timeout_s < EPOLL_GRAIN_S:
        spin_until = max(spin_until, deadline)
    spin0 = 0  # thread CPU clock when this wait began spinning with nothing to do
    while True:
        remaining = deadline - now
        spinning = now < spin_until
        events = select(0.0 if spinning else max(remaining, 0.0))
        if spin0 and (events or not spinning or remaining <= 0):
            owner.spin_cpu_ns += THREAD_NS() - spin0
            spin0 = 0
        yield events, now, remaining <= 0
        now = time.monotonic()
        if not spin0 and now < spin_until:
            spin0 = THREAD_NS()
