"""RX reassembly for devmem TCP: fragments in stream order -> frame events.

With devmem the whole TCP payload (our 32-byte frame headers included) lands where the NIC's
page pool puts it: device fragments in the bound landing dma-buf at `frag_offset`, linear
fragments in the host iov. This module feeds those fragments in stream order to the shared
sans-I/O protocol (`wire.TargetWire`: the same acceptance as tcp, zerocopy and iouring,
handshake included) and says what to do with them; it never copies KV payload itself:
`Place` events carry a view of the fragment bytes and the destination offset, and the transport
copies them into the pool (on a GPU that copy is a device-to-device copy; with udmabuf it is a
CPU copy between two mappings). A stranger ends in ProtocolError with the handshake's `kind`
set, which the transport counts instead of failing the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ...errors import ProtocolError
from .. import framing, wire
from ..wire import Hello  # the connection's proven HELLO: the wire's event, passed on as it is
from ..handshake import TargetHandshake


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
    """One connection's incoming byte stream, fed fragment by fragment, over `wire.TargetWire`.

    Every WRITE header is validated against the region and the sequence before any byte of it
    is placed; raises ProtocolError (the wire's Reject reason) on anything malformed.
    """

    def __init__(self, region_nbytes: int, handshake: TargetHandshake, writev: bool = False) -> None:
        self.wire = wire.TargetWire(region_nbytes, handshake, writev=writev)

    @property
    def handshake(self) -> TargetHandshake | None:
        return self.wire.hs

    @property
    def closed(self) -> bool:
        return self.wire.bye

    @property
    def mid_frame(self) -> bool:
        return self.wire.mid_frame

    def feed(self, data: memoryview, device: bool) -> Iterator[Event]:
        for ev in self.wire.feed(data):
            if isinstance(ev, wire.Payload):
                yield Place(ev.seq, ev.dst_off, ev.data, device, ev.first, ev.write_nbytes)
            elif isinstance(ev, wire.WriteDone):
                yield WriteDone(ev.header)
            elif isinstance(ev, Hello):
                yield ev
            elif isinstance(ev, wire.Bye):
                yield Bye()
            elif isinstance(ev, wire.PeerError):
                yield PeerError(ev.reason)
            elif isinstance(ev, wire.Reject):
                raise ProtocolError(ev.reason)
