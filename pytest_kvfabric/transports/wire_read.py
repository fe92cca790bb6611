"""Sans-I/O one-sided READ over the stream protocol: the request, its response pieces, and
what each side accepts (as `wire` is for writes; `wire.TargetWire` and `wire.InitiatorWire`
drive these).

An initiator sends a READ header (no payload) carrying the next sequence number of its
connection: reads and writes share one sequence, so the target serves a connection's frames
strictly in order (a READ sees every earlier WRITE of its connection and none of the later
ones). The target answers with the range's bytes as READ_DATA pieces of at most
MAX_READ_CHUNK bytes each (one empty piece for an empty read), in order, and then counts the
read's seq as done in its cumulative ACK. So the ACK that covers a read arrives after every
byte of it, and the initiator completes reads and writes through the same ACK path; an ACK
that covers a read whose bytes are not all in is a protocol fault.

Bounds: the initiator checks its local range before posting; the target checks the remote
range against its region and rejects an outside one (ERROR naming the range, then close).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from . import framing

MAX_READ_CHUNK = framing.MAX_READ_CHUNK
_PACK = framing.HEADER.pack
_MAGIC, _VERSION, _READ, _DATA = framing.MAGIC, framing.VERSION, framing.READ, framing.READ_DATA


@dataclass(frozen=True)
class ReadRequest:
    """A READ header accepted by a target: send region[remote_off : remote_off+nbytes] back."""

    seq: int
    remote_off: int
    nbytes: int


def read_frame(remote_off: int, nbytes: int, seq: int) -> bytes:
    """A READ request header (no payload follows)."""
    if not 0 <= nbytes <= framing.MAX_WRITE:
        raise ValueError(f"read length {nbytes} outside 0..{framing.MAX_WRITE}")
    return _PACK(_MAGIC, _VERSION, _READ, nbytes, remote_off, seq, 0)


def read_fault(h: framing.Header, region_len: int, expected_seq: int) -> str | None:
    """Why a decoded READ header is not acceptable, or None (sequence, then bounds)."""
    if h.type != _READ:
        return f"expected READ, got {framing.TYPE_NAMES.get(h.type, h.type)}"
    if h.seq != expected_seq:
        return f"read out of sequence: seq {h.seq}, expected {expected_seq}"
    if h.dst_off + h.nbytes > region_len:
        return (f"read [{h.dst_off}, {h.dst_off + h.nbytes}) outside registered region of "
                f"{region_len} bytes (seq {h.seq})")
    return None


def data_header(seq: int, offset: int, nbytes: int) -> bytes:
    """A READ_DATA header: `nbytes` of read `seq`, from `offset` within the read, follow it."""
    return _PACK(_MAGIC, _VERSION, _DATA, nbytes, offset, seq, 0)


def response_pieces(
    seq: int, remote_off: int, nbytes: int, chunk: int = MAX_READ_CHUNK
) -> list[tuple[bytes, int, int]]:
    """The response to a READ as (header, region start, length) per piece: pieces of at most
    `chunk` bytes in order, one empty piece for an empty read."""
    if not 1 <= chunk <= MAX_READ_CHUNK:
        raise ValueError(f"read chunk {chunk} outside 1..{MAX_READ_CHUNK}")
    if nbytes == 0:
        return [(data_header(seq, 0, 0), remote_off, 0)]
    return [(data_header(seq, off, min(chunk, nbytes - off)), remote_off + off, min(chunk, nbytes - off))
            for off in range(0, nbytes, chunk)]


class ReadBook:
    """The reads an initiator connection has outstanding, oldest first (the target answers in
    order), and where the payload of the READ_DATA piece being received goes.

    data(h) accepts a piece's header (or names the fault); then want_left payload bytes go to
    the local region at want_off, booked with placed(n)."""

    __slots__ = ("q", "got", "want_off", "want_left", "reads_done", "bytes_read")

    def __init__(self) -> None:
        self.q: deque[tuple[int, int, int]] = deque()  # (seq, local_off, nbytes)
        self.got = 0  # bytes of the oldest read already in
        self.want_off = 0  # local offset of the next payload byte
        self.want_left = 0  # payload bytes of the current piece still due
        self.reads_done = 0
        self.bytes_read = 0

    def add(self, seq: int, local_off: int, nbytes: int) -> None:
        self.q.append((seq, local_off, nbytes))

    def __len__(self) -> int:
        return len(self.q)

    def data(self, h: framing.Header) -> str | None:
        """A READ_DATA header arrived: None if it is the next piece of the oldest read (its
        payload is then due at want_off), else the fault."""
        if not self.q:
            return f"READ_DATA for seq {h.seq} but no read is outstanding"
        seq, local, n = self.q[0]
        if h.seq != seq:
            return f"READ_DATA for seq {h.seq}, expected the oldest outstanding read, seq {seq}"
        if h.dst_off != self.got:
            return (f"READ_DATA of read seq {seq} at offset {h.dst_off}, expected {self.got} "
                    "(pieces come in order)")
        if h.nbytes > n - self.got or (h.nbytes == 0 and n != 0):
            return (f"READ_DATA of {h.nbytes} bytes at offset {h.dst_off} of read seq {seq} "
                    f"({n} bytes, {n - self.got} still due)")
        self.want_off = local + self.got
        self.want_left = h.nbytes
        if h.nbytes == 0:
            self._done()
        return None

    def placed(self, n: int) -> None:
        """n payload bytes of the current piece are at want_off."""
        self.want_off += n
        self.want_left -= n
        self.got += n
        self.bytes_read += n
        if not self.want_left and self.got == self.q[0][2]:
            self._done()

    def _done(self) -> None:
        self.q.popleft()
        self.got = 0
        self.reads_done += 1

    def ack_fault(self, seq: int) -> str | None:
        """An ACK of `seq` arrived: a fault if it covers a read whose bytes are not all in."""
        if self.q and self.q[0][0] <= seq:
            s, _local, n = self.q[0]
            return f"ACK of seq {seq} covers read seq {s} with {self.got} of {n} bytes received"
        return None
