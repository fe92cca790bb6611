"""The iouring target: per connection one RECVMSG into [rest of the payload, next header]
straight in the region, each header accepted by the connection's `wire.TargetWire`, cumulative
ACKs as io_uring SENDs. See iouring.py for the whole transport."""
from __future__ import annotations

import array
import secrets
import socket
import time
from typing import Any, Mapping

import numpy as np

from ..errors import ProtocolError, TransportError
from . import framing, handshake, wire
from .base import NOTIFY_DTYPE, PLACED_DTYPE, Target
from .iouring_common import (
    ACK_BYTES,
    ACK_EVERY,
    HDR_SIZE,
    IOV2,
    IOVEC_DTYPE,
    K_ACK_SEND,
    K_HDR,
    K_HELLO,
    K_PAYLOAD,
    K_READ_SEND,
    MSGHDR,
    MSGHDR_DTYPE,
    PIECES_PER_SQE,
    SEQ_MASK,
    SQE_DTYPE,
    load_uring,
    ring_options,
    strerror,
    user_data,
)
from .stream_common import set_tcp_options
from .wire_read import ReadRequest, response_pieces


class _Conn:
    __slots__ = ("cid", "sock", "fd", "peer", "hdr", "hello_buf", "hs", "ackbuf", "hdr_addr", "ackbuf_addr",
                 "ud_base", "iov", "msg", "msg_addr", "pay_pos", "hfill", "wire", "pending",
                 "hello_done", "placed_seq", "acked_sent", "placed_bytes", "acked_bytes", "ack_inflight",
                 "bye", "dead", "read_keep", "read_sends", "read_pending")

    def __init__(self, cid: int, sock: socket.socket, peer: Any, addr_of: Any) -> None:
        self.cid, self.sock, self.fd, self.peer = cid, sock, sock.fileno(), peer
        self.hdr = bytearray(framing.HEADER_SIZE)
        self.hello_buf = bytearray()
        self.hs: handshake.TargetHandshake | None = None  # until the HELLO is proven
        self.ackbuf = bytearray(framing.HEADER_SIZE)
        self.hdr_addr = addr_of(self.hdr)
        self.ud_base = cid << 48
        # RECVMSG scatter list [rest of the payload, next header] and its msghdr (stable memory)
        self.iov = bytearray(IOV2.size)
        self.msg = bytearray(MSGHDR_DTYPE.itemsize)
        self.msg_addr = addr_of(self.msg)
        MSGHDR.pack_into(self.msg, 0, 0, 0, 0, addr_of(self.iov), 2, 0, 0, 0, 0)
        self.pay_pos = 0  # payload bytes of `pending` already placed
        self.hfill = 0  # bytes of the next header already received
        self.ackbuf_addr = addr_of(self.ackbuf)
        self.wire = wire.TargetWire(0)  # replaced by the target's, with its region length
        self.pending: tuple[int, int, int, int] | None = None  # (seq, dst_off, nbytes, imm)
        self.hello_done = False
        self.placed_seq = 0
        self.acked_sent = 0
        self.placed_bytes = 0  # payload bytes placed / covered by the last ACK sent
        self.acked_bytes = 0
        self.ack_inflight = False  # a send (ACK or READ response) is in flight: never two at once
        self.dead = False
        self.read_keep: tuple | None = None  # a READ response's headers/iovecs/msghdrs/SQEs in flight
        self.read_sends = 0  # its SENDMSG CQEs still to come
        self.read_pending: ReadRequest | None = None  # waits for the ACK send in flight


