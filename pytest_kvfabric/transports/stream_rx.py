"""The receive state machine of `StreamTarget`: headers accepted by the connection's
`wire.TargetWire`, payload straight into the region, WRITEV frames scattered with one
recvmsg_into, placed writes reported and notifications released in order.

`StreamReceive` is a base of `stream_target.StreamTarget` (which owns sockets, the selector
and the handshake); it reads the attributes declared below, which the target sets.
"""
from __future__ import annotations

import time
from bisect import bisect_right
from typing import Callable

from . import framing, wire
from .wire_read import ReadRequest, response_pieces
from .stream_common import EAGAIN, IOV_MAX, send_error_and_close
from .stream_conn import STATE_AFTER_BYE, Group, TargetConn
from ..errors import ProtocolError, TransportError

_HS = framing.HEADER_SIZE
_MAGIC, _VERSION, _WRITE = framing.MAGIC, framing.VERSION, framing.WRITE
DRAIN_BUDGET_BYTES = 8 << 20  # per connection per wakeup: one busy peer cannot starve others, acks flow
_now = time.monotonic_ns


class StreamReceive:
    """Receive side of a stream target's connections (see the module docstring)."""

    transport_name: str
    write_guard: Callable[[int, int], None] | None
    _mv: memoryview
    _region_len: int
    _p_x: list[int]
    _p_d: list[int]
    _p_n: list[int]
    _p_t: list[int]
    _n_req: list[int]
    _n_t: list[int]
    bytes_placed: int
    writes_placed: int
    reads_served: int
    bytes_served: int

    def drop(self, c: TargetConn) -> None:  # the target's: forget a connection
        raise NotImplementedError

    def on_eof(self, c: TargetConn) -> None:  # the target's: the peer closed
        raise NotImplementedError

    def flush(self, c: TargetConn) -> None:  # the target's: send what is queued
        raise NotImplementedError

    def fail(self, c: TargetConn, reason: str) -> None:
        """Reject the peer: ERROR frame, close, ProtocolError naming peer and reason."""
        self.drop(c)
        send_error_and_close(c.sock, reason)
        raise ProtocolError(
            f"{self.transport_name}: rejected peer {c.peer} (connection {c.index}): {reason}"
        )

    def lost(self, c: TargetConn, exc: OSError) -> None:
        """The socket failed under an authenticated peer: close and raise."""
        self.drop(c)
        c.sock.close()
        raise TransportError(
            f"{self.transport_name}: peer {c.peer} (connection {c.index}): {exc}"
        ) from None

    def after_bye(self, c: TargetConn) -> None:
        """After BYE only EOF may come: a byte more is a fault, and nothing more is placed."""
        try:
            n = c.sock.recv_into(c.hdr_mv)
        except EAGAIN:
            return
        except OSError as exc:
            self.lost(c, exc)
        if n == 0:
            self.on_eof(c)
        else:
            self.fail(c, c.wire.after_bye(n).reason)

    def drain(self, c: TargetConn) -> None:
        """Read what is readable on one connection: headers, then payload straight into the
        region. Payload and the next header are read with one recvmsg_into scatter call; the
        next header is accepted by the connection's wire before a byte of its payload is read.
        The WRITE fast path stays in this loop (one call to wire.write_header); WRITEV frames,
        BYE and faults take the helpers below."""
        sock = c.sock
        hdr, hdr_mv = c.hdr, c.hdr_mv
        region = self._mv
        guard = self.write_guard
        accept = c.wire.write_header
        budget = DRAIN_BUDGET_BYTES
        now = _now
        px, pd, pn, pt = self._p_x, self._p_d, self._p_n, self._p_t
        recvmsg_into, recv_into = sock.recvmsg_into, sock.recv_into
        placed_any = False
        while budget > 0:
            view = c.pay_view
            try:
                if view is not None:
                    n = recvmsg_into([view[c.pay_pos :], hdr_mv])[0]
                elif c.v_views is not None or c.tab_need:
                    n = self._v_recv(c)
                else:
                    n = recv_into(hdr_mv[c.hfill :]) if c.hfill else recv_into(hdr_mv)
            except EAGAIN:
                break
            except OSError as exc:
                self.lost(c, exc)
            if n == 0:
                self.on_eof(c)
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
                self.placed(c, c.pay_seq, c.pay_dst, c.pay_len, c.pay_imm, now(), px, pd, pn, pt)
                placed_any = True
                short = n < rem + _HS
            elif c.v_views is not None or c.tab_need:
                got, short = self._v_received(c, n, px, pd, pn, pt)
                placed_any = placed_any or got
                if short is None:  # the table is in: its payload is next
                    continue
            else:
                short = c.hfill + n < _HS
                c.hfill += n
            while c.hfill == _HS:
                h = accept(hdr)  # a valid WRITE, or None: anything else
                if h is None:
                    served = self.bytes_served
                    h = self._other_header(c)
                    if h is None:  # BYE, a WRITEV header or a READ served (a fault raised)
                        budget -= self.bytes_served - served
                        # (queued READ responses hold the connection's later frames back)
                        short = short or c.state == STATE_AFTER_BYE or bool(c.tx)
                        break
                _m, _v, _t, nb, dst, seq, imm = h
                c.hfill = 0
                if guard is not None:
                    guard(dst, nb)
                if nb == 0:
                    self.placed(c, seq, dst, 0, imm, now(), px, pd, pn, pt)
                    placed_any = True
                    break
                c.pay_view = region[dst : dst + nb]
                c.pay_pos = 0
                c.pay_len = nb
                c.pay_dst = dst
                c.pay_imm = imm
                c.pay_seq = seq
            if short:  # tcp_recvmsg returns less than asked only once the queue is empty
                break
        if placed_any and c.group is not None and c.group.held:
            self.release(c.group)

    def _other_header(self, c: TargetConn) -> tuple | None:
        """A header the WRITE fast path did not take: the wire says what it is. Returns the
        header tuple of a WRITE to receive, None after BYE or a WRITEV header; rejects a fault."""
        ev = c.wire.header(c.hdr)
        if isinstance(ev, wire.Bye):
            c.hfill = 0
            c.state = STATE_AFTER_BYE  # not a byte more is read into the region
            return None
        if isinstance(ev, wire.WritevHeader):
            self._v_header(c, ev)
            return None
        if isinstance(ev, wire.Write):
            return (_MAGIC, _VERSION, _WRITE, ev.nbytes, ev.dst_off, ev.seq, ev.imm)
        if isinstance(ev, ReadRequest):
            self.serve_read(c, ev)
            return None
        assert isinstance(ev, wire.Reject)
        self.fail(c, ev.reason)
        return None

    def serve_read(self, c: TargetConn, ev: ReadRequest) -> None:
        """A READ accepted by the wire (in sequence, inside the region): queue its READ_DATA
        pieces (headers and region slices, no copy here), count its seq as done for the
        cumulative ACK that follows them, and hand the kernel what it takes now."""
        c.hfill = 0
        tx = c.tx
        if c.out:  # an ACK tail not yet sent goes first
            tx.append(bytes(c.out))
            c.out.clear()
        region = self._mv
        for hdr, start, ln in response_pieces(ev.seq, ev.remote_off, ev.nbytes):
            tx.append(hdr)
            if ln:
                tx.append(region[start : start + ln])
        self.reads_served += 1
        self.bytes_served += ev.nbytes
        c.placed_seq = ev.seq
        g = c.group
        g.placed[c.index] = ev.seq
        if g.held:
            self.release(g)
        self.flush(c)

    # -- WRITEV ---------------------------------------------------------------------------
    def _v_header(self, c: TargetConn, vh: wire.WritevHeader) -> None:
        """A WRITEV header arrived (accepted by the wire): read its table (no payload byte yet)."""
        c.hfill = 0
        if c.tab is None:
            c.tab = bytearray(framing.MAX_WRITEV_ENTRIES * framing.WRITEV_ENTRY_SIZE)
        c.v_hdr = vh
        c.tab_fill = 0
        c.tab_need = vh.table_bytes

    def _v_recv(self, c: TargetConn) -> int:
        """One receive of a WRITEV frame: the rest of its table, or of its payload (scatter
        into the destination slices, then the next header)."""
        if c.v_views is not None:
            bufs = self._v_bufs(c)
            c.v_hdr_in = bufs[-1] is c.hdr_mv
            return c.sock.recvmsg_into(bufs)[0]
        return c.sock.recv_into(memoryview(c.tab)[c.tab_fill : c.tab_need])

    def _v_received(
        self, c: TargetConn, n: int, px: list[int], pd: list[int], pn: list[int], pt: list[int]
    ) -> tuple[bool, bool | None]:
        """Book n bytes of a WRITEV frame: (placed anything, short read); short is None when
        the table just completed (read on)."""
        if c.v_views is not None:
            rem = c.v_total - c.v_pos
            if n < rem:
                c.v_pos += n
                return self._v_place(c, px, pd, pn, pt), True  # the receive queue is empty now
            c.hfill = n - rem
            c.v_pos = c.v_total
            self._v_place(c, px, pd, pn, pt)
            c.v_views = None
            # (a 1024-entry frame leaves no iovec for the next header: not a short read)
            return True, (n < rem + _HS if c.v_hdr_in else False)
        c.tab_fill += n
        if c.tab_fill < c.tab_need:
            return False, True  # a short read: the receive queue is empty now
        return self._v_start(c, px, pd, pn, pt), None

    def _v_start(
        self, c: TargetConn, px: list[int], pd: list[int], pn: list[int], pt: list[int]
    ) -> bool:
        """The whole table is here: the wire validates every entry, every entry is guarded,
        then the scatter receive of the frame's payload is set up. True if something was
        placed already (an all-empty frame)."""
        vh = c.v_hdr
        assert vh is not None and c.tab is not None
        need = c.tab_need
        c.tab_need = 0
        ev = c.wire.table(vh, memoryview(c.tab)[:need])
        if isinstance(ev, wire.Reject):
            self.fail(c, ev.reason)
        assert isinstance(ev, wire.WriteTable)
        ds, ns, ims = ev.dst_offs, ev.nbytes, ev.imms
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
        c.v_seq0 = ev.seq
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
            placed = self.placed
            for j in range(i, k):
                placed(c, seq0 + j, ds[j], ns[j], ims[j], t, px, pd, pn, pt)
        else:
            # No notify in the frame: what placed does, once for the whole run of writes.
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

    def placed(
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

    def release(self, g: Group) -> None:
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
