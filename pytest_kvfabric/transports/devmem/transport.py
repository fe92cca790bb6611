"""`devmem`: devmem TCP. The NIC places TCP payload in a dma-buf; udmabuf stands in for HBM.

Placement model (honest version). With devmem RX the NIC's page pool picks where each
payload fragment lands inside the *bound* dma-buf; userspace cannot choose `dst_off`. So the
target binds a separate landing dma-buf (`landing_nbytes`) to the devmem RX queues, walks the
fragments in stream order (rx.StreamAssembler over the shared wire protocol, frame headers
included, since they are TCP payload too) and copies each KV fragment from the landing
dma-buf to `dst_off` of the pool dma-buf (on a GPU: a device-to-device copy; with udmabuf: a
CPU copy between two mappings), then returns the fragment's token with SO_DEVMEM_DONTNEED in
batches. Fragments the kernel reports as SCM_DEVMEM_LINEAR, and whole reads that carry no
devmem cmsg (the flow was not steered to a bound queue), landed in host memory: they are
placed too, but counted, and `device_placed_all` turns False.

TX: with `tx` (default True) the initiator binds its pool dma-buf for TX (`bind-tx`) and sends
payload with sendmsg(SCM_DEVMEM_DMABUF, MSG_ZEROCOPY), iov = offsets into the dma-buf; the
32-byte frame headers go from host memory. If bind-tx is refused the initiator sends from host
memory (MSG_ZEROCOPY from the pool mapping) and data_path says "devmem RX only".

Options: interface (required for a run), rx_queues (list, "auto" = last queue, "auto:N"),
tx (bool), dontneed_batch (tokens per SO_DEVMEM_DONTNEED call, <= 128), landing_nbytes,
port (fixed listen port so a steering rule can match it; 0 = ephemeral),
require_device_placement (progress raises once payload lands in host memory), netns, plus
the stream options of `tcp` (token, connections, sndbuf, rcvbuf, nodelay).
"""
from __future__ import annotations

import socket
import time
from typing import Any, Mapping

from ...errors import ProtocolError, TransportError
from .. import handshake, wire
from ..stream_conn import STATE_CLOSED, STATE_RUN, InitiatorConn, TargetConn
from ..stream_target import StreamTarget
from ..base import Capability, Transport
from ..params import DEVMEM_PARAMS
from ..zerocopy import ZeroCopyInitiator
from . import cmsg, netlink, probe as probe_mod, rx, sockio, udmabuf
from .nic import NicState, check_nic, gather_nic

