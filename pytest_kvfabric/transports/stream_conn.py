"""Per-connection state of the stream transports: what the hooks of `StreamTarget` and
`StreamInitiator` receive as `c` (importable for type hints)."""
from __future__ import annotations

import socket
from typing import Any

from . import handshake, wire
from .stream_common import peer_name

# TargetConn.state. STATE_RUN and STATE_CLOSED are part of the subclass interface (a target
# that overrides on_readable checks them); the others are internal. STATE_AFTER_BYE: only EOF may follow.
STATE_HELLO, STATE_RUN, STATE_CLOSED, STATE_AFTER_BYE = 0, 2, 3, 4


class Group:
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
        "sock", "fd", "peer", "state", "hdr", "hdr_mv", "hfill", "hs", "wire", "index", "nconn",
        "group", "placed_seq", "acked", "out", "pay_view", "pay_pos", "pay_len",
        "pay_dst", "pay_imm", "pay_seq", "writes", "sel_ev", "v_hdr_in",
        # WRITEV: table being read, then the frame's payload scatter state
        "tab", "tab_fill", "tab_need", "v_hdr", "v_views", "v_ends", "v_ds", "v_ns", "v_ims",
        "v_pos", "v_done", "v_seq0", "v_total", "v_any_imm",
        "tx",  # READ responses (headers, region slices) and ACKs queued behind them, in order
    )

    def __init__(self, sock: socket.socket, wire_: wire.TargetWire) -> None:
        self.sock = sock
        self.wire = wire_  # what this connection accepts (sequence, bounds, BYE)
        self.fd = sock.fileno()
        self.peer = peer_name(sock)
        self.state = STATE_HELLO
        self.hdr = bytearray(wire.HEADER_SIZE)
        self.hdr_mv = memoryview(self.hdr)
        self.hfill = 0
        self.hs: handshake.TargetHandshake | None = None  # until the HELLO is proven
        self.index = 0
        self.nconn = 1
        self.group: Group | None = None
        self.placed_seq = 0
        self.acked = 0
        self.out = bytearray()
        self.pay_view: memoryview | None = None
        self.pay_pos = 0
        self.pay_len = 0
        self.pay_dst = 0
        self.pay_imm = 0
        self.pay_seq = 0
        self.v_hdr_in = False  # the last WRITEV scatter receive ended with the next header
        self.writes = 0
        self.sel_ev = 1  # selectors.EVENT_READ: what the target's selector waits for now
        self.tab: bytearray | None = None
        self.tab_fill = 0
        self.tab_need = 0
        self.v_hdr: wire.WritevHeader | None = None
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
        self.tx: list[Any] = []



class InitiatorConn:
    """One connection of a StreamInitiator: what subclass hooks receive as `c`."""

    __slots__ = (
        "sock", "fd", "index", "peer", "iov", "iov_i", "iov_off", "iov_writes", "seq",
        "acked", "done", "xfers", "xbase", "wire", "sent_writes", "want_write", "eof",
        "sendmsg", "calls",
    )

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.index = index
        self.peer = peer_name(sock)
        self.iov: list[Any] = []  # [hdr, payload, hdr, payload, ...] not yet fully sent
        self.iov_i = 0  # first iov not fully sent
        self.iov_off = 0  # bytes of iov[iov_i] already sent
        self.iov_writes = 0  # writes fully sent before iov[0]
        self.seq = 0  # last posted seq
        self.acked = 0  # cumulative ACK from the target
        self.done = 0  # writes reported complete
        self.xfers: list[int] = []  # caller xfer ids of seq xbase+1 ...
        self.xbase = 0
        self.wire = wire.InitiatorWire()  # what this connection accepts from the target
        self.sent_writes = 0
        self.want_write = False
        self.eof = False
        self.sendmsg = sock.sendmsg
        self.calls: list[int] = []  # zerocopy: sendmsg call id that sent each write's last byte