class IoUringTarget(Target):
    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.mode, self.queue_depth, _ = ring_options(self.options)
        self.defer_taskrun = bool(self.options.get("defer_taskrun", True))
        self._u = load_uring()
        self._base = self._u.buffer_address(region)
        self._len = region.nbytes
        self._ring: Any = None
        self._lsock: socket.socket | None = None
        self._token = str(self.options.get("token") or "")
        self._conns: dict[int, _Conn] = {}
        self._next_cid = 1
        self.counters = {"placed": 0, "bytes": 0, "rejected": 0, "progress_calls": 0, "waits": 0,
                         "short_reads": 0, "reads_served": 0, "bytes_served": 0}
        self._gate = handshake.Admission(
            timeout_s=float(self.options.get("hello_timeout_s") or handshake.HELLO_TIMEOUT_S))
        # Dropped strangers whose RECV is still in flight: kept (socket and buffers) until its
        # CQE says the kernel is done with them; only then is the fd closed (and reusable).
        self._dying: dict[int, _Conn] = {}
        # An error met in a progress() call that had already placed rows: raised on the next call.
        self._deferred_error: Exception | None = None

    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        if self.options.get("zcrx"):
            self._register_zcrx(bind_host)
        lsock = socket.create_server((bind_host, int(self.options.get("port", 0))), backlog=1024)
        lsock.setblocking(False)
        self._lsock = lsock
        host, port = lsock.getsockname()[:2]
        # Same descriptor as stream_target.py: the token travels in it only if we made it up.
        desc = {"host": host, "port": port, "region_len": self._len, "connections": 1, "reads": True}
        if not self._token:
            self._token = desc["token"] = secrets.token_hex(16)
        return desc

    def _register_zcrx(self, bind_host: str) -> None:
        """Try the ZCRX registration on the data-plane queue; never silently fall back."""
        from .iouring_probe import interface_for

        ifname = self.options.get("zcrx_ifname") or interface_for(bind_host)
        rxq = int(self.options.get("zcrx_rxq", 0))
        err, why = self._u.try_zcrx(ifname, rxq)
        if err:
            raise TransportError(f"iouring zcrx: ZCRX unsupported: {why}")
        raise TransportError(f"iouring zcrx: registered on {ifname} queue {rxq}, but the RECV_ZC "
                             "receive path is not implemented yet")

    # -- connections ----------------------------------------------------------------------
    def _accept(self) -> None:
        now = time.monotonic()
        for _ in range(64):
            try:
                sock, peer = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNABORTED: a stranger reset before we took it
                continue
            sock.settimeout(None)
            conn = _Conn(self._next_cid, sock, peer, self._u.buffer_address)
            conn.wire = wire.TargetWire(self._len, writev=False, reads=True)  # no WRITEV: not advertised
            conn.hs = handshake.TargetHandshake(self._token)
            self._next_cid += 1
            self._conns[conn.cid] = conn
            dropped = self._gate.arrive(conn.cid, now)
            for cid in dropped:
                if cid == conn.cid:  # refused at the door: every pending one is still young
                    self._stranger(conn, handshake.REFUSED, handshake.BUSY, in_flight=False)
                else:
                    self._stranger(self._conns[cid], handshake.EVICTED,
                                   f"too many connections without a proven HELLO (> {self._gate.max_pending})",
                                   in_flight=True)
            if conn.cid in dropped:
                continue
            try:
                set_tcp_options(sock, self.options)
                sock.send(conn.hs.challenge(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError as exc:
                self._stranger(conn, handshake.CLOSED, str(exc), in_flight=False)
                continue
            self._arm_hello(conn)

    def _arm_hello(self, conn: _Conn) -> None:
        """RECV (MSG_WAITALL) of exactly what the handshake wants next: never past the HELLO."""
        want = conn.hs.want()
        conn.hello_buf = bytearray(want)
        self._ring.prep_recv(conn.fd, self._u.buffer_address(conn.hello_buf), want,
                             user_data(conn.cid, 0, K_HELLO), socket.MSG_WAITALL)

    def _on_hello(self, conn: _Conn, res: int) -> None:
        hs = conn.hs
        if res <= 0:
            hs.closed()
            if res < 0:
                hs.reason += f": {strerror(res)}"
        else:
            hs.feed(memoryview(conn.hello_buf)[:res])
        if hs.hello is not None:
            self._gate.admitted(conn.cid)
            conn.hs = None
            # proven: from here on this is the run's initiator, and its faults are fatal
            h = hs.hello
            if h.connections != 1 or h.index != 0:
                self._reject(conn, ProtocolError(
                    "the iouring target takes one connection per initiator (HELLO asked for "
                    f"index {h.index} of {h.connections})"))
            conn.hello_done = True
            self._arm_header(conn)
        elif hs.kind:
            self._stranger(conn, hs.kind, hs.reason, in_flight=False)  # (called on its CQE)
        else:
            self._arm_hello(conn)

    def _stranger(self, conn: _Conn, kind: str, reason: str, in_flight: bool) -> None:
        """Drop an unauthenticated connection and count it: it never fails the run. With its
        RECV in flight (`in_flight`), the connection is kept until that CQE arrives: the
        kernel may still write into its buffer, and an SQE not yet submitted must not reach
        another connection that reuses the fd number."""
        self._gate.drop(conn.cid, kind)
        if kind != handshake.CLOSED:
            try:  # best effort and never blocking: a stranger may not read
                conn.sock.send(framing.encode_error(reason), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass
        conn.dead = True
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # its pending recv completes; the CQE is ignored
        except OSError:
            pass
        del self._conns[conn.cid]
        if in_flight:
            self._dying[conn.cid] = conn
        else:
            conn.sock.close()

    def _expire(self, now: float) -> None:
        for cid in self._gate.expired(now):
            conn = self._conns.get(cid)
            if conn is not None:  # a pending stranger always has its handshake RECV in flight
                self._stranger(conn, handshake.TIMEOUT,
                               f"no proven HELLO within {self._gate.timeout_s:g} s of connecting",
                               in_flight=True)

    def _arm_header(self, conn: _Conn, sqe_flags: int = 0) -> None:
        """RECV (MSG_WAITALL) of the rest of a header (all of it unless a payload RECVMSG
        brought its first conn.hfill bytes)."""
        self._ring.prep_recv(conn.fd, conn.hdr_addr + conn.hfill, framing.HEADER_SIZE - conn.hfill,
                             user_data(conn.cid, conn.wire.next_seq, K_HDR), socket.MSG_WAITALL, sqe_flags)

    def _drop(self, conn: _Conn) -> None:
        conn.dead = True
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # pending recvs complete; their CQEs are ignored
        except OSError:
            pass

    def _reject(self, conn: _Conn, exc: ProtocolError) -> None:
        """Tell the peer why (best effort), close the connection, raise. No byte was placed."""
        self.counters["rejected"] += 1
        try:
            conn.sock.send(framing.encode_error(str(exc)), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError:
            pass
        self._drop(conn)
        raise ProtocolError(f"iouring target: connection from {conn.peer[0]}:{conn.peer[1]}: {exc}")

    def _peer_failed(self, conn: _Conn, reason: str) -> None:
        self._drop(conn)
        raise TransportError(f"iouring target: connection from {conn.peer[0]}:{conn.peer[1]}: {reason}")

    # -- data path ------------------------------------------------------------------------
    def _placed(self, conn: _Conn, h: tuple, placed: array.array, notifies: list) -> None:
        """A write of no payload (h: the unpacked header the wire accepted) is placed."""
        _m, _v, _t, nbytes, dst_off, seq, imm = h
        now = time.monotonic_ns()
        conn.placed_seq = seq
        conn.placed_bytes += nbytes
        # xfer = the write's 0-based position in its initiator's post order (as the stream
        # target reports it; one connection per initiator here, so seq - 1).
        placed.extend((seq - 1, dst_off, nbytes, now))
        if imm:
            notifies.append((imm - 1, now))
        self.counters["placed"] += 1
        self.counters["bytes"] += nbytes

    def _on_header(self, conn: _Conn, res: int, h: tuple | None, placed: array.array,
                   notifies: list) -> None:
        """The slow path of a header receive of `res` bytes (EOF, errors, BYE, a write without
        payload, faults); h: what wire.write_header accepted, if anything."""
        if res == 0:
            if conn.wire.bye:
                conn.dead = True
                return
            self._peer_failed(conn, f"closed without BYE after write seq {conn.wire.next_seq - 1} "
                                    "(peer gone)")
        if res < 0:
            self._peer_failed(conn, f"receive failed: {strerror(res)}")
        if conn.wire.bye:
            self._reject(conn, ProtocolError(conn.wire.after_bye(res).reason))
        if res < framing.HEADER_SIZE:
            self._reject(conn, ProtocolError(f"truncated frame header: {res} of {framing.HEADER_SIZE} bytes"))
        if h is None:
            ev = conn.wire.header(conn.hdr)
            if isinstance(ev, wire.Bye):
                self._arm_header(conn)  # expect EOF
                return
            if isinstance(ev, ReadRequest):
                self._serve_read(conn, ev)  # the next header is armed once the response is out
                return
            if not isinstance(ev, wire.Write):
                self._reject(conn, ProtocolError(ev.reason))
            h = (framing.MAGIC, framing.VERSION, framing.WRITE, ev.nbytes, ev.dst_off, ev.seq, ev.imm)
        if self.write_guard is not None:
            self.write_guard(h[4], h[3])
        if h[3] == 0:
            self._placed(conn, h, placed, notifies)
            self._arm_header(conn)
            return
        self._start_payload(conn, h)

    def _serve_read(self, conn: _Conn, ev: ReadRequest) -> None:
        self.counters["reads_served"] += 1
        self.counters["bytes_served"] += ev.nbytes
        if conn.ack_inflight:  # one send at a time per socket: after the ACK's CQE
            conn.read_pending = ev
        else:
            self._send_read(conn, ev)

    def _send_read(self, conn: _Conn, ev: ReadRequest) -> None:
        """The READ_DATA pieces (headers + region slices, no copy) and then the ACK covering
        the read, as linked SENDMSGs (MSG_WAITALL: whole or failed). Nothing else is sent or
        received on the connection until their CQEs are in: the next header is not armed, so
        a later WRITE cannot change bytes the response points at."""
        pieces = response_pieces(ev.seq, ev.remote_off, ev.nbytes)
        k = len(pieces)
        hdrs = bytearray(b"".join(h for h, _s, _n in pieces) + wire.ack_frame(ev.seq))
        haddr = self._u.buffer_address(hdrs)
        iov = np.zeros(2 * k + 1, IOVEC_DTYPE)
        iov["base"][0:2 * k:2] = haddr + HDR_SIZE * np.arange(k, dtype=np.uint64)
        iov["len"][0:2 * k:2] = HDR_SIZE
        iov["base"][1:2 * k:2] = [self._base + s for _h, s, _n in pieces]
        iov["len"][1:2 * k:2] = [n for _h, _s, n in pieces]
        iov["base"][2 * k] = haddr + HDR_SIZE * k
        iov["len"][2 * k] = HDR_SIZE
        first = list(range(0, k, PIECES_PER_SQE))
        g = len(first)
        msg = np.zeros(g, MSGHDR_DTYPE)
        sqes = np.zeros(g, SQE_DTYPE)
        for j, f in enumerate(first):
            cnt = 2 * (min(f + PIECES_PER_SQE, k) - f) + (1 if j == g - 1 else 0)
            msg["iov"][j] = iov.ctypes.data + 2 * f * IOVEC_DTYPE.itemsize
            msg["iovlen"][j] = cnt
        sqes["opcode"] = self._u.OP_SENDMSG
        sqes["flags"] = self._u.IOSQE_IO_LINK
        sqes["flags"][-1] = 0
        sqes["fd"] = conn.fd
        sqes["addr"] = msg.ctypes.data + MSGHDR_DTYPE.itemsize * np.arange(g, dtype=np.uint64)
        sqes["len"] = 1
        sqes["msg_flags"] = socket.MSG_NOSIGNAL | socket.MSG_WAITALL
        sqes["user_data"] = user_data(conn.cid, ev.seq, K_READ_SEND)
        conn.read_keep = (hdrs, iov, msg, sqes)
        conn.read_sends = g
        conn.ack_inflight = True
        conn.placed_seq = conn.acked_sent = ev.seq  # the ACK rides behind the pieces
        conn.acked_bytes = conn.placed_bytes
        self._ring.put_many(int(sqes.ctypes.data), g)

    def _read_sent(self, conn: _Conn, res: int) -> None:
        """One SENDMSG of a READ response completed."""
        if res < 0:
            self._peer_failed(conn, f"sending a READ response failed: {strerror(res)}")
        conn.read_sends -= 1
        if not conn.read_sends:
            conn.read_keep = None
            conn.ack_inflight = False
            self._arm_header(conn)

    def _start_payload(self, conn: _Conn, h: tuple) -> None:
        _m, _v, _t, nbytes, dst_off, seq, imm = h
        conn.pending = (seq, dst_off, nbytes, imm)
        conn.pay_pos = 0
        self._arm_payload(conn)

    def _arm_payload(self, conn: _Conn) -> None:
        """RECVMSG without MSG_WAITALL into [rest of the payload, next header]: like tcp's
        recvmsg_into, one receive per write when the stream is ahead of us. Only the header of
        the next frame shares the call; its payload waits until that header is validated."""
        seq, dst_off, nbytes, _imm = conn.pending
        pos = conn.pay_pos
        IOV2.pack_into(conn.iov, 0, self._base + dst_off + pos, nbytes - pos, conn.hdr_addr, HDR_SIZE)
        self._ring.put(self._u.OP_RECVMSG, conn.fd, conn.msg_addr, 1,
                       conn.ud_base | ((seq & SEQ_MASK) << 4) | K_PAYLOAD)

    def _header_in(self, conn: _Conn, placed: array.array, notifies: list) -> None:
        """conn.hdr holds a whole header. Fast path: a WRITE the wire accepts, with a payload;
        anything else takes _on_header. write_guard runs before the payload receive."""
        h = conn.wire.write_header(conn.hdr)
        if h is not None and h[3]:
            if self.write_guard is not None:
                self.write_guard(h[4], h[3])
            self._start_payload(conn, h)
        else:
            self._on_header(conn, HDR_SIZE, h, placed, notifies)

    def _reap(self, placed: array.array, notifies: list) -> None:
        conns, monotonic_ns, counters = self._conns, time.monotonic_ns, self.counters
        pack_iov, put = IOV2.pack_into, self._ring.put
        base, guard, op_recvmsg = self._base, self.write_guard, self._u.OP_RECVMSG
        for ud, res, _flags in self._ring.drain():
            kind, cid = ud & 15, ud >> 48
            conn = conns.get(cid)
            if conn is None or conn.dead:
                if conn is None and cid in self._dying:  # a dropped stranger's last RECV is done
                    self._dying.pop(cid).sock.close()
                continue
            if kind == K_PAYLOAD:
                seq, dst_off, nbytes, imm = conn.pending
                rem = nbytes - conn.pay_pos
                if res <= 0:
                    what = strerror(res) if res < 0 else f"{conn.pay_pos} of {nbytes} bytes"
                    self._peer_failed(conn, f"write seq {seq} cut short: {what} (peer gone)")
                if res < rem:  # short read: the receive queue ran dry mid-payload
                    counters["short_reads"] += 1
                    conn.pay_pos += res
                    self._arm_payload(conn)
                    continue
                conn.pending = None
                now = monotonic_ns()
                conn.placed_seq = seq
                conn.placed_bytes += nbytes
                # xfer = the write's 0-based position in its initiator's post order (as
                # stream_target.py reports it; one connection per initiator here, so seq - 1).
                placed.extend((seq - 1, dst_off, nbytes, now))  # flat: no tuple kept per write
                if imm:
                    notifies.append((imm - 1, now))
                counters["placed"] += 1
                counters["bytes"] += nbytes
                hfill = res - rem  # bytes of the next header that came with it
                if hfill == HDR_SIZE:
                    # _header_in, inlined (this runs once per write): the wire accepts the header
                    h = conn.wire.write_header(conn.hdr)
                    if h is not None and h[3]:
                        _m, _v, _t, nbytes, dst_off, seq, imm = h
                        if guard is not None:
                            guard(dst_off, nbytes)
                        conn.pending = (seq, dst_off, nbytes, imm)
                        conn.pay_pos = 0
                        pack_iov(conn.iov, 0, base + dst_off, nbytes, conn.hdr_addr, HDR_SIZE)
                        put(op_recvmsg, conn.fd, conn.msg_addr, 1, conn.ud_base | ((seq & SEQ_MASK) << 4) | K_PAYLOAD)
                    else:
                        self._on_header(conn, HDR_SIZE, h, placed, notifies)
                else:
                    conn.hfill = hfill
                    self._arm_header(conn)
            elif kind == K_HDR:
                got = res + conn.hfill if res > 0 else res
                conn.hfill = 0
                if got == HDR_SIZE and not conn.wire.bye:
                    self._header_in(conn, placed, notifies)
                else:
                    self._on_header(conn, got, None, placed, notifies)
            elif kind == K_HELLO:
                self._on_hello(conn, res)
            elif kind == K_ACK_SEND:
                conn.ack_inflight = False
                if res < 0 and not conn.wire.bye:
                    self._peer_failed(conn, f"sending ACK failed: {strerror(res)}")
                if conn.read_pending is not None:
                    ev, conn.read_pending = conn.read_pending, None
                    self._send_read(conn, ev)
            elif kind == K_READ_SEND:
                self._read_sent(conn, res)

    def _send_acks(self, busy: bool = False) -> None:
        for conn in self._conns.values():
            gap = conn.placed_seq - conn.acked_sent
            if conn.dead or conn.ack_inflight or not gap:
                continue
            if busy and gap < ACK_EVERY and conn.placed_bytes - conn.acked_bytes < ACK_BYTES:
                continue
            wire.ack_into(conn.ackbuf, conn.placed_seq)
            self._ring.prep_send(conn.fd, conn.ackbuf_addr, framing.HEADER_SIZE,
                                 user_data(conn.cid, 0, K_ACK_SEND), socket.MSG_NOSIGNAL)
            conn.ack_inflight = True
            conn.acked_sent = conn.placed_seq
            conn.acked_bytes = conn.placed_bytes

    def progress(self, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self._lsock is None:
            raise TransportError("iouring target: progress() before listen()")
        if self._deferred_error is not None:  # met in the call that placed rows: those went out first
            deferred, self._deferred_error = self._deferred_error, None
            raise deferred
        if self._ring is None:  # created by the thread that drives it (SINGLE_ISSUER)
            try:
                self._ring = self._u.Ring(self.queue_depth, defer_taskrun=self.defer_taskrun)
            except OSError as exc:
                raise TransportError(f"iouring ring setup failed: {exc}") from None
        # flat PLACED_DTYPE rows (xfer, dst_off, nbytes, t_ns) in a C array: no Python object kept
        # per write, and the result is a view of it (no conversion)
        placed = array.array("Q")
        notifies: list[tuple[int, int]] = []
        self.counters["progress_calls"] += 1
        deadline = time.monotonic() + max(0.0, timeout_s)
        lfd = self._lsock.fileno()
        accept = True
        reap, send_acks = self._reap, self._send_acks
        submit_and_get_events, cq_ready = self._ring.submit_and_get_events, self._ring.cq_ready
        try:
            for _ in range(1_000_000):  # bounded; exits on placement or deadline
                if accept or not self._conns:
                    self._accept()
                reap(placed, notifies)
                send_acks(True)  # cumulative: while busy, per ACK_EVERY writes or ACK_BYTES
                # One enter per pass: submits the payload+header recvs just queued and runs the
                # deferred work (the header recv linked behind a finished payload recv).
                submit_and_get_events()
                if cq_ready() and len(placed) < 4 * 4096:
                    accept = False
                    continue  # more completions already posted: take them in this call
                self._send_acks()  # about to return or sleep: acknowledge everything placed
                self._ring.submit()
                now = time.monotonic()
                if self._gate.next_deadline <= now:
                    self._expire(now)
                remaining = deadline - now
                if placed or notifies or remaining <= 0:
                    break
                self.counters["waits"] += 1
                accept = lfd in self._ring.wait(remaining, (lfd,))
        except (TransportError, ProtocolError) as exc:
            if not placed:
                raise
            # Rows placed earlier in this call are real placements: report them now (as the
            # stream target does) and raise the error on the next call.
            self._deferred_error = exc
        finally:
            if placed:  # acks for what was placed before an error still go out
                try:
                    self._send_acks()
                    self._ring.submit()
                except OSError:
                    pass
        out = np.frombuffer(placed, dtype=PLACED_DTYPE) if placed else np.empty(0, PLACED_DTYPE)
        return out, np.array(notifies, dtype=NOTIFY_DTYPE)

    def peers_closed(self) -> bool:
        peers = [c for c in self._conns.values() if c.hello_done]  # strangers are no peers
        return bool(peers) and all(c.wire.bye for c in peers)

    def data_path(self) -> dict[str, Any]:
        return {"transport": "iouring", "zero_copy": False, **self.counters, **self._gate.report(),
                "description": "io_uring RECV (MSG_WAITALL) straight into the destination slice; "
                               "the kernel copies from socket buffers (no ZCRX)",
                "read_responses": "READ_DATA pieces + ACK as linked io_uring SENDMSGs from the region "
                                  "(kernel copy)",
                "submits": getattr(self._ring, "submits", 0)}

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._ring is not None:
            self._ring.close()
        for conn in self._conns.values():
            conn.sock.close()
        for conn in self._dying.values():  # the ring is gone: nothing refers to them any more
            conn.sock.close()
        self._dying = {}
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None