DEFAULT_LANDING_NBYTES = 64 << 20
_LINEAR_BUF_NBYTES = 256 << 10
_ANC_NBYTES = cmsg.cmsg_space(cmsg.DMABUF_CMSG.size) * (_LINEAR_BUF_NBYTES // 1024 + 64)
_MSG_DONTWAIT = 0x40

# Pool regions handed out by allocate(): id(mmap) -> Udmabuf, so a Target/Initiator finds the
# dma-buf fd behind its region.
_BUFS: dict[int, udmabuf.Udmabuf] = {}


def dmabuf_of(region: memoryview) -> udmabuf.Udmabuf | None:
    return _BUFS.get(id(region.obj))


def _ifindex(ifname: str, netns: str | None) -> int:
    idx = probe_mod.ifindex_of(ifname, netns)
    if idx is None:
        raise TransportError(f"devmem: interface {ifname!r} does not exist")
    return idx


# Why devmem serves no one-sided READ (the skip reason of a store scenario over devmem).
READS_MISSING = (
    "devmem serves no one-sided READ: devmem TCP receives into device memory (a dma-buf "
    "bound to NIC rx queues); serving reads would need devmem TX from that dma-buf on the "
    "target's responses, which is not implemented"
)


class DevmemTarget(StreamTarget):
    transport_name = "devmem"
    supports_writev = False  # fragments are reassembled by rx.py, which knows WRITE frames only
    supports_reads = False  # see DevmemTransport.probe_read

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.pool = dmabuf_of(region)
        self.nl: netlink.GenlSocket | None = None
        self.landing: udmabuf.Udmabuf | None = None
        self._landing_mv: memoryview | None = None
        self.binding_id = 0
        self.nic: NicState | None = None
        self.queues: list[int] = []
        self._asm: dict[int, rx.StreamAssembler] = {}
        self._lin = bytearray(_LINEAR_BUF_NBYTES)
        self._lin_mv = memoryview(self._lin)
        self._pending_tokens: list[int] = []
        self.batch = max(1, min(int(self.options.get("dontneed_batch", cmsg.MAX_DONTNEED_TOKENS)),
                                cmsg.MAX_DONTNEED_TOKENS))
        self.counts = dict(device_frags=0, device_bytes=0, linear_frags=0, linear_bytes=0,
                           unsteered_reads=0, unsteered_bytes=0, tokens_returned=0,
                           frags_freed=0, dontneed_calls=0, copied_to_dst_bytes=0)

    # -- setup ----------------------------------------------------------------------------
    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        if self.pool is None:
            raise TransportError("devmem: the target region must come from DevmemTransport.allocate "
                                 "(a udmabuf dma-buf)")
        ifname = self.options.get("interface")
        if not ifname:
            raise TransportError("devmem: option `interface` (the devmem NIC) is required")
        netns = self.options.get("netns")
        ifindex = _ifindex(ifname, netns)
        self.nl = netlink.open_in_netns(netns, timeout_s=max(timeout_s, 1.0))
        try:
            self.nic = gather_nic(ifname, ifindex, self.nl, netns)
            self.queues, qerr = probe_mod.parse_queues(self.options.get("rx_queues", "auto"),
                                                       self.nic.rx_queues)
            if qerr:
                raise TransportError(f"devmem: {qerr}")
            desc = super().listen(bind_host, timeout_s)  # honours options["port"]
            reasons = check_nic(self.nic, self.queues, int(self.options.get("port", 0)) or None)
            if reasons:
                raise TransportError("devmem: NIC not ready: " + "; ".join(reasons))
            self.landing = udmabuf.create(int(self.options.get("landing_nbytes", DEFAULT_LANDING_NBYTES)),
                                          "kvfabric-devmem-landing")
            self._landing_mv = memoryview(self.landing.map)
            try:
                self.binding_id = self.nl.bind_rx(ifindex, self.landing.dmabuf_fd, self.queues)
            except netlink.NetlinkError as exc:
                raise TransportError(f"devmem: {exc}") from None
        except (TransportError, udmabuf.UdmabufUnavailable, OSError) as exc:
            self.close()
            if isinstance(exc, TransportError):
                raise
            raise TransportError(f"devmem: {exc}") from None
        desc["transport"] = "devmem"
        desc["rx_binding_id"] = self.binding_id
        return desc

    # -- receive --------------------------------------------------------------------------
    def on_readable(self, c: TargetConn) -> None:
        # Tokens belong to the socket that received them: every call returns all of c's tokens
        # before it ends, so _pending_tokens never mixes connections.
        asm = self._asm.get(c.fd)
        if asm is None:
            assert c.hs is not None  # a connection's first bytes: its handshake is still open
            asm = self._asm[c.fd] = rx.StreamAssembler(self._region_len, c.hs)
            c.wire = asm.wire  # one protocol state per connection: the reassembler's
        try:
            self._devmem_drain(c, asm)
        finally:
            if c.state == STATE_CLOSED:
                self._pending_tokens.clear()  # closing the socket released its frags
            else:
                self._return_tokens(c, force=True)
        if c.state == STATE_RUN and c.placed_seq > c.acked:
            c.acked = c.placed_seq
            self.acks_sent += 1
            c.out += wire.ack_frame(c.placed_seq)
            self.flush(c)

    def _devmem_drain(self, c: TargetConn, asm: rx.StreamAssembler) -> None:
        sock = c.sock
        for _ in range(64):  # bounded per wakeup so one peer cannot starve the others
            try:
                n, anc, flags, _ = sock.recvmsg_into([self._lin_mv], _ANC_NBYTES, cmsg.MSG_SOCK_DEVMEM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if c.hs is not None:  # a stranger: dropped and counted, never fatal
                    c.hs.closed()
                    self.stranger(c, handshake.CLOSED, f"{c.hs.reason}: {exc}")
                    return
                self.drop(c)
                sock.close()
                raise TransportError(f"devmem: peer {c.peer}: recvmsg(MSG_SOCK_DEVMEM): {exc}") from None
            if n == 0:
                if c.hs is not None:
                    c.hs.closed()
                    self.stranger(c, handshake.CLOSED, c.hs.reason)
                    return
                if asm.mid_frame:
                    self.drop(c)
                    sock.close()
                    raise TransportError(f"devmem: peer {c.peer} closed mid-frame")
                self.on_eof(c)
                return
            try:
                frags = cmsg.parse_ancdata(anc, flags)
                self._consume(c, asm, n, frags)
            except ProtocolError as exc:
                if c.state == STATE_CLOSED:  # already rejected (and reported) by fail()
                    raise
                if c.hs is not None:  # a stranger: dropped and counted, never fatal
                    self.stranger(c, c.hs.kind or handshake.BAD_FRAME, str(exc))
                    return
                self.fail(c, str(exc))
            if self.options.get("require_device_placement") and not self.device_placed_all:
                raise TransportError("devmem: payload landed in host memory and the scenario "
                                     f"requires device placement: {self._placement_summary()}")

    def _consume(self, c: TargetConn, asm: rx.StreamAssembler, n: int, frags: list[cmsg.Frag]) -> None:
        cnt = self.counts
        if not frags:
            # regular skbs: this flow's packets reached a queue without the dma-buf binding
            cnt["unsteered_reads"] += 1
            cnt["unsteered_bytes"] += n
            self._events(c, asm.feed(self._lin_mv[:n], False))
            return
        total = sum(f.size for f in frags)
        if total != n:
            raise ProtocolError(f"recvmsg returned {n} bytes but its devmem cmsgs cover {total}")
        assert self.landing is not None and self._landing_mv is not None
        self.landing.sync(True, udmabuf.DMA_BUF_SYNC_READ)
        try:
            lpos = 0
            for f in frags:
                if f.device:
                    if f.offset + f.size > len(self._landing_mv):
                        raise ProtocolError(f"devmem frag [{f.offset}, +{f.size}) outside the "
                                            f"landing dma-buf of {len(self._landing_mv)} bytes")
                    cnt["device_frags"] += 1
                    cnt["device_bytes"] += f.size
                    self._pending_tokens.append(f.token)
                    self._events(c, asm.feed(self._landing_mv[f.offset : f.offset + f.size], True))
                else:
                    cnt["linear_frags"] += 1
                    cnt["linear_bytes"] += f.size
                    self._events(c, asm.feed(self._lin_mv[lpos : lpos + f.size], False))
                    lpos += f.size
        finally:
            self.landing.sync(False, udmabuf.DMA_BUF_SYNC_READ)
        if len(self._pending_tokens) >= self.batch:
            self._return_tokens(c)

    def _events(self, c: TargetConn, events: Any) -> None:
        for ev in events:
            if isinstance(ev, rx.Place):
                if ev.first and self.write_guard is not None:
                    self.write_guard(ev.dst_off, ev.write_nbytes)
                self._mv[ev.dst_off : ev.dst_off + len(ev.data)] = ev.data
                self.counts["copied_to_dst_bytes"] += len(ev.data)
            elif isinstance(ev, rx.WriteDone):
                h = ev.header
                self.placed(c, h.seq, h.dst_off, h.nbytes, h.imm, time.monotonic_ns(),
                             self._p_x, self._p_d, self._p_n, self._p_t)
                if c.group is not None and c.group.held:
                    self.release(c.group)
            elif isinstance(ev, rx.Hello):
                self.accept_hello(c, ev.hello)
            elif isinstance(ev, rx.Bye):
                pass  # the wire keeps it: only EOF may follow
            elif isinstance(ev, rx.PeerError):
                raise TransportError(f"devmem: peer {c.peer} reported: {ev.reason}")

    def drop(self, c: TargetConn) -> None:
        super().drop(c)
        self._asm.pop(c.fd, None)  # the fd number may come back with another connection

    def _return_tokens(self, c: TargetConn, force: bool = False) -> None:
        if not self._pending_tokens or (not force and len(self._pending_tokens) < self.batch):
            return
        tokens, self._pending_tokens = self._pending_tokens, []
        for runs in cmsg.batch_tokens(tokens, max_tokens=self.batch):
            try:
                freed = sockio.dontneed(c.fd, runs)
            except OSError as exc:
                raise TransportError(f"devmem: SO_DEVMEM_DONTNEED failed: {exc}") from None
            self.counts["dontneed_calls"] += 1
            self.counts["tokens_returned"] += sum(n for _, n in runs)
            self.counts["frags_freed"] += freed

    # -- reporting ------------------------------------------------------------------------
    @property
    def device_placed_all(self) -> bool:
        return self.counts["linear_bytes"] == 0 and self.counts["unsteered_bytes"] == 0

    def _placement_summary(self) -> str:
        k = self.counts
        return (f"{k['device_bytes']} bytes in {k['device_frags']} device frags, "
                f"{k['linear_bytes']} bytes in {k['linear_frags']} linear (host) frags, "
                f"{k['unsteered_bytes']} bytes in {k['unsteered_reads']} reads without devmem "
                f"cmsgs (flow not steered to the bound queues)")

    def data_path(self) -> dict[str, Any]:
        d = super().data_path()
        nic = self.nic
        d.update({
            "transport": "devmem",
            "description": (
                "devmem TCP RX: NIC placed payload in the landing dma-buf (page-pool offsets), "
                "then a copy from the landing dma-buf to dst_off in the pool dma-buf; "
                + self._placement_summary()),
            "zero_copy": self.device_placed_all if self.counts["device_frags"] else None,
            "interface": nic.ifname if nic else self.options.get("interface"),
            "driver": nic.driver if nic else "",
            "firmware": nic.firmware if nic else "",
            "queues_bound": list(self.queues),
            "rx_binding_id": self.binding_id,
            "header_split": nic.header_split if nic else "unknown",
            "steering_rules": [r.__dict__ for r in nic.rules if r.queue in self.queues] if nic else [],
            "rss_queues": sorted(nic.rss_queues) if nic and nic.rss_queues is not None else None,
            "placement": "landing dma-buf -> copy to dst_off (NIC chooses landing offsets)",
            "device_placed_all": self.device_placed_all,
            **self.counts,
        })
        return d

    def close(self) -> None:
        super().close()
        if self.nl is not None:
            self.nl.close()  # unbinds the landing dma-buf from the queues
            self.nl = None
        if self._landing_mv is not None:
            self._landing_mv.release()
            self._landing_mv = None
        if self.landing is not None:
            self.landing.close()
            self.landing = None


class DevmemInitiator(ZeroCopyInitiator):
    transport_name = "devmem"

    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.pool = dmabuf_of(region)
        self.nl: netlink.GenlSocket | None = None
        self.tx_binding_id = 0
        self.tx_reason = ""
        self._base_addr = 0
        self.devmem_tx_bytes = 0

    def connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> None:
        self._bind_tx(timeout_s)
        super().connect(descriptor, timeout_s)

    def _bind_tx(self, timeout_s: float) -> None:
        if not self.options.get("tx", True):
            self.tx_reason = "TX disabled by option tx=false"
            return
        if self.pool is None:
            self.tx_reason = "the initiator region is not a dma-buf (not from DevmemTransport.allocate)"
            return
        ifname = self.options.get("interface")
        if not ifname:
            self.tx_reason = "no `interface` option to bind the TX dma-buf to"
            return
        netns = self.options.get("netns")
        try:
            ifindex = _ifindex(ifname, netns)
            self.nl = netlink.open_in_netns(netns, timeout_s=max(timeout_s, 1.0))
            self.tx_binding_id = self.nl.bind_tx(ifindex, self.pool.dmabuf_fd)
            self._base_addr = sockio.buffer_address(self._mv)
        except (netlink.NetlinkError, TransportError, OSError) as exc:
            self.tx_reason = f"bind-tx refused: {exc}"
            if self.nl is not None:
                self.nl.close()
                self.nl = None
            self.tx_binding_id = 0

    def configure_socket(self, sock: socket.socket) -> None:
        super().configure_socket(sock)
        if self.tx_binding_id:
            # devmem.rst: bind the TX socket to the interface the dma-buf is bound to
            ifname = str(self.options["interface"]).encode()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname + b"\0")

    def send_some(self, c: InitiatorConn) -> bool:
        if not self.tx_binding_id:
            return super().send_some(c)
        # Devmem TX: headers (bytes) from host memory, payload (pool slices) by dma-buf offset,
        # one buffer per call. The cursor and write counts are the base class's (_advance).
        iov = c.iov
        while c.iov_i < len(iov):
            buf, off = iov[c.iov_i], c.iov_off
            payload = isinstance(buf, memoryview)
            try:
                if payload and len(buf):
                    start = sockio.buffer_address(buf) - self._base_addr
                    sent = sockio.devmem_sendmsg(c.fd, start + off, len(buf) - off, self.tx_binding_id)
                    self.devmem_tx_bytes += sent
                else:  # a header (an empty payload never heads the queue: _advance steps over it)
                    sent = c.sock.send(memoryview(buf)[off:], _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                if self.send_would_wait(c, exc):
                    return False
                raise TransportError(f"devmem: send to {c.peer} failed: {exc}") from None
            before = self.advance(c, sent)
            if payload and sent:  # one MSG_ZEROCOPY call id per payload sendmsg
                self.on_sent(c, before, c.sent_writes)
            elif c.sent_writes > before:
                # writes finished by no call of their own (empty payloads): the latest call id
                c.calls += [self._state(c).ncalls - 1] * (c.sent_writes - before)
        self.queue_sent(c)
        return True

    def data_path(self) -> dict[str, Any]:
        d = super().data_path()
        if self.tx_binding_id:
            desc = (f"devmem TCP TX from the pool dma-buf (binding {self.tx_binding_id}, "
                    f"SCM_DEVMEM_DMABUF + MSG_ZEROCOPY); frame headers from host memory")
        else:
            desc = f"devmem RX only: TX from host memory (MSG_ZEROCOPY from the pool mapping): {self.tx_reason}"
        d.update({"transport": "devmem", "description": desc, "devmem_tx": bool(self.tx_binding_id),
                  "tx_binding_id": self.tx_binding_id, "tx_reason": self.tx_reason,
                  "devmem_tx_bytes": self.devmem_tx_bytes,
                  "interface": self.options.get("interface")})
        return d

    def close(self) -> None:
        super().close()
        if self.nl is not None:
            self.nl.close()
            self.nl = None


class DevmemTransport(Transport):
    name = "devmem"
    params = DEVMEM_PARAMS
    description = "devmem TCP: NIC places TCP payload in a dma-buf (udmabuf stands in for GPU memory)"
    initiator_cls = DevmemInitiator
    target_cls = DevmemTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        return probe_mod.probe(options)

    @classmethod
    def probe_read(cls, options: Mapping[str, Any] | None = None) -> Capability:
        return Capability.missing(READS_MISSING)

    @classmethod
    def allocate(cls, nbytes: int, options: Mapping[str, Any]) -> memoryview:
        """The endpoint's emulated HBM as a udmabuf dma-buf, mapped for the CPU."""
        try:
            buf = udmabuf.create(nbytes)
        except udmabuf.UdmabufUnavailable as exc:
            raise TransportError(f"devmem: {exc}") from None
        _BUFS[id(buf.map)] = buf
        return memoryview(buf.map)[: max(nbytes, 1)]

    @classmethod
    def release(cls, region: memoryview) -> None:
        buf = _BUFS.pop(id(region.obj), None)
        region.release()
        if buf is not None:
            buf.close()
