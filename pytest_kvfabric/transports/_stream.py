"""Shared machinery of the stream transports (tcp, zerocopy; reused by iouring and devmem).

Wire format: `framing` (32-byte headers). Connection setup:

- The Target listens on an ephemeral TCP port of `bind_host`; its descriptor is
  ``{"host", "port", "region_len", "connections", "writev"}`` (plus ``"token"`` only when the
  target was given no token and made one up: the descriptor then travels over the
  controller's authenticated channel).
- WRITEV: an initiator whose target advertises ``"writev": true`` sends the writes of a
  posted batch, per connection, as WRITEV frames (<= 1024 writes, <= writev_max_bytes
  payload each; option writev=false turns them off). The target reads the frame's table,
  validates every entry and calls write_guard for each before it reads one payload byte,
  then places all payloads with one recvmsg_into over the destination slices (a cursor
  over short reads). Sequence numbers, cumulative ACKs, PLACED rows and notifies stay per
  write. A batch whose writes overlap at the destination goes as WRITE frames.
- On accept the Target sends a CHALLENGE (a fresh nonce); each initiator connection answers
  with one HELLO ``{"initiator", "index", "connections", "proof"}`` whose proof is an HMAC of
  the nonce keyed by the run token (`handshake`: the token never crosses the data network).
  Until its HELLO is proven a connection is a stranger: one that closes, sends junk, a bad
  HELLO or a wrong proof, idles past the HELLO deadline, is the oldest (past its grace) of too
  many pending ones, or arrives when all of them are young (a "busy" refusal, which our
  initiators retry) is dropped (with an ERROR frame where the socket takes one) and counted in
  data_path()["strangers_rejected"]; it never fails the run and never writes a byte into the
  region. What an authenticated peer does wrong (a bad write, bytes after BYE) still raises.

Transfer ids on the target. The caller's xfer id never crosses the wire (as with RDMA, the
target of a one-sided write sees only offset, length and immediate). The Target reports
as `xfer` the write's 0-based position in its initiator's post order, which it derives
from the per-connection sequence number: writes are spread round robin, so write k of an
initiator goes to connection ``k % C`` with seq ``k // C + 1``, hence
``xfer = (seq - 1) * C + index``. A caller that posts in a known order (the plan order of
the transfers it posts) maps it back.

Notify ordering. A write carrying a request id (WRITE_WITH_IMM) is announced only once it
and ALL earlier writes of the same initiator are placed, on every connection: the decode
side treats the notification as "the request's KV is complete" (the RDMA guarantee for
WRITE_WITH_IMM on one queue pair), and with several connections a later write can overtake
an earlier one. The Target holds such notifications (no round trip: it knows the round
robin mapping) until the initiator's placed prefix covers them.

Hot path: plain ints and preallocated buffers; numpy only at batch boundaries.
"""
from __future__ import annotations

import os
import secrets
import selectors
import socket
import struct
import time
from bisect import bisect_right
from typing import Any, Callable, Mapping

import numpy as np

from . import framing, handshake
from .base import COMPLETION_DTYPE, NOTIFY_DTYPE, PLACED_DTYPE, Initiator, Target
from ..errors import ProtocolError, TransportError

IOV_MAX = 1024  # Linux UIO_MAXIOV: sendmsg takes at most this many buffers per call
_HDR = framing.HEADER
_PACK = _HDR.pack
_UNPACK = _HDR.unpack_from
_MAGIC = framing.MAGIC
_VERSION = framing.VERSION
_WRITE = framing.WRITE
_WRITEV = framing.WRITEV
_EMPTY = b""  # the prefix of every write of a WRITEV frame after its first (keeps [prefix, payload] pairs)
WRITEV_MAX_BYTES = 4 << 20  # default payload cap of one WRITEV frame (option writev_max_bytes)
# post() queues and returns, as ibv_post_send does; it blocks (pumping) only while more than
# this many bytes are queued and not yet accepted by the kernel (option max_unsent_bytes; 0:
# block until every byte is in the kernel).
MAX_UNSENT_BYTES = 16 << 20
_HS = framing.HEADER_SIZE
_EAGAIN = (BlockingIOError, InterruptedError)
_ACK_BUF_BYTES = 65536
# Shared zero-length results for idle calls (nothing to write into: safe to share).
_NO_PLACED = np.empty(0, PLACED_DTYPE)
_NO_NOTES = np.empty(0, NOTIFY_DTYPE)
_NO_COMPLETIONS = np.empty(0, COMPLETION_DTYPE)
_DRAIN_BUDGET_BYTES = 8 << 20  # per connection per wakeup: one busy peer cannot starve others, acks flow


_thread_ns = time.thread_time_ns  # a system call (~1 µs here): read only while spinning
_EPOLL_GRAIN_S = 0.001  # epoll_wait sleeps whole milliseconds, rounded up


def _now() -> int:
    return time.monotonic_ns()


def _family(host: str) -> int:
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


def _peer_name(sock: socket.socket) -> str:
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


def _send_error_and_close(sock: socket.socket, reason: str) -> None:
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


# ---------------------------------------------------------------------------------------
# Target
# ---------------------------------------------------------------------------------------

# TargetConn.state. STATE_RUN and STATE_CLOSED are part of the subclass interface (a target
# that overrides _on_readable checks them); the others are internal. _AFTER_BYE: only EOF may follow.
_HELLO, STATE_RUN, STATE_CLOSED, _AFTER_BYE = 0, 2, 3, 4


class _Group:
    """Connections of one initiator: the notify-ordering state."""

    __slots__ = ("nconn", "placed", "held")

    def __init__(self, nconn: int) -> None:
        self.nconn = nconn
        self.placed = [0] * nconn  # placed seq per connection index
        self.held: list[tuple[int, int]] = []  # (xfer position, request) awaiting the prefix

    def prefix(self) -> int:
        """Every write position below this is placed."""
        n = self.nconn
        return min(p * n + i for i, p in enumerate(self.placed))


