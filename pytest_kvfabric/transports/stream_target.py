"""The receive side of the stream transports (tcp, zerocopy, devmem): `StreamTarget`.

Frames: `framing`; what a connection accepts: `wire` (every rule once); shared socket
helpers and the wait: `stream_common`; the send side: `stream_initiator`. Connection setup:

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

Hot path: plain ints and preallocated buffers; numpy only at batch boundaries. The WRITE
header fast path is `wire.TargetWire.write_header`, called from `drain`'s loop.
"""
from __future__ import annotations

import secrets
import selectors
import socket
import time
from typing import Any, Mapping

import numpy as np

from . import framing, handshake, wire
from .base import NOTIFY_DTYPE, PLACED_DTYPE, Target
from .stream_common import EAGAIN, IOV_MAX, busy_poll_s, family, set_tcp_options, spin_then_select, tcp_info
from .stream_conn import STATE_AFTER_BYE, STATE_CLOSED, STATE_HELLO, STATE_RUN, Group, TargetConn
from .stream_rx import StreamReceive
from ..errors import TransportError

_HS = framing.HEADER_SIZE
# Shared zero-length results for idle calls (nothing to write into: safe to share).
_NO_PLACED = np.empty(0, PLACED_DTYPE)
_NO_NOTES = np.empty(0, NOTIFY_DTYPE)


