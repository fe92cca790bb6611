"""One-sided READ on the send side of the stream transports: `StreamReads`, a base of
`stream_initiator.StreamInitiator`.

post_read() queues a READ header per read (round robin over the connections, on the same
sequence as the writes) behind whatever is queued; the target answers with READ_DATA pieces
and then the cumulative ACK covering the read's seq, so a read completes through the same
ACK path as a write (`wire_read` has the rules). The pieces' payload is received straight
into the initiator's region (`recv_payload`); while reads are outstanding the frames between
them are read a header at a time, so no payload byte passes through the ack buffer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import framing
from .stream_common import EAGAIN
from .stream_conn import InitiatorConn
from .wire_read import read_frame
from ..errors import TransportError

_HS = framing.HEADER_SIZE
_EMPTY = b""  # READ frames take an iov pair [header, b""] like a write's [header, payload]


class StreamReads:
    """post_read() and the direct payload receive (see the module docstring). Reads the
    attributes below, which `StreamInitiator` sets."""

    transport_name: str
    _conns: list[InitiatorConn]
    _mv: memoryview
    _region_len: int
    _rr: int
    _posted: int
    _unsent: int
    _ackmv: memoryview
    reads_posted = 0
    serves_reads = False  # the target's descriptor offered reads ("reads": true)

    def _push(self, timeout_s: float) -> None:  # the initiator's: hand queued frames to the kernel
        raise NotImplementedError

    def post_read(self, batch: np.ndarray, timeout_s: float) -> None:
        n = len(batch)
        if n == 0:
            return
        if not self._conns:
            raise TransportError(f"{self.transport_name}: post_read() before connect()")
        if not self.serves_reads:
            raise TransportError(
                f"{self.transport_name}: the target at {self._conns[0].peer} serves no one-sided "
                "reads (its descriptor does not offer them)"
            )
        xs = batch["xfer"].tolist()
        ls = batch["local_off"].tolist()
        rs = batch["remote_off"].tolist()
        ns = batch["nbytes"].tolist()
        rlen = self._region_len
        for x, lo, nb in zip(xs, ls, ns):
            if lo + nb > rlen or nb > framing.MAX_WRITE:
                raise TransportError(
                    f"{self.transport_name}: read xfer {x} into [{lo}, {lo + nb}) outside the "
                    f"local region of {rlen} bytes or longer than {framing.MAX_WRITE}"
                )
        conns = self._conns
        nconn = len(conns)
        rr = self._rr
        for x, lo, ro, nb in zip(xs, ls, rs, ns):
            c = conns[rr]
            rr = rr + 1 if rr + 1 < nconn else 0
            seq = c.seq = c.seq + 1
            c.wire.reads.add(seq, lo, nb)
            c.iov.append(read_frame(ro, nb, seq))
            c.iov.append(_EMPTY)
            c.xfers.append(x)
        self._rr = rr
        self._posted += n
        self.reads_posted += n
        self._unsent += n * _HS
        self._push(timeout_s)

    def recv_payload(self, c: InitiatorConn) -> int:
        """Receive the rest of the current READ_DATA piece straight into the region and, in the
        same call, up to a header's worth of the next frame into the ack buffer. Returns how many
        bytes of that next frame came (to feed to the wire), or -1 when the socket ran dry
        inside the piece."""
        rd = c.wire.reads
        left = rd.want_left
        off = rd.want_off
        try:
            n = c.sock.recvmsg_into([self._mv[off : off + left], self._ackmv[:_HS]])[0]
        except EAGAIN:
            return -1
        except OSError as exc:
            raise TransportError(
                f"{self.transport_name}: lost the connection to target {c.peer} (connection "
                f"{c.index}) in the middle of a read: {exc}"
            ) from None
        if not n:
            c.eof = True
            raise TransportError(
                f"{self.transport_name}: target {c.peer} (connection {c.index}) closed the "
                f"connection with {left} bytes of a READ_DATA piece missing"
            )
        if n < left:
            rd.placed(n)
            return -1  # a short read: the receive queue is empty
        rd.placed(left)
        return n - left

    def read_report(self) -> dict[str, Any]:
        """Read counters for data_path() and stats()."""
        return {
            "reads": self.serves_reads,
            "reads_posted": self.reads_posted,
            "bytes_read": sum(c.wire.reads.bytes_read for c in self._conns),
        }
