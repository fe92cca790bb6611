"""Sans-I/O stream protocol: what one connection of a stream transport accepts, in one place.

`framing` says how a frame is laid out; this module says what a connection accepts, and in
what order. tcp, zerocopy, iouring and devmem all drive these objects (as h11 is driven by
whatever owns the socket): bytes or a received header go in, an event comes out, and the bytes
to answer with (ACK, ERROR) are built here. Every acceptance rule (frame types per direction,
sequence numbers, region bounds, WRITEV tables, nothing after BYE, the range of a cumulative
ACK) lives here once.

Target side, `TargetWire`, one per accepted connection, two ways to drive it:

- header at a time (the socket transports, which receive payload straight into the region and
  never hand payload bytes to Python): `write_header(hdr)` is the fast path for a valid WRITE
  (one unpack, four compares); anything else goes to `header(hdr)`, which returns the event
  or the `Reject` naming the fault. A `WritevHeader` asks for its table: read
  ``table_bytes`` more and call `table()`.
- a byte stream (`feed()`: devmem, whose payload lands in NIC-chosen fragments, and the
  tests): the handshake first (`handshake.TargetHandshake`), then `Write` / `Payload` pieces /
  `WriteDone` per write, `Bye`, `PeerError`, or one `Reject` after which the connection is dead.

A `Reject` is always before a byte of the offending write is placed: headers and tables are
validated whole before their payload is asked for.

Initiator side, `InitiatorWire`: the target's ACK / ERROR stream (`feed()`), and the frames
an initiator sends (`write_frame`, `bye_frame`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

from ..errors import ProtocolError
from . import framing
from .handshake import Hello as ProvenHello
from .wire_read import ReadBook, ReadRequest, read_fault
from .handshake import TargetHandshake

HEADER_SIZE = framing.HEADER_SIZE
_HS = framing.HEADER_SIZE
_PACK = framing.HEADER.pack
_PACK_INTO = framing.HEADER.pack_into
_UNPACK = framing.HEADER.unpack_from
_MAGIC, _VERSION = framing.MAGIC, framing.VERSION
_WRITE, _WRITEV, _BYE, _ACK, _ERROR, _READ, _DATA = (
    framing.WRITE, framing.WRITEV, framing.BYE, framing.ACK, framing.ERROR, framing.READ,
    framing.READ_DATA,
)
_PREFIX = framing.MAGIC + bytes([framing.VERSION])  # bytes 0..2 of every header


# ---- events ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    """The connection's HELLO proved the run token (feed() only)."""

    hello: ProvenHello


@dataclass(frozen=True)
class Write:
    """A WRITE header accepted: its `nbytes` of payload go to region[dst_off:] next."""

    dst_off: int
    nbytes: int
    seq: int
    imm: int

    @property
    def notify_request(self) -> int | None:
        return self.imm - 1 if self.imm else None


@dataclass(frozen=True)
class WritevHeader:
    """A WRITEV header accepted (sequence checked): read `table_bytes` and call table()."""

    header: framing.Header

    @property
    def table_bytes(self) -> int:
        return self.header.dst_off * framing.WRITEV_ENTRY_SIZE


@dataclass(frozen=True)
class WriteTable:
    """A WRITEV table accepted: writes seq, seq+1, ... whose payloads follow back to back."""

    seq: int
    dst_offs: list[int]
    nbytes: list[int]
    imms: list[int]


@dataclass(frozen=True)
class Payload:
    """feed(): a piece of a write's payload, to copy to region[dst_off : dst_off+len(data)].
    `first` marks the write's first piece; `write_nbytes` is the whole write's length."""

    seq: int
    dst_off: int
    data: memoryview
    first: bool
    write_nbytes: int


@dataclass(frozen=True)
class WriteDone:
    """feed(): every byte of the write is out (as Payload events)."""

    seq: int
    dst_off: int
    nbytes: int
    imm: int

    @property
    def header(self) -> framing.Header:
        return framing.Header(_WRITE, self.nbytes, self.dst_off, self.seq, self.imm)


@dataclass(frozen=True)
class Bye:
    """Clean end of the stream: nothing may follow it."""


@dataclass(frozen=True)
class PeerError:
    """The peer sent an ERROR frame (why, in its words); it closes after it."""

    reason: str


@dataclass(frozen=True)
class Reject:
    """The peer broke the protocol: send error_frame(reason) and close. `kind` is the
    handshake's stranger kind while the HELLO is not proven ("" for an authenticated peer)."""

    reason: str
    kind: str = ""


