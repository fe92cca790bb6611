"""RdmaTransport: one-sided RDMA WRITEs over RC queue pairs, through pyverbs.

pyverbs is imported inside methods only (this module imports without it, so the registry
and the probe work on hosts without rdma-core).

Connection (within the Target/Initiator interface):
  1. Target.listen() opens the device, registers the decode pool (local + remote write),
     creates `qps` RC QPs in INIT with receive WRs posted, opens a TCP side connection
     listener on the data-plane address and returns the descriptor:
     {host, port, qpns, psns, gid, gid_index, lid, active_mtu, addr, rkey, region_nbytes}.
  2. Initiator.connect(descriptor) registers the prefill pool (local access only), creates
     its QPs, connects to host:port and sends one JSON hello {token, qpns, psns, gid, lid,
     active_mtu}. The target checks the token, moves its QPs to RTR/RTS towards the
     initiator's QPNs and answers {"ok": true} (or {"error": ...}); the initiator then
     moves its QPs to RTR/RTS.
  3. During the run the initiator sends, per posted batch, one binary frame of
     RECORD_DTYPE (xfer, dst_off, nbytes, notify, qp, wr_id: 48 bytes per transfer) so
     the target can report what the NIC placed (PLACED) once an immediate proves it; a
     "B" frame says goodbye (peers_closed()).
  Side-connection frames: 1 byte kind + 4-byte big-endian length: J json, R records,
  G guard request, A guard ack, B bye.

Reusing destination memory (write_guard): the NIC places bytes without the target CPU,
so the target cannot run write_guard "just before" a write. The initiator therefore tracks
which destination bytes it has written (merged intervals); a batch that writes any of them
again first sends G {seq, per-QP highest completed wr_id, the reusing transfers' records}
and waits for A {seq}. The target retires the records those completions prove placed
(returning them as PLACED so the decode side attributes them while their bytes are still
there), then calls write_guard for each reusing transfer, then acks. Fresh destination
bytes cost nothing; a reuse costs one side-connection round trip per batch.
"""
from __future__ import annotations

import json
import mmap
import os
import select
import socket
import struct
import threading
import time
from typing import Any, Mapping

import numpy as np

from ...errors import ProtocolError, TransportError
from ..base import (
    COMPLETION_DTYPE, NOTIFY_DTYPE, PLACED_DTYPE, XFER_DTYPE, Capability, Initiator, Target, Transport,
    anonymous_region,
)
from . import probe as probe_mod
from . import side
from .endpoint import ALLOC_KIND, MAP_HUGETLB, Endpoint, addr_of, hugepage_nbytes
from .options import RdmaOptions
from ..params import RDMA_PARAMS
from .placement import RECORD_DTYPE, PlacementTracker, SendTracker, WrittenRanges, records_for
from .wr import WrState, build_wrs
from ...lab.env import time_scale

_SEQ = struct.Struct("!Q")
FRAME_TIMEOUT_S = 30.0 * time_scale()  # once a frame has started, the rest must follow


# Both halves report their endpoint's busy CQ polling (0 before the endpoint exists).
_ep_spin_cpu_ns = property(lambda self: self.ep.spin_cpu_ns if getattr(self, "ep", None) is not None else 0)