class TargetConn:
    """One accepted connection of a StreamTarget: what subclass hooks receive as `c`."""

    __slots__ = (
        "sock", "fd", "peer", "state", "hdr", "hdr_mv", "hfill", "hs", "index", "nconn",
        "group", "next_seq", "placed_seq", "acked", "out", "pay_view", "pay_pos", "pay_len",
        "pay_dst", "pay_imm", "bye", "writes", "want_write",
        # WRITEV: table being read, then the frame's payload scatter state
        "tab", "tab_fill", "tab_need", "v_hdr", "v_views", "v_ends", "v_ds", "v_ns", "v_ims",
        "v_pos", "v_done", "v_seq0", "v_total", "v_any_imm",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = _peer_name(sock)
        self.state = _HELLO
        self.hdr = bytearray(_HS)
        self.hdr_mv = memoryview(self.hdr)
        self.hfill = 0
        self.hs: handshake.TargetHandshake | None = None  # until the HELLO is proven
        self.index = 0
        self.nconn = 1
        self.group: _Group | None = None
        self.next_seq = 1
        self.placed_seq = 0
        self.acked = 0
        self.out = bytearray()
        self.pay_view: memoryview | None = None
        self.pay_pos = 0
        self.pay_len = 0
        self.pay_dst = 0
        self.pay_imm = 0
        self.bye = False
        self.writes = 0
        self.want_write = False
        self.tab: bytearray | None = None
        self.tab_fill = 0
        self.tab_need = 0
        self.v_hdr: framing.Header | None = None
        self.v_views: list[memoryview] | None = None
        self.v_ends: list[int] = []
        self.v_ds: list[int] = []
        self.v_ns: list[int] = []
        self.v_ims: list[int] = []
        self.v_pos = 0
        self.v_done = 0
        self.v_seq0 = 0
        self.v_total = 0
        self.v_any_imm = False


class StreamTarget(Target):
    """Receive side: listens, authenticates, places payload straight into the region."""

    transport_name = "stream"
    supports_writev = True  # advertised in the descriptor: initiators may send WRITEV frames

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self._mv = region.cast("B") if region.format != "B" else region
        self._region_len = len(self._mv)
        self._sel = selectors.DefaultSelector()
        self._lsock: socket.socket | None = None
        self._conns: dict[int, TargetConn] = {}
        self._groups: dict[str, _Group] = {}
        self._token = str(self.options.get("token") or "")
        self._token_in_descriptor = False
        self._p_x: list[int] = []
        self._p_d: list[int] = []
        self._p_n: list[int] = []
        self._p_t: list[int] = []
        self._n_req: list[int] = []
        self._n_t: list[int] = []
        self._seen = 0
        self._closed_clean = 0
        self.bytes_placed = 0
        self.writes_placed = 0
        self._busy_poll_s = busy_poll_s(self.options, self.transport_name)
        self.acks_sent = 0
        self._gate = handshake.Admission(
            timeout_s=float(self.options.get("hello_timeout_s") or handshake.HELLO_TIMEOUT_S)
        )
        self._hs_buf = memoryview(bytearray(framing.MAX_HELLO_PAYLOAD))  # handshake reads

    # -- hooks for subclasses -------------------------------------------------------------
    def _configure_socket(self, sock: socket.socket) -> None:
        set_tcp_options(sock, self.options)

    # -- setup ----------------------------------------------------------------------------
    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        if not self._token:
            self._token = secrets.token_hex(16)
            self._token_in_descriptor = True
        ls = socket.socket(_family(bind_host), socket.SOCK_STREAM)
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.settimeout(timeout_s)
            ls.bind((bind_host, int(self.options.get("port", 0))))  # fixed port: a NIC steering rule may match it
            ls.listen(1024)  # a burst of strangers must not fill the queue the initiator needs
        except OSError as exc:
            ls.close()
            raise TransportError(f"{self.transport_name}: cannot listen on {bind_host}: {exc}") from None
        ls.setblocking(False)
        self._lsock = ls
        self._sel.register(ls, selectors.EVENT_READ, None)
        host, port = ls.getsockname()[:2]
        desc: dict[str, Any] = {
            "host": host,
            "port": port,
            "region_len": self._region_len,
            "connections": int(self.options.get("connections", 1)),
        }
        if self.supports_writev:
            desc["writev"] = True
        if self._token_in_descriptor:
            desc["token"] = self._token
        return desc

    def _accept(self) -> None:
        assert self._lsock is not None
        now = time.monotonic()
        for _ in range(256):
            try:
                sock, _addr = self._lsock.accept()
            except _EAGAIN:
                return
            except OSError:  # e.g. ECONNABORTED: a stranger reset before we took it
                continue
            sock.setblocking(False)
            c = TargetConn(sock)
            c.hs = handshake.TargetHandshake(self._token)
            self._conns[c.fd] = c
            self._sel.register(sock, selectors.EVENT_READ, c)
            dropped = self._gate.arrive(c.fd, now)
            for fd in dropped:
                if fd == c.fd:  # refused at the door: every pending one is still young
                    self._stranger(c, handshake.REFUSED, handshake.BUSY)
                else:
                    self._stranger(self._conns[fd], handshake.EVICTED,
                                   f"too many connections without a proven HELLO (> {self._gate.max_pending})")
            if c.fd in dropped:
                continue
            try:
                self._configure_socket(sock)
                sock.send(c.hs.challenge())  # 64 bytes into an empty send buffer: never partial
            except OSError as exc:
                self._stranger(c, handshake.CLOSED, str(exc))

    def _stranger(self, c: TargetConn, kind: str, reason: str) -> None:
        """Drop an unauthenticated connection and count it: it never fails the run."""
        self._gate.drop(c.fd, kind)
        if kind != handshake.CLOSED:
            try:  # best effort and never blocking: a stranger may not read
                c.sock.send(framing.encode_error(reason), socket.MSG_DONTWAIT)
            except OSError:
                pass
        self._drop(c)
        c.sock.close()

    def _expire(self, now: float) -> None:
        for fd in self._gate.expired(now):
            c = self._conns.get(fd)
            if c is not None:
                self._stranger(c, handshake.TIMEOUT,
                               f"no proven HELLO within {self._gate.timeout_s:g} s of connecting")

    # -- progress -------------------------------------------------------------------------
    def progress(self, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self._lsock is None:
            raise TransportError(f"{self.transport_name}: progress() before listen()")
        now = time.monotonic()
        deadline = now + max(timeout_s, 0.0)
        spin_until = now + self._busy_poll_s
        select = self._sel.select
        spin0 = 0  # thread CPU clock when this call began spinning with nothing to do
        while True:
            remaining = deadline - now
            spinning = now < spin_until
            events = select(0.0 if spinning else max(remaining, 0.0))
            if spin0 and (events or not spinning or remaining <= 0):
                self.spin_cpu_ns += _thread_ns() - spin0
                spin0 = 0
            for key, mask in events:
                c = key.data
                if c is None:
                    self._accept()
                    continue
                if mask & selectors.EVENT_WRITE:
                    self._flush(c)
                if mask & selectors.EVENT_READ and c.state != STATE_CLOSED:
                    self._on_readable(c)
            if self._gate.next_deadline <= now:
                self._expire(now)
            if self._p_x or self._n_req or remaining <= 0:
                return self._take()
            now = time.monotonic()
            if not spin0 and now < spin_until:
                spin0 = _thread_ns()

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._p_x)
        if not n and not self._n_req:
            return _NO_PLACED, _NO_NOTES  # idle return: no allocation
        placed = np.empty(n, PLACED_DTYPE)
        if n:
            placed["xfer"] = self._p_x
            placed["dst_off"] = self._p_d
            placed["nbytes"] = self._p_n
            placed["t_ns"] = self._p_t
            self._p_x, self._p_d, self._p_n, self._p_t = [], [], [], []
        m = len(self._n_req)
        if not m:
            return placed, _NO_NOTES
        notes = np.empty(m, NOTIFY_DTYPE)
        if m:
            notes["request"] = self._n_req
            notes["t_ns"] = self._n_t
            self._n_req, self._n_t = [], []
        return placed, notes

    def _fail(self, c: TargetConn, reason: str) -> None:
        """Reject the peer: ERROR frame, close, ProtocolError naming peer and reason."""
        self._drop(c)
        _send_error_and_close(c.sock, reason)
        raise ProtocolError(
            f"{self.transport_name}: rejected peer {c.peer} (connection {c.index}): {reason}"
        )

    def _drop(self, c: TargetConn) -> None:
        if c.state != STATE_CLOSED:
            c.state = STATE_CLOSED
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            self._conns.pop(c.fd, None)

    def _on_eof(self, c: TargetConn) -> None:
        self._drop(c)
        c.sock.close()
        if c.pay_view is not None:
            missing = c.pay_len - c.pay_pos
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed mid-write: "
                f"{missing} of {c.pay_len} bytes of write seq {c.next_seq - 1} "
                f"(dst_off {c.pay_dst}) missing"
            )
        if c.v_views is not None:
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed mid-write: "
                f"{c.v_total - c.v_pos} of {c.v_total} payload bytes of the WRITEV frame of "
                f"seq {c.v_seq0}..{c.v_seq0 + len(c.v_ds) - 1} missing"
            )
        if c.tab_need:
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed mid-header: "
                f"{c.tab_fill} of {c.tab_need} WRITEV table bytes after write seq {c.next_seq - 1}"
            )
        if c.hfill:
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed mid-header: "
                f"{c.hfill} of {_HS} header bytes after write seq {c.next_seq - 1}"
            )
        if not c.bye:
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed the "
                f"connection without BYE after {c.writes} writes"
            )
        self._closed_clean += 1

    def _on_readable(self, c: TargetConn) -> None:
        if c.state != STATE_RUN:
            if c.state == _HELLO:
                self._read_hello(c)
            elif c.state == _AFTER_BYE:
                self._after_bye(c)
            if c.state != STATE_RUN:
                return
        self._drain(c)
        if c.state == STATE_CLOSED:
            return
        if c.placed_seq > c.acked:
            c.acked = c.placed_seq
            self.acks_sent += 1
            ack = _PACK(_MAGIC, _VERSION, framing.ACK, 0, 0, c.placed_seq, 0)
            if c.out:
                c.out += ack
                self._flush(c)
                return
            # Nothing queued (the usual case): one send, no queue bookkeeping.
            try:
                n = c.sock.send(ack)
            except _EAGAIN:
                n = 0
            except OSError:
                return  # the peer is gone; reading will report how
            if n < _HS:
                c.out += ack[n:]
                self._flush(c)

    def _flush(self, c: TargetConn) -> None:
        if c.out:
            try:
                n = c.sock.send(c.out)
                del c.out[:n]
            except _EAGAIN:
                pass
            except OSError:
                c.out.clear()  # the peer is gone; reading will report how
        want = bool(c.out)
        if want != c.want_write:
            c.want_write = want
            try:
                self._sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0), c)
            except (KeyError, ValueError):
                pass

    def _read_hello(self, c: TargetConn) -> None:
        """Feed the handshake exactly what it asks for (never a byte past the HELLO)."""
        hs = c.hs
        assert hs is not None
        buf = self._hs_buf
        for _ in range(8):  # a HELLO is 2 reads; a trickling stranger waits for its next wakeup
            try:
                n = c.sock.recv_into(buf[: hs.want()])
            except _EAGAIN:
                return
            except OSError as exc:
                hs.closed()
                self._stranger(c, handshake.CLOSED, f"{hs.reason}: {exc}")
                return
            if n == 0:
                hs.closed()
            else:
                hs.feed(buf[:n])
            if hs.hello is not None:
                self._accept_hello(c, hs.hello)
                return
            if hs.kind:
                self._stranger(c, hs.kind, hs.reason)
                return

    def _accept_hello(self, c: TargetConn, hello: handshake.Hello) -> None:
        """A proven HELLO: from here on c is the run's initiator, and its faults are fatal."""
        self._gate.admitted(c.fd)
        c.hs = None
        bad = handshake.check_hello_ranges(hello)
        if bad:
            self._fail(c, bad)
        index, nconn, ident = hello.index, hello.connections, hello.initiator
        g = self._groups.get(ident)
        if g is None:
            g = self._groups[ident] = _Group(nconn)
        elif g.nconn != nconn:
            self._fail(c, f"HELLO connections {nconn} disagrees with {g.nconn} of the same initiator")
        c.index, c.nconn, c.group = index, nconn, g
        c.hfill = 0
        c.state = STATE_RUN
        self._seen += 1

    def _after_bye(self, c: TargetConn) -> None:
        """After BYE only EOF may come: a byte more is a fault, and nothing more is placed."""
        try:
            n = c.sock.recv_into(c.hdr_mv)
        except _EAGAIN:
            return
        except OSError as exc:
            self._drop(c)
            c.sock.close()
            raise TransportError(f"{self.transport_name}: peer {c.peer}: {exc}") from None
        if n == 0:
            self._on_eof(c)
        else:
            self._fail(c, f"{n} bytes after BYE (after write seq {c.next_seq - 1}); nothing after BYE is placed")

    def _bad_header(self, c: TargetConn) -> None:
        """The fast path refused a header: let framing name exactly why, then reject."""
        try:
            h = framing.decode_header(c.hdr)
            if h.type == framing.WRITE:
                framing.check_write(h, self._region_len, c.next_seq)
            reason = f"unexpected {framing.TYPE_NAMES[h.type]} frame from an initiator"
        except ProtocolError as exc:
            reason = str(exc)
        self._fail(c, reason)

    def _drain(self, c: TargetConn) -> None:
        """Read what is readable on one connection: headers, then payload straight into the
        region. Payload and the next header are read with one recvmsg_into scatter call; the
        next header is validated before a byte of its payload is read."""
        sock = c.sock
        hdr_mv = c.hdr_mv
        region = self._mv
        rlen = self._region_len
        guard = self.write_guard
        budget = _DRAIN_BUDGET_BYTES
        now = _now
        px, pd, pn, pt = self._p_x, self._p_d, self._p_n, self._p_t
        recvmsg_into = sock.recvmsg_into
        placed_any = False
        while budget > 0:
            view = c.pay_view
            try:
                if view is not None:
                    n = recvmsg_into([view[c.pay_pos :], hdr_mv])[0]
                elif c.v_views is not None:
                    bufs = self._v_bufs(c)
                    n = recvmsg_into(bufs)[0]
                elif c.tab_need:
                    n = sock.recv_into(memoryview(c.tab)[c.tab_fill : c.tab_need])
                else:
                    n = sock.recv_into(hdr_mv[c.hfill :]) if c.hfill else sock.recv_into(hdr_mv)
            except _EAGAIN:
                break
            except OSError as exc:
                self._drop(c)
                sock.close()
                raise TransportError(
                    f"{self.transport_name}: peer {c.peer} (connection {c.index}): {exc}"
                ) from None
            if n == 0:
                self._on_eof(c)
                return
            budget -= n
            if view is not None:
                rem = c.pay_len - c.pay_pos
                if n < rem:
                    c.pay_pos += n
                    break  # a short read: the receive queue is empty now

                # write complete; the rest of n is header bytes of the next frame
                c.hfill = n - rem
                c.pay_view = None
                seq = c.next_seq - 1
                self._placed(c, seq, c.pay_dst, c.pay_len, c.pay_imm, now(), px, pd, pn, pt)
                placed_any = True
                short = n < rem + _HS
            elif c.v_views is not None:
                rem = c.v_total - c.v_pos
                if n < rem:
                    c.v_pos += n
                    if self._v_place(c, px, pd, pn, pt):
                        placed_any = True
                    break  # a short read: the receive queue is empty now
                c.hfill = n - rem
                c.v_pos = c.v_total
                self._v_place(c, px, pd, pn, pt)
                c.v_views = None
                placed_any = True
                # (a 1024-entry frame leaves no iovec for the next header: not a short read)
                short = n < rem + _HS if bufs[-1] is hdr_mv else False
            elif c.tab_need:
                c.tab_fill += n
                if c.tab_fill < c.tab_need:
                    break  # a short read: the receive queue is empty now
                if self._v_start(c, px, pd, pn, pt):
                    placed_any = True
                continue
            else:
                short = c.hfill + n < _HS
                c.hfill += n
            while c.hfill == _HS:
                # Inline fast path for a valid WRITE; anything else goes to framing for the reason.
                magic, ver, typ, nb, dst, seq, imm = _UNPACK(c.hdr)
                if magic != _MAGIC or ver != _VERSION or typ != _WRITE:
                    if magic == _MAGIC and ver == _VERSION and typ == framing.BYE and nb == 0:
                        c.bye = True
                        c.hfill = 0
                        c.state = _AFTER_BYE  # not a byte more is read into the region
                        short = True
                        break
                    if magic == _MAGIC and ver == _VERSION and typ == _WRITEV:
                        self._v_header(c)
                        break
                    self._bad_header(c)
                if seq != c.next_seq or dst + nb > rlen:
                    self._bad_header(c)
                c.next_seq = seq + 1
                c.hfill = 0
                if guard is not None:
                    guard(dst, nb)
                if nb == 0:
                    self._placed(c, seq, dst, 0, imm, now(), px, pd, pn, pt)
                    placed_any = True
                    break
                c.pay_view = region[dst : dst + nb]
                c.pay_pos = 0
                c.pay_len = nb
                c.pay_dst = dst
                c.pay_imm = imm
            if short:  # tcp_recvmsg returns less than asked only once the queue is empty
                break
        if placed_any and c.group is not None and c.group.held:
            self._release(c.group)

    # -- WRITEV ---------------------------------------------------------------------------
    def _v_header(self, c: TargetConn) -> None:
        """A WRITEV header arrived: check it, then read its table (no payload byte yet)."""
        try:
            h = framing.decode_header(c.hdr)
            if h.seq != c.next_seq:
                raise ProtocolError(f"write out of sequence: seq {h.seq}, expected {c.next_seq}")
        except ProtocolError as exc:
            self._fail(c, str(exc))
        c.hfill = 0
        if c.tab is None:
            c.tab = bytearray(framing.MAX_WRITEV_ENTRIES * framing.WRITEV_ENTRY_SIZE)
        c.v_hdr = h
        c.tab_fill = 0
        c.tab_need = h.dst_off * framing.WRITEV_ENTRY_SIZE

    def _v_start(
        self, c: TargetConn, px: list[int], pd: list[int], pn: list[int], pt: list[int]
    ) -> bool:
        """The whole table is here: validate every entry, guard every entry, then set up the
        scatter receive of the frame's payload. True if something was placed already (an
        all-empty frame)."""
        h = c.v_hdr
        assert h is not None and c.tab is not None
        need = c.tab_need
        c.tab_need = 0
        try:
            ds, ns, ims = framing.decode_writev_table(
                h, memoryview(c.tab)[:need], self._region_len, c.next_seq
            )
        except ProtocolError as exc:
            self._fail(c, str(exc))
        c.next_seq = h.seq + len(ds)
        guard = self.write_guard
        if guard is not None:
            for d, nb in zip(ds, ns):
                guard(d, nb)
        region = self._mv
        ends = []
        total = 0
        for nb in ns:
            total += nb
            ends.append(total)
        c.v_ds, c.v_ns, c.v_ims, c.v_ends = ds, ns, ims, ends
        c.v_any_imm = any(ims)
        c.v_seq0 = h.seq
        c.v_pos = 0
        c.v_done = 0
        c.v_total = total
        if total == 0:
            self._v_place(c, px, pd, pn, pt)
            return True
        c.v_views = [region[d : d + nb] for d, nb in zip(ds, ns)]
        return False

    def _v_bufs(self, c: TargetConn) -> list[memoryview]:
        """Scatter list for the rest of the frame's payload, then the next header."""
        views = c.v_views
        assert views is not None
        pos = c.v_pos
        if not pos:
            bufs = views + [c.hdr_mv]
        else:
            k = bisect_right(c.v_ends, pos)  # entries [0, k) are complete
            off = pos - (c.v_ends[k - 1] if k else 0)
            bufs = [views[k][off:]] + views[k + 1 :] + [c.hdr_mv]
        if len(bufs) > IOV_MAX:
            del bufs[IOV_MAX:]  # recvmsg takes at most IOV_MAX buffers; the header comes next call
        return bufs

    def _v_place(
        self, c: TargetConn, px: list[int], pd: list[int], pn: list[int], pt: list[int]
    ) -> bool:
        """Report the frame's writes completed by c.v_pos (in order); True if any."""
        k = bisect_right(c.v_ends, c.v_pos)
        i = c.v_done
        if k <= i:
            return False
        t = _now()
        seq0, ds, ns, ims = c.v_seq0, c.v_ds, c.v_ns, c.v_ims
        if c.v_any_imm:
            placed = self._placed
            for j in range(i, k):
                placed(c, seq0 + j, ds[j], ns[j], ims[j], t, px, pd, pn, pt)
        else:
            # No notify in the frame: what _placed does, once for the whole run of writes.
            nconn, m = c.nconn, k - i
            pos0 = (seq0 + i - 1) * nconn + c.index
            px.extend(range(pos0, pos0 + m * nconn, nconn))
            pd.extend(ds[i:k])
            pn.extend(ns[i:k])
            pt.extend([t] * m)
            last = seq0 + k - 1
            c.placed_seq = last
            c.writes += m
            nb = c.v_ends[k - 1] - (c.v_ends[i - 1] if i else 0)
            self.bytes_placed += nb
            self.writes_placed += m
            c.group.placed[c.index] = last
        c.v_done = k
        return True

    def _placed(
        self, c: TargetConn, seq: int, dst: int, nb: int, imm: int, t: int,
        px: list[int], pd: list[int], pn: list[int], pt: list[int],
    ) -> None:
        pos = (seq - 1) * c.nconn + c.index
        px.append(pos)
        pd.append(dst)
        pn.append(nb)
        pt.append(t)
        c.placed_seq = seq
        c.writes += 1
        self.bytes_placed += nb
        self.writes_placed += 1
        g = c.group
        g.placed[c.index] = seq
        if imm:
            if g.nconn == 1:
                self._n_req.append(imm - 1)
                self._n_t.append(t)
            else:
                g.held.append((pos, imm - 1))

    def _release(self, g: _Group) -> None:
        prefix = g.prefix()
        keep = []
        t = _now()
        for pos, req in sorted(g.held):
            if pos < prefix:
                self._n_req.append(req)
                self._n_t.append(t)
            else:
                keep.append((pos, req))
        g.held = keep

    # -- reporting ------------------------------------------------------------------------
    def peers_closed(self) -> bool:
        if not self._groups:
            return False
        expected = sum(g.nconn for g in self._groups.values())
        return self._closed_clean >= expected and not any(
            c.state == STATE_RUN for c in self._conns.values()
        )

    def stats(self) -> dict[str, Any]:
        """Receive-side counters and TCP_INFO of the live connections."""
        per = [tcp_info(c.sock) for c in self._conns.values() if c.state == STATE_RUN]
        return {
            "connections": self._seen,
            "bytes_placed": self.bytes_placed,
            "writes_placed": self.writes_placed,
            "acks_sent": self.acks_sent,
            "tcp_info": per,
        }

    def data_path(self) -> dict[str, Any]:
        return {
            "transport": self.transport_name,
            "description": "recv_into the registered region (kernel copy from the socket)",
            "zero_copy": False,
            "busy_poll_us": round(self._busy_poll_s * 1e6, 3),
            "connections": self._seen,
            "bytes_placed": self.bytes_placed,
            "writes_placed": self.writes_placed,
            **self._gate.report(),
        }

    def close(self) -> None:
        for c in list(self._conns.values()):
            self._drop(c)
            try:
                c.sock.close()
            except OSError:
                pass
        if self._lsock is not None:
            try:
                self._sel.unregister(self._lsock)
            except (KeyError, ValueError):
                pass
            self._lsock.close()
        self._sel.close()