Event = Union[Hello, Write, WritevHeader, WriteTable, Payload, WriteDone, Bye, PeerError, Reject,
              ReadRequest]
BYE = Bye()


# ---- the acceptance rules ----------------------------------------------------------------

def write_fault(h: framing.Header, region_len: int, expected_seq: int) -> str | None:
    """Why a decoded WRITE header is not acceptable, or None (sequence, then bounds)."""
    if h.type != _WRITE:
        return f"expected WRITE, got {framing.TYPE_NAMES.get(h.type, h.type)}"
    if h.seq != expected_seq:
        return f"write out of sequence: seq {h.seq}, expected {expected_seq}"
    if h.dst_off + h.nbytes > region_len:
        return (f"write [{h.dst_off}, {h.dst_off + h.nbytes}) outside registered region of "
                f"{region_len} bytes (seq {h.seq})")
    return None


def check_write(h: framing.Header, region_len: int, expected_seq: int) -> None:
    """write_fault() as an exception: raises ProtocolError naming the fault."""
    bad = write_fault(h, region_len, expected_seq)
    if bad:
        raise ProtocolError(bad)


def decode_writev_table(
    h: framing.Header, table: bytes | bytearray | memoryview, region_len: int, expected_seq: int
) -> tuple[list[int], list[int], list[int]]:
    """Validate a WRITEV header and its table; return (dst_offs, nbytes, imms).

    Checks, before a single payload byte is read: sequence, table length, reserved fields,
    every entry inside the region, total = header nbytes, no two entries overlapping.
    Raises ProtocolError naming the first fault.
    """
    if h.type != _WRITEV:
        raise ProtocolError(f"expected WRITEV, got {framing.TYPE_NAMES.get(h.type, h.type)}")
    if h.seq != expected_seq:
        raise ProtocolError(f"write out of sequence: seq {h.seq}, expected {expected_seq}")
    n = h.dst_off
    if not 1 <= n <= framing.MAX_WRITEV_ENTRIES:
        raise ProtocolError(f"WRITEV with {n} entries (expected 1..{framing.MAX_WRITEV_ENTRIES})")
    if len(table) != n * framing.WRITEV_ENTRY_SIZE:
        raise ProtocolError(
            f"truncated WRITEV table: {len(table)} of {n * framing.WRITEV_ENTRY_SIZE} bytes "
            f"(seq {h.seq})"
        )
    ds: list[int] = []
    ns: list[int] = []
    ims: list[int] = []
    total = 0
    for i, (d, nb, rsv, imm) in enumerate(framing.WRITEV_ENTRY.iter_unpack(table)):
        if rsv:
            raise ProtocolError(f"WRITEV entry {i} (seq {h.seq + i}): reserved field is {rsv}, not 0")
        if d + nb > region_len:
            raise ProtocolError(
                f"write [{d}, {d + nb}) outside registered region of {region_len} bytes "
                f"(seq {h.seq + i}, WRITEV entry {i})"
            )
        total += nb
        ds.append(d)
        ns.append(nb)
        ims.append(imm)
    if total != h.nbytes:
        raise ProtocolError(
            f"WRITEV entries total {total} bytes but the header says {h.nbytes} (seq {h.seq})"
        )
    if n > 1:
        order = sorted(range(n), key=ds.__getitem__)
        end_prev, i_prev = -1, -1
        for i in order:
            if ns[i] == 0:
                continue
            if ds[i] < end_prev:
                raise ProtocolError(
                    f"WRITEV entries {i_prev} and {i} overlap at {ds[i]} (seq {h.seq}): "
                    "writes of one frame must not overlap"
                )
            end_prev, i_prev = ds[i] + ns[i], i
    return ds, ns, ims


# ---- frames the target sends -------------------------------------------------------------

def ack_frame(seq: int) -> bytes:
    """Cumulative ACK: every WRITE with seq <= `seq` is placed."""
    return _PACK(_MAGIC, _VERSION, _ACK, 0, 0, seq, 0)


def ack_into(buf: bytearray, seq: int) -> None:
    """ack_frame() written into a preallocated 32-byte buffer (io_uring sends from it)."""
    _PACK_INTO(buf, 0, _MAGIC, _VERSION, _ACK, 0, 0, seq, 0)


def error_frame(reason: str) -> bytes:
    return framing.encode_error(reason)