class RdmaTarget(Target):
    spin_cpu_ns = _ep_spin_cpu_ns  # type: ignore[assignment]

    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        self.opts = RdmaOptions.from_options(self.options)
        self.ep = Endpoint(self.region, self.opts, bind_host, remote_write=True)
        self.tracker = PlacementTracker(len(self.ep.qps), len(self.region))
        self._lock = threading.Lock()
        self._inbox: list[tuple[bytes, bytes]] = []  # R and G frames, in arrival order
        self._guards: list[tuple[int, list[int], np.ndarray]] = []
        self._guard_confirmed = False
        self._guard_count = 0
        self._conn: socket.socket | None = None
        self._error: str | None = None
        self._bye = False
        self._stop = threading.Event()
        for i in range(len(self.ep.qps)):
            self._post_recvs(i, self.opts.recv_depth)
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        self._lsock = socket.socket(family, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((bind_host, int(self.options.get("side_port", 0))))
        self._lsock.listen(side.MAX_PENDING)
        self._acceptor = side.Acceptor(self._lsock, self.opts.token, len(self.ep.qps), self._stop)
        self._thread = threading.Thread(target=self._side, name="kvfabric-rdma-side", daemon=True)
        self._thread.start()
        ep = self.ep
        return {
            "transport": "rdma",
            "host": bind_host,
            "port": self._lsock.getsockname()[1],
            "qpns": [int(q.qp_num) for q in ep.qps],
            "psns": ep.psns,
            "gid": ep.sel.gid,
            "gid_index": ep.sel.gid_index,
            "lid": ep.lid,
            "active_mtu": ep.active_mtu,
            "addr": ep.base,
            "rkey": int(ep.mr.rkey),
            "region_nbytes": len(self.region),
        }

    def _post_recvs(self, qp_index: int, count: int) -> None:
        # A WRITE_WITH_IMM consumes a receive but writes nothing into it. pyverbs (and
        # rdma_rxe) refuse a receive WR without SGE ("A WR needs at least one SGE"), so each
        # carries one zero-length SGE on the registered region: nothing can land through it.
        q, ep = self.ep.qps[qp_index], self.ep
        for _ in range(count):
            sge = ep.v.wr.SGE(ep.base, 0, int(ep.mr.lkey))
            q.post_recv(ep.v.wr.RecvWR(wr_id=qp_index, num_sge=1, sg=[sge]))

    def _side(self) -> None:
        """Accept the token holder (strangers are refused: side.Acceptor), connect the QPs,
        then collect its records until bye. Any error is kept for progress() to raise."""
        conn = None
        try:
            deadline = time.monotonic() + float(self.options.get("accept_timeout_s", 600.0))
            won = self._acceptor.accept(deadline)
            if won is None:  # closed before anyone came
                return
            conn, hello = won
            conn.settimeout(FRAME_TIMEOUT_S)
            try:
                self.ep.connect_qps(hello)
            except Exception as exc:
                side.send_frame(conn, b"J", json.dumps({"error": str(exc)}).encode())
                raise
            side.send_frame(conn, b"J", json.dumps({"ok": True, "path_mtu": self.ep.path_mtu}).encode())
            self._conn = conn
            while not self._stop.is_set():
                # wait for a frame to start, then read all of it: a timeout inside a frame
                # would lose its first bytes and desynchronise the stream
                if not select.select([conn], [], [], 0.2)[0]:
                    continue
                kind, payload = side.recv_frame(conn)
                if kind in (b"R", b"G"):
                    with self._lock:
                        self._inbox.append((kind, payload))
                elif kind == b"B":
                    self._bye = True
                    return
                else:
                    raise ProtocolError(f"unexpected frame {kind!r} from the initiator")
        except Exception as exc:  # noqa: BLE001 - this thread must never end silently
            if not self._stop.is_set() and not self._bye:
                self._error = f"rdma side connection: {exc or type(exc).__name__}"
        finally:
            if conn is not None:
                conn.close()

    def progress(self, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            with self._lock:
                inbox, self._inbox = self._inbox, []
            for kind, payload in inbox:
                if kind == b"R":
                    if len(payload) % RECORD_DTYPE.itemsize:
                        raise ProtocolError(f"malformed record frame of {len(payload)} bytes")
                    self.tracker.add_records(np.frombuffer(payload, dtype=RECORD_DTYPE))
                else:
                    self._guards.append(self._parse_guard(payload))
            if self._error:
                raise TransportError(self._error)
            if self._guards:
                early = self._serve_guard()
                if early is not None:
                    return early
            wcs = self.ep.wait_cq(min(0.05, max(deadline - time.monotonic(), 0.0)))
            now = time.monotonic_ns()
            refill: dict[int, int] = {}
            for wc in wcs:
                self.ep.check_wc(wc, "receive of a write with immediate")
                i = self.ep.qp_index[int(wc.qp_num)]
                self.tracker.add_immediate(i, int(wc.imm_data), now)
                refill[i] = refill.get(i, 0) + 1
            for i, n in refill.items():
                self._post_recvs(i, n)
            placed, notifies = self.tracker.drain(time.monotonic_ns())
            if len(placed) or len(notifies) or time.monotonic() >= deadline:
                return placed, notifies

    def _parse_guard(self, payload: bytes) -> tuple[int, list[int], np.ndarray]:
        nq = len(self.ep.qps)
        head = _SEQ.size + 8 * nq
        if len(payload) < head or (len(payload) - head) % RECORD_DTYPE.itemsize:
            raise ProtocolError(f"malformed guard frame of {len(payload)} bytes")
        (seq,) = _SEQ.unpack_from(payload)
        upto = np.frombuffer(payload, "<u8", nq, _SEQ.size).tolist()
        return seq, upto, np.frombuffer(payload[head:], dtype=RECORD_DTYPE)

    def _serve_guard(self) -> tuple[np.ndarray, np.ndarray] | None:
        """First report what the initiator's completions prove placed (the decode side must
        attribute those pages while they are intact), then guard and acknowledge."""
        seq, upto, rec = self._guards[0]
        if not self._guard_confirmed:
            self._guard_confirmed = True
            placed = self.tracker.confirm(upto, time.monotonic_ns())
            more, notifies = self.tracker.drain(time.monotonic_ns())
            if len(placed) or len(more) or len(notifies):
                return np.concatenate([placed, more]), notifies
        if self.write_guard is not None:
            for r in rec:
                self.write_guard(int(r["dst_off"]), int(r["nbytes"]))
        self._guards.pop(0)
        self._guard_confirmed = False
        self._guard_count += 1
        try:
            side.send_frame(self._conn, b"A", _SEQ.pack(seq))
        except (OSError, AttributeError) as exc:
            raise TransportError(f"rdma side connection: cannot acknowledge guard: {exc}") from exc
        return None

    def peers_closed(self) -> bool:
        return getattr(self, "_bye", False) and self.tracker.unplaced() == 0

    def data_path(self) -> dict[str, Any]:
        out = self.ep.data_path("target")
        out["write_guard"] = ("called before a write reuses destination bytes (one side-connection "
                              "round trip per reusing batch); the NIC places bytes on its own")
        out["guard_round_trips"] = self._guard_count
        out["reads"] = ("served by the NIC from the memory region (IBV_ACCESS_REMOTE_READ); a "
                        "one-sided READ never reaches the target's CPU, so it counts none")
        out["side_connections_refused"] = self._acceptor.refused
        if self._acceptor.refusals:
            out["side_refusals"] = list(self._acceptor.refusals)
        return out

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()  # the side thread notices within 0.2 s
            self._thread.join(timeout=2.0)
            self._lsock.close()
        ep = getattr(self, "ep", None)
        if ep is not None:
            ep.close()


class RdmaInitiator(Initiator):
    spin_cpu_ns = _ep_spin_cpu_ns  # type: ignore[assignment]
    reads_posted = 0

    def connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> None:
        self.opts = RdmaOptions.from_options(self.options)
        host, port = str(descriptor["host"]), int(descriptor["port"])
        data_addr = self.opts.data_addr or _source_addr_towards(host)
        self.ep = Endpoint(self.region, self.opts, data_addr, remote_write=False)
        self.remote = dict(descriptor)
        self.state = WrState()
        self.sent = SendTracker(len(self.ep.qps))
        self._done: list[np.ndarray] = []
        self._written = WrittenRanges()
        self._guard_seq = 0
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
            self.sock.settimeout(timeout_s)
            hello = {"token": self.opts.token, "qpns": [int(q.qp_num) for q in self.ep.qps],
                     "psns": self.ep.psns, "gid": self.ep.sel.gid, "lid": self.ep.lid,
                     "active_mtu": self.ep.active_mtu}
            side.send_frame(self.sock, b"J", json.dumps(hello).encode())
            kind, payload = side.recv_frame(self.sock)
            reply = json.loads(payload)
        except (OSError, ValueError) as exc:
            raise TransportError(f"rdma side connection to {host}:{port}: {exc}") from exc
        if not reply.get("ok"):
            raise TransportError(f"rdma target refused the connection: {reply.get('error')}")
        self.ep.connect_qps(self.remote)

    def post(self, batch: np.ndarray, timeout_s: float) -> None:
        if len(batch) == 0:
            return
        if np.any(batch["nbytes"] == 0):
            raise TransportError("rdma: zero-length write in batch (an SGE length of 0 means 2 GiB to some NICs)")
        for limit, off, what in ((int(self.remote["region_nbytes"]), "dst_off", "remote"),
                                 (len(self.region), "src_off", "local")):
            over = np.flatnonzero(batch[off] + batch["nbytes"] > limit)
            if len(over):
                i = int(over[0])
                raise TransportError(f"rdma: transfer {int(batch['xfer'][i])}: {what} range "
                                     f"[{int(batch[off][i])}, {int(batch[off][i] + batch['nbytes'][i])}) "
                                     f"outside the {limit}-byte {what} region")
        ep = self.ep
        deadline = time.monotonic() + max(timeout_s, 0.0)
        wrs = build_wrs(batch, remote_base=int(self.remote["addr"]), rkey=int(self.remote["rkey"]),
                        state=self.state, qps=len(ep.qps), max_msg_nbytes=ep.max_msg_nbytes,
                        max_chain=ep.max_send_wr, signal_every=self.opts.signal_every)
        # Records first, so the target usually knows a write before its immediate lands.
        rec = records_for(wrs.descs, int(self.remote["addr"]))
        reuse = self._mark_written(rec)
        try:
            side.send_frame(self.sock, b"R", rec.tobytes())
            if reuse.any():
                self._guard(rec[reuse], deadline)
        except OSError as exc:
            raise TransportError(f"rdma side connection lost: {exc}") from exc
        self._post_chains(wrs, deadline, timeout_s, read=False)

    def post_read(self, batch: np.ndarray, timeout_s: float) -> None:
        """RDMA READs: the NIC pulls [remote_off, +nbytes) of the target's memory region
        (registered with IBV_ACCESS_REMOTE_READ) into the local region; the target's CPU does
        nothing. A read completes with its signalled work completion (or a later one on its
        QP: RC completes in order), when every byte is in local memory. Reads share the WR
        ids and QP rotation of the writes; no side-channel record (the target places nothing)."""
        if len(batch) == 0:
            return
        if np.any(batch["nbytes"] == 0):
            raise TransportError("rdma: zero-length read in batch (an SGE length of 0 means 2 GiB to some NICs)")
        for limit, off, what in ((int(self.remote["region_nbytes"]), "remote_off", "remote"),
                                 (len(self.region), "local_off", "local")):
            over = np.flatnonzero(batch[off] + batch["nbytes"] > limit)
            if len(over):
                i = int(over[0])
                raise TransportError(f"rdma: read {int(batch['xfer'][i])}: {what} range "
                                     f"[{int(batch[off][i])}, {int(batch[off][i] + batch['nbytes'][i])}) "
                                     f"outside the {limit}-byte {what} region")
        as_xfers = np.zeros(len(batch), XFER_DTYPE)
        as_xfers["xfer"] = batch["xfer"]
        as_xfers["src_off"] = batch["local_off"]
        as_xfers["dst_off"] = batch["remote_off"]
        as_xfers["nbytes"] = batch["nbytes"]
        as_xfers["notify"] = -1
        ep = self.ep
        wrs = build_wrs(as_xfers, remote_base=int(self.remote["addr"]), rkey=int(self.remote["rkey"]),
                        state=self.state, qps=len(ep.qps), max_msg_nbytes=ep.max_msg_nbytes,
                        max_chain=ep.max_send_wr, signal_every=self.opts.signal_every)
        self.reads_posted += len(batch)
        self._post_chains(wrs, time.monotonic() + max(timeout_s, 0.0), timeout_s, read=True)

    def _post_chains(self, wrs: Any, deadline: float, timeout_s: float, read: bool) -> None:
        """ibv_post_send each chain of WRs (RDMA WRITE[_WITH_IMM], or RDMA READ), waiting for
        send-queue room (bounded by the deadline)."""
        ep, v = self.ep, self.ep.v
        write, write_imm = v.e("IBV_WR_RDMA_WRITE"), v.e("IBV_WR_RDMA_WRITE_WITH_IMM")
        rdma_read = v.e("IBV_WR_RDMA_READ") if read else None
        signaled = v.e("IBV_SEND_SIGNALED")
        lkey = int(ep.mr.lkey)
        for chain, qpi in zip(wrs.chains(), wrs.chain_qp):
            qpi = int(qpi)
            while self.sent.outstanding_wrs(qpi) + len(chain) > ep.max_send_wr:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"rdma: send queue of QP index {qpi} still full after "
                                         f"{timeout_s:.3f} s ({self.sent.outstanding_wrs(qpi)} WRs)")
                self._reap(left)
            objs = []
            nxt = None
            for d in chain[::-1]:  # build back to front so each WR links to the next
                sge = v.wr.SGE(ep.base + int(d["local_off"]), int(d["nbytes"]), lkey)
                op = rdma_read if read else (write_imm if d["with_imm"] else write)
                w = v.wr.SendWR(wr_id=int(d["wr_id"]), opcode=op,
                                num_sge=1, sg=[sge], imm_data=int(d["imm_data"]),
                                send_flags=signaled if d["signaled"] else 0)
                w.set_wr_rdma(int(d["rkey"]), int(d["remote_addr"]))
                if nxt is not None:
                    w.next_wr = nxt
                objs.append((w, sge))
                nxt = w
            try:
                ep.qps[qpi].post_send(nxt)
            except Exception as exc:
                raise TransportError(f"rdma: ibv_post_send on QP index {qpi} failed: {exc}") from exc
            self.sent.posted(chain)
            del objs  # the NIC copied the WRs into its queue

    def _mark_written(self, rec: np.ndarray) -> np.ndarray:
        """Which transfers overwrite destination bytes written before; records all of them."""
        starts, sizes = rec["dst_off"].tolist(), rec["nbytes"].tolist()
        return np.array([self._written.add(a, a + n) for a, n in zip(starts, sizes)], dtype=bool)

    def _guard(self, rec: np.ndarray, deadline: float) -> None:
        """Ask the target to guard reused destination ranges, and wait for its ack."""
        self._guard_seq += 1
        upto = np.array(self.sent.done_upto, dtype="<u8").tobytes()
        side.send_frame(self.sock, b"G", _SEQ.pack(self._guard_seq) + upto + rec.tobytes())
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError("rdma: the target did not acknowledge reuse of destination "
                                     f"pages (guard {self._guard_seq}) in time")
            self.sock.settimeout(left)
            try:
                kind, payload = side.recv_frame(self.sock)
            except socket.timeout:
                continue
            except ConnectionError as exc:
                raise TransportError(f"rdma side connection lost: {exc}") from exc
            if kind == b"A" and _SEQ.unpack(payload)[0] == self._guard_seq:
                return

    def _reap(self, timeout_s: float) -> None:
        for wc in self.ep.wait_cq(timeout_s):
            qpi = self.ep.qp_index[int(wc.qp_num)]
            self.ep.check_wc(wc, f"RDMA WRITE or READ wr_id {int(wc.wr_id)} on QP index {qpi}")
            done = self.sent.completed(qpi, int(wc.wr_id), time.monotonic_ns())
            if len(done):
                self._done.append(done)

    def poll(self, timeout_s: float) -> np.ndarray:
        if not self._done and self.sent.outstanding():
            self._reap(timeout_s)
        if not self._done:
            return np.zeros(0, COMPLETION_DTYPE)
        out, self._done = np.concatenate(self._done), []
        return out

    def outstanding(self) -> int:
        return self.sent.outstanding()

    def data_path(self) -> dict[str, Any]:
        out = self.ep.data_path("initiator")
        out["reads_posted"] = self.reads_posted
        return out

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            try:
                side.send_frame(sock, b"B", b"")
            except OSError:
                pass
            sock.close()
        ep = getattr(self, "ep", None)
        if ep is not None:
            ep.close()


def _source_addr_towards(host: str) -> str:
    """The local address the kernel routes towards host (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, 4791))  # RoCE v2 UDP port; only the route lookup matters
        return s.getsockname()[0]


class RdmaTransport(Transport):
    params = RDMA_PARAMS
    name = "rdma"
    description = "RoCE v2 / InfiniBand one-sided RDMA WRITE through pyverbs"
    initiator_cls = RdmaInitiator
    target_cls = RdmaTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        return probe_mod.probe(options or {})

    @classmethod
    def probe_read(cls, options: Mapping[str, Any] | None = None) -> Capability:
        cap = probe_mod.probe(options or {})
        if not cap.available:
            return cap
        return Capability.ok("RDMA READ (IBV_WR_RDMA_READ) into the local region from the target's "
                             "memory region, registered with IBV_ACCESS_REMOTE_READ; the target's "
                             "CPU takes no part", **dict(cap.details))

    @classmethod
    def allocate(cls, nbytes: int, options: Mapping[str, Any]) -> memoryview:
        """Huge pages where the system offers them: a memory region over 2 MiB pages needs
        512x fewer NIC translation entries. MAP_HUGETLB from the reserved pool first, then
        transparent huge pages via madvise(MADV_HUGEPAGE), else 4 KiB pages; the choice is
        reported in data_path()["memory"]."""
        nbytes = max(int(nbytes), 1)
        huge = hugepage_nbytes()
        size = -(-nbytes // huge) * huge
        try:
            mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | MAP_HUGETLB)
            kind = f"hugetlb {huge >> 20} MiB pages (MAP_HUGETLB)"
        except OSError as exc:
            # (a shared anonymous mapping would be shmem, which gets THP only if
            # shmem_enabled allows it: anonymous_region maps private memory)
            region, how = anonymous_region(size)
            try:
                # a registered MR over private pages must not become copy-on-write in a
                # forked child (kernels before 5.9 could then leave the NIC on stale pages)
                region.obj.madvise(mmap.MADV_DONTFORK)
            except (OSError, AttributeError, ValueError):
                pass
            view = region[:nbytes]
            ALLOC_KIND[addr_of(view)] = f"{how}; MAP_HUGETLB failed: {os.strerror(exc.errno or 0)}"
            return view
        view = memoryview(mm)[:nbytes]
        ALLOC_KIND[addr_of(view)] = kind
        return view

    @classmethod
    def release(cls, region: memoryview) -> None:
        try:
            ALLOC_KIND.pop(addr_of(region), None)
        except ValueError:
            pass  # already released
        super().release(region)


def allocation_kind(region: memoryview) -> str:
    """How allocate() backed this region (for reports and tests)."""
    return ALLOC_KIND.get(addr_of(region), "not allocated by RdmaTransport.allocate")


__all__ = ["RdmaTransport", "RdmaTarget", "RdmaInitiator", "allocation_kind",
           "PLACED_DTYPE", "NOTIFY_DTYPE"]