# ---------------------------------------------------------------------------------------
# Initiator
# ---------------------------------------------------------------------------------------


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(v)


def _overlapping(batch: np.ndarray, ds: Any, ns: Any) -> bool:
    """Do any two writes of the batch overlap at the destination? (Entries of one WRITEV
    frame must not: the target guards them all before placing any.) Conservative: an empty
    write inside another counts."""
    n = len(ds)
    if n <= 64:
        prev_end = -1
        for d, nb in sorted(zip(ds, ns)):
            if d < prev_end:
                return True
            prev_end = max(prev_end, d + nb)
        return False
    order = np.argsort(batch["dst_off"], kind="stable")
    starts = batch["dst_off"][order].astype(np.int64)
    ends = starts + batch["nbytes"][order].astype(np.int64)
    return bool((np.maximum.accumulate(ends)[:-1] > starts[1:]).any())


class InitiatorConn:
    """One connection of a StreamInitiator: what subclass hooks receive as `c`."""

    __slots__ = (
        "sock", "fd", "index", "peer", "iov", "iov_i", "iov_off", "iov_writes", "seq",
        "acked", "done", "xfers", "xbase", "reader", "sent_writes", "want_write", "eof",
        "sendmsg", "calls",
    )

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.index = index
        self.peer = _peer_name(sock)
        self.iov: list[Any] = []  # [hdr, payload, hdr, payload, ...] not yet fully sent
        self.iov_i = 0  # first iov not fully sent
        self.iov_off = 0  # bytes of iov[iov_i] already sent
        self.iov_writes = 0  # writes fully sent before iov[0]
        self.seq = 0  # last posted seq
        self.acked = 0  # cumulative ACK from the target
        self.done = 0  # writes reported complete
        self.xfers: list[int] = []  # caller xfer ids of seq xbase+1 ...
        self.xbase = 0
        self.reader = framing.ControlReader()
        self.sent_writes = 0
        self.want_write = False
        self.eof = False
        self.sendmsg = sock.sendmsg
        self.calls: list[int] = []  # zerocopy: sendmsg call id that sent each write's last byte


