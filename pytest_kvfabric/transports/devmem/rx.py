"""Pure RX reassembly for devmem TCP: fragments in stream order -> frame events.

With devmem the whole TCP payload (our 32-byte frame headers included) lands where the NIC's
page pool puts it: device fragments in the bound landing dma-buf at `frag_offset`, linear
fragments in the host iov. This module walks those fragments in stream order with the shared
framing (framing.py) and says what to do with them; it never copies KV payload itself:
`Place` events carry a view of the fragment bytes and the destination offset, and the transport
copies them into the pool (on a GPU that copy is a device-to-device copy; with udmabuf it is a
CPU copy between two mappings). Frame headers and HELLO/ERROR payloads (tiny) are buffered.
Until the HELLO is proven the bytes go to the shared `handshake.TargetHandshake` (the same
rules as tcp, zerocopy and iouring); a stranger ends in ProtocolError with the handshake's
`kind` set, which the transport counts instead of failing the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ...errors import ProtocolError
from .. import framing
from ..handshake import Hello as ProvenHello
from ..handshake import TargetHandshake


@dataclass(frozen=True)
class Hello:
    hello: ProvenHello


@dataclass(frozen=True)
class Place:
    """Copy `data` to region[dst_off : dst_off+len(data)]; `first` marks a write's first piece."""

    seq: int
    dst_off: int
    data: memoryview
    device: bool
    first: bool
    write_nbytes: int  # the whole write's length (for the write guard on the first piece)


@dataclass(frozen=True)
class WriteDone:
    header: framing.Header


@dataclass(frozen=True)
class PeerError:
    reason: str


@dataclass(frozen=True)
class Bye:
    pass


Event = Hello | Place | WriteDone | PeerError | Bye


class StreamAssembler:
    """One connection's incoming byte stream, fed fragment by fragment.

    Validates every WRITE header against the region and the sequence before any byte of it is
    placed (framing.check_write); raises ProtocolError on anything malformed.
    """

    def __init__(self, region_nbytes: int, handshake: TargetHandshake) -> None:
        self.region_nbytes = region_nbytes
        self.handshake = handshake
        self.expected_seq = 1
        self.hello_seen = False
        self._hdr = bytearray()
        self._ctl = bytearray()
        self._cur: framing.Header | None = None  # frame whose payload is being consumed
        self._done = 0  # payload bytes of _cur consumed
        self.closed = False

    def feed(self, data: memoryview, device: bool) -> Iterator[Event]:
        pos = 0
        n = len(data)
        while pos < n and not self.hello_seen:
            hs = self.handshake
            pos += hs.feed(data[pos:])
            if hs.kind:
                raise ProtocolError(hs.reason)
            if hs.hello is not None:
                self.hello_seen = True
                yield Hello(hs.hello)
        while pos < n:
            if self.closed:
                raise ProtocolError(f"{n - pos} bytes after BYE")
            if self._cur is None:
                take = min(framing.HEADER_SIZE - len(self._hdr), n - pos)
                self._hdr += data[pos : pos + take]
                pos += take
                if len(self._hdr) < framing.HEADER_SIZE:
                    break
                h = framing.decode_header(bytes(self._hdr))
                self._hdr.clear()
                yield from self._start(h)
                continue
            h = self._cur
            take = min(h.nbytes - self._done, n - pos)
            if h.type == framing.WRITE:
                yield Place(h.seq, h.dst_off + self._done, data[pos : pos + take], device,
                            self._done == 0, h.nbytes)
            else:
                self._ctl += data[pos : pos + take]
            self._done += take
            pos += take
            if self._done == h.nbytes:
                yield from self._finish(h)

    def _start(self, h: framing.Header) -> Iterator[Event]:
        if h.type == framing.HELLO:
            raise ProtocolError("second HELLO on one connection")
        if h.type == framing.WRITE:
            framing.check_write(h, self.region_nbytes, self.expected_seq)
            self.expected_seq += 1
        elif h.type in (framing.ACK, framing.NOTIFY, framing.CHALLENGE, framing.WRITEV):
            raise ProtocolError(f"unexpected {framing.TYPE_NAMES[h.type]} from an initiator")
        if h.type in (framing.ERROR, framing.WRITE) and h.nbytes:
            self._cur, self._done = h, 0
            return
        yield from self._finish(h)

    def _finish(self, h: framing.Header) -> Iterator[Event]:
        self._cur, self._done = None, 0
        if h.type == framing.ERROR:
            yield PeerError(bytes(self._ctl).decode("utf-8", "replace"))
        elif h.type == framing.WRITE:
            yield WriteDone(h)
        elif h.type == framing.BYE:
            self.closed = True
            yield Bye()
        self._ctl.clear()

    @property
    def mid_frame(self) -> bool:
        return bool(self._hdr) or self._cur is not None or (
            not self.hello_seen and self.handshake.want() != framing.HEADER_SIZE)