# ---- target side -------------------------------------------------------------------------

class TargetWire:
    """What one accepted connection of a target accepts (see the module docstring)."""

    __slots__ = (
        "region_len", "writev", "reads", "next_seq", "bye", "hs", "hello_seen", "dead",
        "_hdr", "_want_tab", "_tab", "_vh", "_q", "_qi", "_done", "_ctl", "_ctl_need",
    )

    def __init__(self, region_len: int, hs: TargetHandshake | None = None, writev: bool = True,
                 reads: bool = False) -> None:
        self.region_len = region_len
        self.writev = writev  # WRITEV frames accepted (the target advertised them)
        self.reads = reads  # READ requests served (the target advertised them; `wire_read`)
        self.next_seq = 1  # the sequence number the next write must carry
        self.bye = False
        self.hs = hs  # feed(): the handshake runs first (None: the caller ran it)
        self.hello_seen = hs is None
        self.dead: Reject | None = None  # feed(): once rejected, every later feed says so again
        # feed() state: header being filled, WRITEV table, writes whose payload is due
        self._hdr = bytearray()
        self._want_tab = 0
        self._tab = bytearray()
        self._vh: framing.Header | None = None
        self._q: list[tuple[int, int, int, int]] = []  # (seq, dst_off, nbytes, imm)
        self._qi = 0
        self._done = 0  # payload bytes of _q[_qi] already out
        self._ctl = bytearray()  # an initiator's ERROR reason
        self._ctl_need = -1

    # -- header at a time ---------------------------------------------------------------
    def write_header(self, hdr: bytes | bytearray | memoryview) -> tuple | None:
        """Fast path: `hdr` (32 bytes) is a WRITE in sequence and inside the region: the
        sequence advances and the unpacked header ``(magic, version, type, nbytes, dst_off,
        seq, imm)`` comes back. None for anything else: call header() for the event."""
        h = _UNPACK(hdr)
        _m, _v, typ, nb, dst, seq, _i = h
        if typ == _WRITE and _m == _MAGIC and _v == _VERSION and seq == self.next_seq \
                and dst + nb <= self.region_len:
            self.next_seq = seq + 1
            return h
        return None

    def header(self, hdr: bytes | bytearray | memoryview) -> Event:
        """Any 32-byte header from an initiator: Write, WritevHeader, ReadRequest, Bye or Reject."""
        if self.bye:
            return self.after_bye(len(hdr))
        try:
            h = framing.decode_header(bytes(hdr))
        except ProtocolError as exc:
            return Reject(str(exc))
        t = h.type
        if t == _WRITE:
            bad = write_fault(h, self.region_len, self.next_seq)
            if bad:
                return Reject(bad)
            self.next_seq = h.seq + 1
            return Write(h.dst_off, h.nbytes, h.seq, h.imm)
        if t == _WRITEV and self.writev:
            if h.seq != self.next_seq:
                return Reject(f"write out of sequence: seq {h.seq}, expected {self.next_seq}")
            return WritevHeader(h)
        if t == _READ and self.reads:
            bad = read_fault(h, self.region_len, self.next_seq)
            if bad:
                return Reject(bad)
            self.next_seq = h.seq + 1
            return ReadRequest(h.seq, h.dst_off, h.nbytes)
        if t == _BYE:
            self.bye = True
            return BYE
        if t == framing.HELLO:
            return Reject("unexpected HELLO frame from an initiator: a second HELLO on one connection")
        if t == _READ:
            return Reject("unexpected READ frame from an initiator: this target serves no "
                          "one-sided reads (its descriptor does not offer them)")
        return Reject(f"unexpected {framing.TYPE_NAMES[t]} frame from an initiator")

    def table(self, vh: WritevHeader, tab: bytes | bytearray | memoryview) -> WriteTable | Reject:
        """The whole WRITEV table is here: every entry checked before a payload byte is read."""
        h = vh.header
        try:
            ds, ns, ims = decode_writev_table(h, tab, self.region_len, self.next_seq)
        except ProtocolError as exc:
            return Reject(str(exc))
        self.next_seq = h.seq + len(ds)
        return WriteTable(h.seq, ds, ns, ims)

    def after_bye(self, nbytes: int) -> Reject:
        """`nbytes` arrived after BYE: only EOF may follow it."""
        return Reject(f"{nbytes} bytes after BYE (after write seq {self.next_seq - 1}); "
                      "nothing after BYE is placed")

    # -- a byte stream --------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[Event]:
        """Events for the next bytes of the stream (handshake first if a handshake was given).
        Ends in at most one Reject; the connection is dead after it. Never raises."""
        mv = memoryview(data)
        pos, n = 0, len(mv)
        if self.dead is not None:
            if n:
                yield self.dead
            return
        hs = self.hs
        while pos < n and not self.hello_seen:
            assert hs is not None
            pos += hs.feed(mv[pos:])
            if hs.kind:
                yield self._die(Reject(hs.reason, hs.kind))
                return
            if hs.hello is not None:
                self.hello_seen = True
                yield Hello(hs.hello)
        while pos < n:
            if self.bye:
                yield self._die(self.after_bye(n - pos))
                return
            if self._qi < len(self._q):  # payload of a write
                seq, dst, nb, imm = self._q[self._qi]
                take = min(nb - self._done, n - pos)
                yield Payload(seq, dst + self._done, mv[pos : pos + take], self._done == 0, nb)
                self._done += take
                pos += take
                if self._done == nb:
                    yield from self._next_write()
            elif self._ctl_need >= 0:  # an ERROR's reason
                take = min(self._ctl_need - len(self._ctl), n - pos)
                self._ctl += mv[pos : pos + take]
                pos += take
                if len(self._ctl) == self._ctl_need:
                    self._ctl_need = -1
                    yield PeerError(bytes(self._ctl).decode("utf-8", "replace"))
            elif self._want_tab:  # a WRITEV table
                take = min(self._want_tab - len(self._tab), n - pos)
                self._tab += mv[pos : pos + take]
                pos += take
                if len(self._tab) == self._want_tab:
                    ev = self._table_done()
                    yield ev
                    if isinstance(ev, Reject):
                        return
                    yield from self._start_writes()
            else:  # a header
                take = min(_HS - len(self._hdr), n - pos)
                self._hdr += mv[pos : pos + take]
                pos += take
                if len(self._hdr) < _HS:
                    break
                ev = self._header_done()
                if ev is not None:
                    yield ev
                    if isinstance(ev, Reject):
                        return
                    if isinstance(ev, Write):
                        yield from self._start_writes()

    @property
    def mid_frame(self) -> bool:
        """feed(): the stream stopped inside a frame (or inside the handshake)."""
        if not self.hello_seen:
            return self.hs is not None and self.hs.want() != _HS
        return bool(self._hdr) or bool(self._want_tab) or self._ctl_need >= 0 or self._qi < len(self._q)

    def _die(self, ev: Reject) -> Reject:
        self.dead = ev
        return ev

    def _header_done(self) -> Event | None:
        raw = bytes(self._hdr)
        self._hdr.clear()
        if raw[3] == _ERROR and raw[:3] == _PREFIX and not self.bye:
            try:  # an initiator's ERROR: read its reason (decode_header bounds it)
                self._ctl_need = framing.decode_header(raw).nbytes
            except ProtocolError as exc:
                return self._die(Reject(str(exc)))
            self._ctl.clear()
            if self._ctl_need == 0:
                self._ctl_need = -1
                return PeerError("")
            return None
        ev = self.header(raw)
        if isinstance(ev, Reject):
            return self._die(ev)
        if isinstance(ev, WritevHeader):
            self._vh = ev.header
            self._want_tab = ev.table_bytes
            self._tab.clear()
            return ev
        if isinstance(ev, Write):
            self._q, self._qi, self._done = [(ev.seq, ev.dst_off, ev.nbytes, ev.imm)], 0, 0
        return ev

    def _table_done(self) -> WriteTable | Reject:
        assert self._vh is not None
        ev = self.table(WritevHeader(self._vh), self._tab)
        self._want_tab = 0
        self._tab.clear()
        if isinstance(ev, Reject):
            return self._die(ev)
        self._q = [(ev.seq + i, d, nb, imm)
                   for i, (d, nb, imm) in enumerate(zip(ev.dst_offs, ev.nbytes, ev.imms))]
        self._qi, self._done = 0, 0
        return ev

    def _start_writes(self) -> Iterator[Event]:
        """Writes without payload are done at once (in order)."""
        while self._qi < len(self._q) and self._q[self._qi][2] == 0:
            seq, dst, nb, imm = self._q[self._qi]
            self._qi += 1
            yield WriteDone(seq, dst, nb, imm)

    def _next_write(self) -> Iterator[Event]:
        seq, dst, nb, imm = self._q[self._qi]
        self._qi += 1
        self._done = 0
        yield WriteDone(seq, dst, nb, imm)
        yield from self._start_writes()