class StreamTarget(StreamReceive, Target):
    """Receive side: listens, authenticates, places payload straight into the region.

    Hooks a stream transport overrides (everything else is the shared machinery):

    - ``transport_name`` (class attribute, used in every error) and ``supports_writev``
      (advertise WRITEV frames; False where the receive path cannot scatter them).
    - ``configure_socket(sock)``: socket options of each accepted connection (default:
      `set_tcp_options`: TCP_NODELAY, SO_SNDBUF/SO_RCVBUF from the options).
    - ``on_readable(c)``: read what a readable connection holds (default: the HELLO, then
      ``drain``: headers accepted by ``c.wire``, payload straight into the region). An
      override (devmem receives with recvmsg cmsgs) checks ``c.state`` against
      ``STATE_RUN`` / ``STATE_CLOSED``; until its HELLO is proven ``c.hs`` is the
      connection's `handshake.TargetHandshake` and ``c.group`` is None.
    - ``data_path()`` / ``stats()`` / ``close()``: extend with the transport's own facts.

    Services an override calls: ``accept_hello(c, hello)`` (a proven HELLO),
    ``stranger(c, kind, reason)`` (drop and count an unauthenticated peer; never fails the
    run), ``fail(c, reason)`` (reject an authenticated peer: ERROR frame, close, raise),
    ``placed(c, seq, dst, nbytes, imm, t_ns, *rows)`` then ``release(c.group)`` (report a
    placed write; notifications wait for the initiator's placed prefix), ``flush(c)`` (send
    queued ACK bytes), ``drop(c)`` (forget a connection), ``on_eof(c)`` (the peer closed).
    ``c.wire`` (`wire.TargetWire`) is the connection's protocol state: feed it, never
    re-check a header by hand.
    """

    transport_name = "stream"
    supports_writev = True  # advertised in the descriptor: initiators may send WRITEV frames
    supports_reads = True  # advertised in the descriptor: initiators may send READ requests

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self._mv = region.cast("B") if region.format != "B" else region
        self._region_len = len(self._mv)
        self._sel = selectors.DefaultSelector()
        self._lsock: socket.socket | None = None
        self._conns: dict[int, TargetConn] = {}
        self._groups: dict[str, Group] = {}
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
        self.reads_served = 0
        self.bytes_served = 0
        self._gate = handshake.Admission(
            timeout_s=float(self.options.get("hello_timeout_s") or handshake.HELLO_TIMEOUT_S)
        )
        self._hs_buf = memoryview(bytearray(framing.MAX_HELLO_PAYLOAD))  # handshake reads

    # -- hooks for subclasses -------------------------------------------------------------
    def configure_socket(self, sock: socket.socket) -> None:
        set_tcp_options(sock, self.options)

    # -- setup ----------------------------------------------------------------------------
    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        if not self._token:
            self._token = secrets.token_hex(16)
            self._token_in_descriptor = True
        ls = socket.socket(family(bind_host), socket.SOCK_STREAM)
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
        if self.supports_reads:
            desc["reads"] = True
        if self._token_in_descriptor:
            desc["token"] = self._token
        return desc

    def _accept(self) -> None:
        assert self._lsock is not None
        now = time.monotonic()
        for _ in range(256):
            try:
                sock, _addr = self._lsock.accept()
            except EAGAIN:
                return
            except OSError:  # e.g. ECONNABORTED: a stranger reset before we took it
                continue
            sock.setblocking(False)
            c = TargetConn(sock, wire.TargetWire(self._region_len, writev=self.supports_writev,
                                                  reads=self.supports_reads))
            c.hs = handshake.TargetHandshake(self._token)
            self._conns[c.fd] = c
            self._sel.register(sock, selectors.EVENT_READ, c)
            dropped = self._gate.arrive(c.fd, now)
            for fd in dropped:
                if fd == c.fd:  # refused at the door: every pending one is still young
                    self.stranger(c, handshake.REFUSED, handshake.BUSY)
                else:
                    self.stranger(self._conns[fd], handshake.EVICTED,
                                  f"too many connections without a proven HELLO (> {self._gate.max_pending})")
            if c.fd in dropped:
                continue
            try:
                self.configure_socket(sock)
                sock.send(c.hs.challenge())  # 64 bytes into an empty send buffer: never partial
            except OSError as exc:
                self.stranger(c, handshake.CLOSED, str(exc))

    def stranger(self, c: TargetConn, kind: str, reason: str) -> None:
        """Drop an unauthenticated connection and count it: it never fails the run."""
        self._gate.drop(c.fd, kind)
        if kind != handshake.CLOSED:
            try:  # best effort and never blocking: a stranger may not read
                c.sock.send(framing.encode_error(reason), socket.MSG_DONTWAIT)
            except OSError:
                pass
        self.drop(c)
        c.sock.close()

    def _expire(self, now: float) -> None:
        for fd in self._gate.expired(now):
            c = self._conns.get(fd)
            if c is not None:
                self.stranger(c, handshake.TIMEOUT,
                               f"no proven HELLO within {self._gate.timeout_s:g} s of connecting")

    # -- progress -------------------------------------------------------------------------
    def progress(self, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self._lsock is None:
            raise TransportError(f"{self.transport_name}: progress() before listen()")
        for events, now, last in spin_then_select(self._sel.select, timeout_s, self._busy_poll_s, self):
            for key, mask in events:
                c = key.data
                if c is None:
                    self._accept()
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(c)
                if mask & selectors.EVENT_READ and c.state != STATE_CLOSED:
                    self.on_readable(c)
            if self._gate.next_deadline <= now:
                self._expire(now)
            if self._p_x or self._n_req or last:
                break
        return self._take()

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

    def drop(self, c: TargetConn) -> None:
        if c.state != STATE_CLOSED:
            c.state = STATE_CLOSED
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            self._conns.pop(c.fd, None)

    def on_eof(self, c: TargetConn) -> None:
        self.drop(c)
        c.sock.close()
        if c.pay_view is not None:
            missing = c.pay_len - c.pay_pos
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed mid-write: "
                f"{missing} of {c.pay_len} bytes of write seq {c.wire.next_seq - 1} "
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
                f"{c.tab_fill} of {c.tab_need} WRITEV table bytes after write seq {c.wire.next_seq - 1}"
            )
        if c.hfill:
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed mid-header: "
                f"{c.hfill} of {_HS} header bytes after write seq {c.wire.next_seq - 1}"
            )
        if not c.wire.bye:
            raise TransportError(
                f"{self.transport_name}: peer {c.peer} (connection {c.index}) closed the "
                f"connection without BYE after {c.writes} writes"
            )
        self._closed_clean += 1

    def on_readable(self, c: TargetConn) -> None:
        if c.state != STATE_RUN:
            if c.state == STATE_HELLO:
                self._read_hello(c)
            elif c.state == STATE_AFTER_BYE:
                self.after_bye(c)
            if c.state != STATE_RUN:
                return
        self.drain(c)
        if c.state == STATE_CLOSED:
            return
        if c.placed_seq > c.acked:
            c.acked = c.placed_seq
            self.acks_sent += 1
            ack = wire.ack_frame(c.placed_seq)
            if c.tx:  # behind the READ responses still queued (the ACK covers their reads)
                c.tx.append(ack)
                self.flush(c)
                return
            if c.out:
                c.out += ack
                self.flush(c)
                return
            # Nothing queued (the usual case): one send, no queue bookkeeping.
            try:
                n = c.sock.send(ack)
            except EAGAIN:
                n = 0
            except OSError:
                return  # the peer is gone; reading will report how
            if n < _HS:
                c.out += ack[n:]
                self.flush(c)

    def flush(self, c: TargetConn) -> None:
        if c.tx:
            self.send_tx(c)
        if c.out and not c.tx:
            try:
                n = c.sock.send(c.out)
                del c.out[:n]
            except EAGAIN:
                pass
            except OSError:
                c.out.clear()  # the peer is gone; reading will report how
        # While READ responses are queued the connection is not read: its later frames wait
        # (a later WRITE must not change bytes a queued response still points at).
        if c.tx:
            ev = selectors.EVENT_WRITE
        else:
            ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        if ev != c.sel_ev:
            c.sel_ev = ev
            try:
                self._sel.modify(c.sock, ev, c)
            except (KeyError, ValueError):
                pass

    def send_tx(self, c: TargetConn) -> None:
        """Hand queued READ responses (and the ACKs behind them) to the kernel, as much as it
        takes now; never blocks (the rest goes out when the socket is writable)."""
        tx = c.tx
        for _ in range(64):  # bounded: the socket fills long before
            bufs = tx[:IOV_MAX]
            try:
                n = c.sock.sendmsg(bufs)
            except EAGAIN:
                return
            except OSError:
                tx.clear()  # the peer is gone; reading will report how
                return
            i = 0
            for b in bufs:
                ln = len(b)
                if n < ln:
                    break
                n -= ln
                i += 1
            del tx[:i]
            if n:
                tx[0] = memoryview(tx[0])[n:]
            if not tx or i < len(bufs):
                return

    def _read_hello(self, c: TargetConn) -> None:
        """Feed the handshake exactly what it asks for (never a byte past the HELLO)."""
        hs = c.hs
        assert hs is not None
        buf = self._hs_buf
        for _ in range(8):  # a HELLO is 2 reads; a trickling stranger waits for its next wakeup
            try:
                n = c.sock.recv_into(buf[: hs.want()])
            except EAGAIN:
                return
            except OSError as exc:
                hs.closed()
                self.stranger(c, handshake.CLOSED, f"{hs.reason}: {exc}")
                return
            if n == 0:
                hs.closed()
            else:
                hs.feed(buf[:n])
            if hs.hello is not None:
                self.accept_hello(c, hs.hello)
                return
            if hs.kind:
                self.stranger(c, hs.kind, hs.reason)
                return

    def accept_hello(self, c: TargetConn, hello: handshake.Hello) -> None:
        """A proven HELLO: from here on c is the run's initiator, and its faults are fatal."""
        self._gate.admitted(c.fd)
        c.hs = None
        bad = handshake.check_hello_ranges(hello)
        if bad:
            self.fail(c, bad)
        index, nconn, ident = hello.index, hello.connections, hello.initiator
        g = self._groups.get(ident)
        if g is None:
            g = self._groups[ident] = Group(nconn)
        elif g.nconn != nconn:
            self.fail(c, f"HELLO connections {nconn} disagrees with {g.nconn} of the same initiator")
        c.index, c.nconn, c.group = index, nconn, g
        c.hfill = 0
        c.state = STATE_RUN
        self._seen += 1

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
            "reads_served": self.reads_served,
            "bytes_served": self.bytes_served,
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
            "reads_served": self.reads_served,
            "bytes_served": self.bytes_served,
            "read_responses": ("READ_DATA pieces sent with sendmsg from the region (kernel copy)"
                               if self.supports_reads else "no one-sided reads"),
            **self._gate.report(),
        }

    def close(self) -> None:
        for c in list(self._conns.values()):
            self.drop(c)
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
