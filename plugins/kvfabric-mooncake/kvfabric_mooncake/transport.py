"""MooncakeTransport: the plan's writes as Mooncake Transfer Engine WRITEs.

- Metadata P2PHANDSHAKE (no etcd): each engine's segment is named "<host>:<rpc port>" and
  found by a handshake with that port; the target's session name and pool address travel
  in the transport descriptor through the controller.
- Both agents register their pools (`register_memory`); each posted batch is one
  `batch_transfer_sync(..., WRITE, TransferNotify)` call on a worker thread (the call
  releases the GIL); Mooncake sends the notification once the batch is written, and it
  carries the batch's records (engine_link), so the decode side places and verifies
  exactly what Mooncake reports written.
- Protocol `tcp` by default; `rdma` (parameter protocol=rdma, device=...) where an RDMA
  device exists.

mooncake.engine is imported inside methods only: without it the probe names what is missing.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import socket
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pytest_kvfabric.errors import KvFabricError, TransportError
from pytest_kvfabric.transports.base import Capability, Transport
from pytest_kvfabric.transports.engine_link import EngineInitiator, EngineTarget
from pytest_kvfabric.transports.rdma import sysfs

from .options import MooncakeOptions

NOTIFY_NAME = "kvfabric"
DIST = "mooncake-transfer-engine-non-cuda"
SYS_LIBS = "libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200"
INSTALL_HINT = (f"pip install {DIST} (its engine.so also needs the system libraries of Debian's "
                f"{SYS_LIBS}, even for protocol tcp)")


def import_engine() -> Any:
    """The mooncake.engine module; its INFO logging to stderr is quieted unless asked for."""
    os.environ.setdefault("MC_LOG_LEVEL", "WARNING")
    import mooncake.engine as engine  # noqa: PLC0415 - optional, heavy native module

    return engine


def engine_version() -> str:
    for dist in (DIST, "mooncake-transfer-engine"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "mooncake (version unknown)"


def rdma_devices(root: str = "/sys/class/infiniband") -> list[str]:
    p = Path(root)
    return sorted(d.name for d in p.iterdir()) if p.is_dir() else []


def _addr_of(region: memoryview) -> int:
    arr = np.frombuffer(region, dtype=np.uint8)
    try:
        return int(arr.ctypes.data)
    finally:
        del arr


def source_addr_towards(host: str) -> str:
    """The local address the kernel routes towards host (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return s.getsockname()[0]


def session_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def topology_devices(topology: Any) -> set[str]:
    """RDMA device names in Mooncake's local topology ({"cpu:0": [[preferred], [available]]})."""
    out: set[str] = set()
    if isinstance(topology, dict):
        for lists in topology.values():
            for names in lists if isinstance(lists, list) else []:
                out |= {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()
    return out


class _Engine:
    """One initialized TransferEngine with the region registered."""

    def __init__(self, region: memoryview, opts: MooncakeOptions, host: str) -> None:
        self.mod = import_engine()
        self.opts = opts
        self.host = host
        self.ports_before = sysfs.snapshot_ports()  # RDMA ports' counters (none on most hosts)
        self.engine = self.mod.TransferEngine()
        ret = self.engine.initialize(host, "P2PHANDSHAKE", opts.protocol, opts.device)
        if ret != 0:
            raise TransportError(f"mooncake: TransferEngine.initialize({host!r}, 'P2PHANDSHAKE', "
                                 f"{opts.protocol!r}, {opts.device!r}) returned {ret}")
        self.session = session_name(host, int(self.engine.get_rpc_port()))
        self.base = _addr_of(region)
        self.nbytes = len(region)
        ret = self.engine.register_memory(self.base, self.nbytes)
        if ret != 0:
            raise TransportError(f"mooncake: register_memory of the {self.nbytes}-byte pool returned {ret}")
        self.registered = True

    def topology(self) -> Any:
        try:
            return json.loads(self.engine.get_local_topology())
        except Exception as exc:  # noqa: BLE001 - evidence only
            return f"unavailable: {exc}"

    def data_path(self, side: str, peer: str) -> dict[str, Any]:
        o = self.opts
        how = "kernel TCP sockets (copied)" if o.protocol == "tcp" else "RDMA WRITE, placed by the NIC"
        topo = self.topology()
        out = {
            "transport": "mooncake",
            "description": f"Mooncake Transfer Engine, protocol {o.protocol}: {how}; {side} {self.session}"
                           f" -> {peer}; metadata P2PHANDSHAKE",
            "zero_copy": o.protocol == "rdma",
            "engine": engine_version(),
            "protocol": o.protocol,
            "device": o.device or ("(Mooncake's choice)" if o.protocol == "rdma" else "kernel TCP stack"),
            "local_session": self.session,
            "peer_session": peer,
            "metadata": "P2PHANDSHAKE",
            "topology": topo,
            # Mooncake's own switches that change the path behind the caller's back
            "env": {k: v for k, v in os.environ.items() if k in ("MC_FORCE_TCP", "MC_FORCE_HCA", "MC_GID_INDEX")},
        }
        if o.protocol == "rdma":  # the ports' own counters: which devices the bytes crossed
            devs = set(o.device.split(",")) if o.device else topology_devices(topo)
            moved = sysfs.moved_since(self.ports_before, [k for k in self.ports_before if k.rpartition(":")[0] in devs])
            out["rdma_port_counters"] = moved
            out["description"] += "".join(
                f"; {port} packets out +{c.get('sent_pkts', c.get('port_xmit_packets', 0))} "
                f"in +{c.get('rcvd_pkts', c.get('port_rcv_packets', 0))}" for port, c in moved.items())
        return out

    def close(self) -> None:
        if getattr(self, "registered", False):
            self.registered = False
            try:
                self.engine.unregister_memory(self.base)
            except Exception:  # noqa: BLE001 - teardown
                pass


class MooncakeTarget(EngineTarget):
    name = "mooncake"

    def engine_open(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        self.opts = MooncakeOptions.from_options(self.options)
        self.eng = _Engine(self.region, self.opts, bind_host)
        self.peer = "(none yet)"
        return {"session": self.eng.session, "addr": self.eng.base, "protocol": self.opts.protocol}

    def engine_peer(self, hello: Mapping[str, Any]) -> dict[str, Any]:
        self.peer = str(hello.get("session", "?"))
        if hello.get("protocol") != self.opts.protocol:
            raise TransportError(f"initiator uses protocol {hello.get('protocol')!r}, target {self.opts.protocol!r}")
        return {}

    def engine_notifications(self) -> list[bytes]:
        out = []
        for n in self.eng.engine.get_notifies():
            if n.name == NOTIFY_NAME:
                out.append(base64.b64decode(n.msg))
        return out

    def engine_data_path(self) -> dict[str, Any]:
        return self.eng.data_path("target", self.peer)

    def engine_close(self) -> None:
        eng = getattr(self, "eng", None)
        if eng is not None:
            eng.close()


class MooncakeInitiator(EngineInitiator):
    name = "mooncake"

    def engine_connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        self.opts = MooncakeOptions.from_options(self.options)
        host = str(descriptor["host"])
        self.eng = _Engine(self.region, self.opts, source_addr_towards(host))
        self.peer = str(descriptor["session"])
        self.remote_base = int(descriptor["addr"])
        self._queue: queue.Queue[tuple | None] = queue.Queue()
        self._cond = threading.Condition()
        self._completed: list[tuple[int, int]] = []
        self._error: str | None = None
        self.calls = 0
        self._threads = [threading.Thread(target=self._work, name=f"kvfabric-mooncake-{i}", daemon=True)
                         for i in range(self.opts.workers)]
        for t in self._threads:
            t.start()
        return {"session": self.eng.session, "protocol": self.opts.protocol}

    def _work(self) -> None:
        mod, eng, write = self.eng.mod, self.eng.engine, self.eng.mod.TransferOpcode.Write
        while True:
            item = self._queue.get()
            if item is None:
                return
            seq, src, dst, lens, msg = item
            try:
                ret = eng.batch_transfer_sync(self.peer, src, dst, lens, write, mod.TransferNotify(NOTIFY_NAME, msg))
                err = None if ret == 0 else f"mooncake: batch_transfer_sync of batch {seq} ({len(src)} writes) " \
                                            f"to {self.peer} returned {ret}"
            except Exception as exc:  # noqa: BLE001 - reported to the pacing thread
                err = f"mooncake: batch_transfer_sync of batch {seq} raised {exc}"
            t_ns = time.monotonic_ns()
            with self._cond:
                if err:
                    self._error = self._error or err
                else:
                    self._completed.append((seq, t_ns))
                    self.calls += 1
                self._cond.notify_all()

    def engine_submit(self, seq: int, batch: np.ndarray, announcement: bytes, timeout_s: float) -> None:
        if self._error:
            raise TransportError(self._error)
        src = (batch["src_off"].astype(np.uint64) + np.uint64(self.eng.base)).tolist()
        dst = (batch["dst_off"].astype(np.uint64) + np.uint64(self.remote_base)).tolist()
        self._queue.put((seq, src, dst, batch["nbytes"].tolist(), base64.b64encode(announcement).decode()))

    def engine_reap(self, timeout_s: float) -> list[tuple[int, int]]:
        with self._cond:
            if not self._completed and not self._error:
                self._cond.wait(max(timeout_s, 0.0))
            if self._error:
                raise TransportError(self._error)
            out, self._completed = self._completed, []
        return out

    def engine_data_path(self) -> dict[str, Any]:
        out = self.eng.data_path("initiator", self.peer)
        out["workers"] = self.opts.workers
        out["batch_transfer_sync_calls"] = self.calls
        return out

    def engine_close(self) -> None:
        threads = getattr(self, "_threads", [])
        for _ in threads:
            self._queue.put(None)
        for t in threads:
            t.join(timeout=5.0)
        eng = getattr(self, "eng", None)
        if eng is not None:
            eng.close()


_PROBE: dict[str, str] = {}  # import failure, cached per process ("" = imports)


class MooncakeTransport(Transport):
    name = "mooncake"
    description = "Mooncake Transfer Engine (P2PHANDSHAKE; tcp, or rdma where a device exists)"
    initiator_cls = MooncakeInitiator
    target_cls = MooncakeTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        try:
            opts = MooncakeOptions.from_options(options or {})
        except KvFabricError as exc:
            return Capability.missing(f"mooncake: {exc}")
        if "err" not in _PROBE:
            try:
                import_engine()
                _PROBE["err"] = ""
            except ImportError as exc:
                _PROBE["err"] = f"mooncake.engine cannot be imported ({exc}): {INSTALL_HINT}"
        if _PROBE["err"]:
            return Capability.missing(_PROBE["err"])
        if opts.protocol == "rdma":
            devs = rdma_devices()
            if not devs:
                return Capability.missing("mooncake protocol rdma needs an RDMA device; /sys/class/infiniband "
                                          "lists none on this host (use protocol=tcp)")
            wanted = [d for d in opts.device.split(",") if d]
            absent = [d for d in wanted if d not in devs]
            if absent:
                return Capability.missing(f"mooncake: RDMA device(s) {', '.join(absent)} not present; "
                                          f"this host has {', '.join(devs)}")
        how = "kernel TCP" if opts.protocol == "tcp" else "RDMA WRITE"
        return Capability.ok(f"Mooncake Transfer Engine over {opts.protocol} ({how}), P2PHANDSHAKE",
                             engine=engine_version())