# ---- initiator side ----------------------------------------------------------------------

def write_frame(dst_off: int, nbytes: int, seq: int, imm: int) -> bytes:
    """A WRITE header (imm = request id + 1, 0 for none); its payload follows it."""
    return _PACK(_MAGIC, _VERSION, _WRITE, nbytes, dst_off, seq, imm)


def bye_frame() -> bytes:
    return framing.encode_bye()


class InitiatorWire:
    """The initiator's end of one connection: what it accepts from the target (cumulative
    ACKs inside what was posted, READ_DATA pieces of its outstanding reads in order, or an
    ERROR saying why the target rejected it).

    `reads` (`wire_read.ReadBook`) holds the outstanding reads; feed() copies the payload of
    READ_DATA pieces it is given into `region`; a caller that can receive straight into the
    region does so for the rest of a piece (reads.want_off / want_left, then reads.placed)."""

    __slots__ = ("acked", "reads", "region", "_hdr", "_err", "_err_need")

    def __init__(self, region: memoryview | None = None) -> None:
        self.acked = 0  # cumulative: every write (and read) with seq <= acked is done
        self.reads = ReadBook()
        self.region = region  # where READ_DATA payload goes (the initiator's own region)
        self._hdr = bytearray()  # a header split across reads
        self._err = bytearray()  # an ERROR's reason
        self._err_need = -1

    def feed(self, data: bytes | bytearray | memoryview, posted: int) -> PeerError | Reject | None:
        """Take what the socket gave; `posted` is the last seq sent. Advances `acked`; returns
        None while all is well, else the first fault (the connection is over after it)."""
        n = len(data)
        if n == _HS and data[3] == _ACK and data[:3] == _PREFIX and not self._hdr \
                and self._err_need < 0 and not self.reads.want_left:
            return self._ack(_UNPACK(data)[5], posted)  # one cumulative ACK: the usual read
        mv = memoryview(data)
        pos = 0
        rd = self.reads
        while pos < n:
            if rd.want_left:  # payload of a READ_DATA piece
                take = min(rd.want_left, n - pos)
                if self.region is None:
                    return Reject("READ_DATA payload but this initiator has no region")
                off = rd.want_off
                self.region[off : off + take] = mv[pos : pos + take]
                rd.placed(take)
                pos += take
                continue
            if self._err_need >= 0:  # an ERROR's reason
                take = min(self._err_need - len(self._err), n - pos)
                self._err += mv[pos : pos + take]
                pos += take
                if len(self._err) == self._err_need:
                    return PeerError(bytes(self._err).decode("utf-8", "replace"))
                continue
            take = min(_HS - len(self._hdr), n - pos)
            self._hdr += mv[pos : pos + take]
            pos += take
            if len(self._hdr) < _HS:
                break
            raw = bytes(self._hdr)
            self._hdr.clear()
            try:
                h = framing.decode_header(raw)
            except ProtocolError as exc:
                return Reject(str(exc))
            if h.type == _ACK:
                bad = self._ack(h.seq, posted)
                if bad is not None:
                    return bad
            elif h.type == _DATA:
                why = rd.data(h)
                if why:
                    return Reject(why)
            elif h.type == _ERROR:
                if h.nbytes == 0:
                    return PeerError("")
                self._err.clear()
                self._err_need = h.nbytes
            else:
                return Reject(f"unexpected {framing.TYPE_NAMES[h.type]} frame from the target")
        return None

    def want(self) -> int:
        """Bytes that complete what the stream is inside now (outside a READ_DATA piece): the
        rest of a header (a whole one at a frame boundary) or of an ERROR's reason."""
        if self._err_need >= 0:
            return self._err_need - len(self._err)
        return _HS - len(self._hdr)

    @property
    def mid_frame(self) -> bool:
        """The stream stopped inside a frame (a header, an ERROR reason or a READ_DATA piece)."""
        return bool(self._hdr) or self._err_need >= 0 or bool(self.reads.want_left)

    def _ack(self, seq: int, posted: int) -> Reject | None:
        if seq < self.acked or seq > posted:
            return Reject(f"acknowledged seq {seq}; posted {posted}, acknowledged before {self.acked}")
        if self.reads.q:
            why = self.reads.ack_fault(seq)
            if why:
                return Reject(why)
        self.acked = seq
        return None