class StreamInitiator(Initiator):
    """Send side: scatter-gather sendmsg of [hdr, payload, hdr, payload, ...] from the region."""

    transport_name = "stream"
    send_flags = 0

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self._mv = region.cast("B") if region.format != "B" else region
        self._region_len = len(self._mv)
        self._conns: list[InitiatorConn] = []
        self._sel = selectors.DefaultSelector()
        self._rr = 0
        self._posted = 0
        self._completed = 0
        self.connect_ns = 0
        self.bytes_posted = 0
        self._last_stats: dict[str, Any] = {}
        self._closed = False
        self._busy_poll_s = busy_poll_s(self.options, self.transport_name)
        self._ackbuf = bytearray(_ACK_BUF_BYTES)  # acks are read into this (no per-read bytes object)
        self._ackmv = memoryview(self._ackbuf)
        # WRITEV frames: only to a target that advertises them, unless option writev is false.
        self._writev = False
        self.writev_max_bytes = int(self.options.get("writev_max_bytes") or WRITEV_MAX_BYTES)
        self.frames_writev = 0
        raw = self.options.get("max_unsent_bytes", MAX_UNSENT_BYTES)
        try:
            self._max_unsent = int(raw)
        except (TypeError, ValueError):
            self._max_unsent = -1
        if self._max_unsent < 0:
            raise TransportError(
                f"{self.transport_name}: option max_unsent_bytes must be a byte count >= 0, got {raw!r}"
            )
        self._unsent = 0  # bytes queued (headers, tables, payload) and not yet accepted by the kernel

    # -- hooks for subclasses -------------------------------------------------------------
    def _configure_socket(self, sock: socket.socket) -> None:
        set_tcp_options(sock, self.options)

    def _on_sent(self, c: InitiatorConn, before: int, after: int) -> None:
        """Called after each sendmsg call that completed writes [before, after) of c."""

    def _ready(self, c: InitiatorConn) -> int:
        """How many writes of c are complete (default: acknowledged by the target)."""
        return c.acked

    def _read_extra(self, c: InitiatorConn) -> None:
        """Read anything besides acks (zerocopy: the error queue)."""

    # -- setup ----------------------------------------------------------------------------
    def connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> None:
        t0 = _now()
        deadline = time.monotonic() + timeout_s
        try:
            host, port = str(descriptor["host"]), int(descriptor["port"])
        except (KeyError, TypeError, ValueError):
            raise TransportError(
                f"{self.transport_name}: descriptor lacks host/port: {dict(descriptor)!r}"
            ) from None
        nconn = int(self.options.get("connections") or descriptor.get("connections") or 1)
        if nconn < 1:
            raise TransportError(f"{self.transport_name}: connections must be >= 1, got {nconn}")
        token = str(self.options.get("token") or descriptor.get("token") or "")
        ident = secrets.token_hex(8) + f"-{os.getpid()}"
        for i in range(nconn):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"{self.transport_name}: connecting to {host}:{port} timed out after {timeout_s} s"
                )
            try:
                sock = connect_with_hello(host, port, self._configure_socket, token, ident, i, nconn,
                                          deadline, f"{self.transport_name}: HELLO to {host}:{port}",
                                          f"{self.transport_name}: cannot connect to {host}:{port}")
            except TransportError:
                self.close()
                raise
            sock.setblocking(False)
            c = InitiatorConn(sock, i)
            self._conns.append(c)
            self._sel.register(sock, selectors.EVENT_READ, c)
        self.connect_ns = _now() - t0
        self._writev = bool(descriptor.get("writev")) and _truthy(self.options.get("writev", True))
        if "region_len" in descriptor:
            self.remote_region_len = int(descriptor["region_len"])

    # -- posting --------------------------------------------------------------------------
    def post(self, batch: np.ndarray, timeout_s: float) -> None:
        n = len(batch)
        if n == 0:
            return
        if not self._conns:
            raise TransportError(f"{self.transport_name}: post() before connect()")
        rlen = self._region_len
        if n == 1 and len(self._conns) == 1:
            self._post_one(batch, timeout_s)
            return
        if n <= 64:  # plain ints beat numpy field views and reductions for small paced batches
            xs, ss, ds, ns, rs = zip(*batch.tolist()) if n > 1 else ([v] for v in batch[0].tolist())
            bad = [i for i in range(n) if ss[i] + ns[i] > rlen or ns[i] > framing.MAX_WRITE]
            imms = [r + 1 if r >= 0 else 0 for r in rs]
            total = sum(ns)
        else:
            xs = batch["xfer"].tolist()
            ss = batch["src_off"].tolist()
            ds = batch["dst_off"].tolist()
            ns = batch["nbytes"].tolist()
            ends = batch["src_off"] + batch["nbytes"]
            badmask = (ends > rlen) | (batch["nbytes"] > framing.MAX_WRITE)
            bad = np.flatnonzero(badmask).tolist()[:1]
            imms = (batch["notify"] + 1).clip(0).tolist()
            total = int(batch["nbytes"].sum())
        if bad:
            i = bad[0]
            raise TransportError(
                f"{self.transport_name}: write xfer {xs[i]} [{ss[i]}, {ss[i] + ns[i]}) outside "
                f"the local region of {self._region_len} bytes or longer than {framing.MAX_WRITE}"
            )
        conns = self._conns
        nconn = len(conns)
        if self._writev and n > 1 and not _overlapping(batch, ds, ns):
            if nconn == 1:
                framing_bytes = self._emit_writev(conns[0], xs, ss, ds, ns, imms)
            else:
                rr = self._rr
                framing_bytes = 0
                for k in range(min(nconn, n)):
                    ci = (rr + k) % nconn
                    framing_bytes += self._emit_writev(conns[ci], xs[k::nconn], ss[k::nconn],
                                                       ds[k::nconn], ns[k::nconn], imms[k::nconn])
                self._rr = (rr + n) % nconn
            self._posted += n
            self.bytes_posted += total
            self._unsent += total + framing_bytes
            self._push(timeout_s)
            return
        mv = self._mv
        pack = _PACK
        if nconn == 1:
            c = conns[0]
            iov = c.iov
            seq = c.seq
            for s, d, nb, imm in zip(ss, ds, ns, imms):
                seq += 1
                iov.append(pack(_MAGIC, _VERSION, _WRITE, nb, d, seq, imm))
                iov.append(mv[s : s + nb])
            c.seq = seq
            c.xfers.extend(xs)
        else:
            rr = self._rr
            for x, s, d, nb, imm in zip(xs, ss, ds, ns, imms):
                c = conns[rr]
                rr = rr + 1 if rr + 1 < nconn else 0
                c.seq += 1
                c.iov.append(pack(_MAGIC, _VERSION, _WRITE, nb, d, c.seq, imm))
                c.iov.append(mv[s : s + nb])
                c.xfers.append(x)
            self._rr = rr
        self._posted += n
        self.bytes_posted += total
        self._unsent += total + n * _HS
        self._push(timeout_s)

    def _post_one(self, batch: np.ndarray, timeout_s: float) -> None:
        """One write on one connection (the latency case): what post() does without the
        per-batch bookkeeping, which costs tens of µs after a cache-cold wake-up."""
        x, s, d, nb, r = batch.item(0)
        if s + nb > self._region_len or nb > framing.MAX_WRITE:
            raise TransportError(
                f"{self.transport_name}: write xfer {x} [{s}, {s + nb}) outside "
                f"the local region of {self._region_len} bytes or longer than {framing.MAX_WRITE}"
            )
        c = self._conns[0]
        seq = c.seq = c.seq + 1
        c.iov.append(_PACK(_MAGIC, _VERSION, _WRITE, nb, d, seq, r + 1 if r >= 0 else 0))
        c.iov.append(self._mv[s : s + nb])
        c.xfers.append(x)
        self._posted += 1
        self.bytes_posted += nb
        self._unsent += nb + _HS
        self._push(timeout_s)  # (anything queued before goes first: the queue is sent in order)

    def _emit_writev(
        self, c: InitiatorConn, xs: Any, ss: Any, ds: Any, ns: Any, imms: Any
    ) -> int:
        """Queue one connection's writes as WRITEV frames (<= MAX_WRITEV_ENTRIES entries and
        <= writev_max_bytes payload each; a lone write goes as a WRITE). The iov keeps one
        [prefix, payload] pair per write (prefix = header + table for a frame's first write,
        b"" for the others), so the sent-write accounting counts pairs as with WRITE frames.
        Returns the header and table bytes queued (besides the payload)."""
        mv = self._mv
        iov = c.iov
        append = iov.append
        seq = c.seq
        m = len(xs)
        cap = self.writev_max_bytes
        max_e = framing.MAX_WRITEV_ENTRIES
        framing_bytes = 0
        i = 0
        while i < m:
            lim = min(m, i + max_e)
            tot = ns[i]
            j = i + 1
            while j < lim and tot + ns[j] <= cap:
                tot += ns[j]
                j += 1
            if j - i == 1:
                seq += 1
                s, nb = ss[i], ns[i]
                append(_PACK(_MAGIC, _VERSION, _WRITE, nb, ds[i], seq, imms[i]))
                append(mv[s : s + nb])
                framing_bytes += _HS
            else:
                prefix = framing.encode_writev(seq + 1, ds[i:j], ns[i:j], imms[i:j])
                framing_bytes += len(prefix)
                append(prefix)
                s, nb = ss[i], ns[i]
                append(mv[s : s + nb])
                for k in range(i + 1, j):
                    s, nb = ss[k], ns[k]
                    append(_EMPTY)
                    append(mv[s : s + nb])
                seq += j - i
                self.frames_writev += 1
            i = j
        c.seq = seq
        c.xfers.extend(xs)
        return framing_bytes

    def _send_some(self, c: InitiatorConn) -> bool:
        """sendmsg until the queue is empty or the socket is full; True if all was sent."""
        iov = c.iov
        flags = self.send_flags
        sendmsg = c.sendmsg
        while c.iov_i < len(iov):
            i = c.iov_i
            if c.iov_off:
                first = iov[i]
                first = first[c.iov_off :] if isinstance(first, memoryview) else memoryview(first)[c.iov_off :]
                bufs = [first] + iov[i + 1 : i + IOV_MAX]
            else:
                bufs = iov[i : i + IOV_MAX]
            try:
                sent = sendmsg(bufs, (), flags) if flags else sendmsg(bufs)
            except _EAGAIN:
                return False
            except OSError as exc:
                if self._send_would_wait(c, exc):
                    return False
                raise TransportError(
                    f"{self.transport_name}: send to {c.peer} (connection {c.index}) failed: "
                    f"{exc}; {self._posted - self._completed} writes outstanding"
                ) from None
            before = self._advance(c, sent)
            self._on_sent(c, before, c.sent_writes)
            i = c.iov_i
            if i >= 4096:
                cut = i & ~1
                self._retire(c, iov[:cut])
                del iov[:cut]
                c.iov_i -= cut
                c.iov_writes += cut >> 1
        self._queue_sent(c)
        return True

    def _advance(self, c: InitiatorConn, sent: int) -> int:
        """Book `sent` bytes off the head of c's queue: move the cursor over every buffer they
        finish (and the empty ones right after), count the writes now wholly handed to the
        kernel (c.sent_writes). Returns the count before, for _on_sent."""
        self._unsent -= sent
        iov = c.iov
        i, off, n_iov = c.iov_i, c.iov_off + sent, len(c.iov)
        while i < n_iov:
            ln = len(iov[i])
            if off < ln:
                break
            off -= ln
            i += 1
        c.iov_i, c.iov_off = i, off
        before = c.sent_writes
        c.sent_writes = c.iov_writes + (i >> 1)
        return before

    def _queue_sent(self, c: InitiatorConn) -> None:
        """The whole queue is in the kernel: start a fresh one; the old list goes to _retire
        (zerocopy keeps it alive until the kernel releases it)."""
        iov = c.iov
        if iov:
            c.iov_writes += len(iov) >> 1
            c.iov = []
            c.iov_i = 0
            c.iov_off = 0
            self._retire(c, iov)

    def _retire(self, c: InitiatorConn, bufs: list[Any]) -> None:
        """Fully sent buffers leave the queue (zerocopy keeps them alive until released)."""

    def _send_would_wait(self, c: InitiatorConn, exc: OSError) -> bool:
        """An OSError from sendmsg that means 'wait and retry' (zerocopy: ENOBUFS)."""
        return False

    def _set_want_write(self, c: InitiatorConn, want: bool) -> None:
        if c.want_write != want:
            c.want_write = want
            ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self._sel.modify(c.sock, ev, c)

    def _push(self, timeout_s: float) -> None:
        """After queueing: hand the kernel what it takes now (the rest goes out from poll(),
        woken by EPOLLOUT); block only while more than max_unsent_bytes stay queued."""
        for c in self._conns:
            if c.iov_i < len(c.iov):
                self._set_want_write(c, not self._send_some(c))
        if self._unsent > self._max_unsent:
            self._pump(time.monotonic() + timeout_s, timeout_s, self._max_unsent)

    def _pump(self, deadline: float, timeout_s: float, limit: int = 0) -> None:
        """Hand queued bytes to the kernel until at most `limit` stay queued, reading acks
        while waiting (no deadlock: the target never blocks on its ack stream either)."""
        while True:
            pending = False
            for c in self._conns:
                if c.iov_i < len(c.iov) and not self._send_some(c):
                    pending = True
                    self._set_want_write(c, True)
                else:
                    self._set_want_write(c, False)
            if not pending or self._unsent <= limit:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                unsent = sum(len(c.iov) - c.iov_i for c in self._conns) // 2
                raise TransportError(
                    f"{self.transport_name}: post timed out after {timeout_s} s with ~{unsent} "
                    f"writes not yet accepted by the kernel (target not reading?)"
                )
            for key, mask in self._sel.select(min(remaining, 0.5)):
                if mask & selectors.EVENT_READ:
                    self._read(key.data)

    # -- completions ----------------------------------------------------------------------
    def _read(self, c: InitiatorConn) -> None:
        self._read_extra(c)
        if c.eof:
            return
        sock = c.sock
        buf, mv = self._ackbuf, self._ackmv
        for _ in range(64):
            try:
                nread = sock.recv_into(buf)
            except _EAGAIN:
                return
            except OSError as exc:
                raise TransportError(
                    f"{self.transport_name}: lost the connection to target {c.peer} (connection "
                    f"{c.index}): {exc}, with {c.seq - c.acked} writes unacknowledged"
                ) from None
            if not nread:
                c.eof = True
                raise TransportError(
                    f"{self.transport_name}: target {c.peer} (connection {c.index}) closed the "
                    f"connection with {c.seq - c.acked} writes unacknowledged"
                )
            if nread == _HS and not c.reader.pending and buf[3] == framing.ACK and buf[:3] == b"KV\x01":
                # fast path: one cumulative ack
                self._on_ack(c, _UNPACK(buf)[5])
            else:
                try:
                    for h, payload in c.reader.feed(bytes(mv[:nread])):
                        if h.type == framing.ACK:
                            self._on_ack(c, h.seq)
                        elif h.type == framing.ERROR:
                            raise TransportError(
                                f"{self.transport_name}: target {c.peer} (connection {c.index}) "
                                f"rejected us: {payload.decode('utf-8', 'replace')}"
                            )
                        else:
                            raise ProtocolError(
                                f"unexpected {framing.TYPE_NAMES[h.type]} frame from the target"
                            )
                except ProtocolError as exc:
                    raise ProtocolError(
                        f"{self.transport_name}: target {c.peer} (connection {c.index}): {exc}"
                    ) from None
            if nread < _ACK_BUF_BYTES:
                return

    def _on_ack(self, c: InitiatorConn, seq: int) -> None:
        if seq < c.acked or seq > c.seq:
            raise ProtocolError(
                f"{self.transport_name}: target {c.peer} acknowledged seq {seq}; "
                f"posted {c.seq}, acknowledged before {c.acked}"
            )
        c.acked = seq

    def _collect(self) -> np.ndarray:
        ids: list[int] = []
        for c in self._conns:
            ready = self._ready(c)
            if ready > c.done:
                a, b = c.done - c.xbase, ready - c.xbase
                ids += c.xfers[a:b]
                c.done = ready
                if a > 8192:
                    del c.xfers[:b]
                    c.xbase = ready
                    self._trim(c, b)
        n = len(ids)
        if not n:
            return _NO_COMPLETIONS
        self._completed += n
        t = _now()
        out = np.empty(n, COMPLETION_DTYPE)
        if n == 1:  # the latency case: one row assignment is the cheapest construction
            out[0] = (ids[0], t)
            return out
        out["xfer"] = ids
        out["t_ns"] = t
        return out

    def _trim(self, c: InitiatorConn, k: int) -> None:
        """Per-write bookkeeping of the first k writes (since xbase) is no longer needed."""

    def poll(self, timeout_s: float) -> np.ndarray:
        if self._posted == self._completed and not self._more_pending():
            return _NO_COMPLETIONS
        now = time.monotonic()
        deadline = now + max(timeout_s, 0.0)
        spin_until = now + self._busy_poll_s
        if self._busy_poll_s and timeout_s < _EPOLL_GRAIN_S:
            spin_until = max(spin_until, deadline)  # spin out a wait epoll would round up to 1 ms
        select = self._sel.select
        spin0 = 0  # as in StreamTarget.progress
        # Wait in epoll and read only the connections it reports (acks, or the error queue:
        # EPOLLERR shows up as readable), instead of a speculative recv on every connection.
        while True:
            remaining = deadline - now
            spinning = now < spin_until
            events = select(0.0 if spinning else max(remaining, 0.0))
            if spin0 and (events or not spinning or remaining <= 0):
                self.spin_cpu_ns += _thread_ns() - spin0
                spin0 = 0
            for key, mask in events:
                c = key.data
                if mask & selectors.EVENT_WRITE and c.iov_i < len(c.iov):
                    self._set_want_write(c, not self._send_some(c))
                if mask & selectors.EVENT_READ:
                    self._read(c)
            out = self._collect()
            if len(out) or remaining <= 0:
                return out
            now = time.monotonic()
            if not spin0 and now < spin_until:
                spin0 = _thread_ns()

    def _more_pending(self) -> bool:
        return False

    @property
    def spins_short_waits(self) -> bool:  # type: ignore[override]
        return self._busy_poll_s > 0  # busy_poll_us=0: never spin, not even a short wait

    def outstanding(self) -> int:
        return self._posted - self._completed

    # -- reporting ------------------------------------------------------------------------
    def data_path(self) -> dict[str, Any]:
        return {
            "transport": self.transport_name,
            "description": "sendmsg scatter-gather from the region",
            "zero_copy": False,
            "busy_poll_us": round(self._busy_poll_s * 1e6, 3),
            "connections": len(self._conns),
            "writev": self._writev,
            "writev_frames": self.frames_writev,
        }

    def stats(self) -> dict[str, Any]:
        if self._closed:
            return dict(self._last_stats)
        per = [tcp_info(c.sock) for c in self._conns]
        return {
            "connect_ns": self.connect_ns,
            "connections": len(self._conns),
            "bytes_posted": self.bytes_posted,
            "writes_posted": self._posted,
            "writev": self._writev,
            "writev_frames": self.frames_writev,
            "retransmits": sum(p.get("total_retrans", 0) for p in per),
            "tcp_info": per,
        }

    def close(self) -> None:
        """Flush (bounded), say BYE on every connection, close."""
        if self._closed:
            return
        try:
            self._last_stats = self.stats()
        except Exception:  # noqa: BLE001 - reporting must not mask the close
            self._last_stats = {}
        deadline = time.monotonic() + float(self.options.get("close_timeout_s", 2.0))
        for c in self._conns:
            try:
                if c.iov_i < len(c.iov):
                    self._pump(deadline, float(self.options.get("close_timeout_s", 2.0)))
                c.sock.setblocking(True)
                c.sock.settimeout(max(deadline - time.monotonic(), 0.05))
                c.sock.sendall(framing.encode_bye())
                c.sock.shutdown(socket.SHUT_WR)
            except (OSError, TransportError):
                pass
        for c in self._conns:
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
        self._sel.close()
        self._closed = True
