"""NixlTransport: the plan's writes as NIXL WRITE transfers (UCX backend by default).

- No etcd: the target's agent metadata (base64) and pool address travel in the transport
  descriptor through the controller; the initiator loads it with add_remote_agent (the
  target needs only the initiator's name, sent in the side link's hello).
- Both agents register their pools (DRAM). Each posted batch is one NIXL transfer request
  (initialize_xfer("WRITE", ...)) whose notification carries the batch's records; NIXL
  delivers it to the target after the batch's writes, so the decode side places and verifies
  exactly what NIXL wrote. Completions: check_xfer_state polled.
- Data-path proof (UCX backend): UCX_PROTO_INFO=y makes UCX log its protocol selection
  tables; the agent parses them (ucxinfo) and reports the transport/device lanes of the
  remote writes and of the notifications. `require_ucx_transport=rc` fails the case when a
  lane is anything else (a silent fallback to tcp or cma).

The nixl module is imported inside methods only: without it the probe names what is missing.
"""
from __future__ import annotations

import atexit
import base64
import importlib
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pytest_kvfabric.errors import KvFabricError, TransportError
from pytest_kvfabric.transports.base import Capability, Transport
from pytest_kvfabric.transports.engine_link import EngineInitiator, EngineTarget
from pytest_kvfabric.transports.rdma import sysfs

from . import counters, ucxinfo, verbs
from .options import NixlOptions

MODULES = ("nixl_cu12", "nixl_cu13", "nixl")  # the wheels' module names, smallest first
INSTALL_HINT = ("`pip install kvfabric-nixl` brings it with torch (CUDA build, about 6 GB); the smallest install "
                "that runs the UCX DRAM path is `pip install --no-deps nixl-cu12==1.5.1` (a 68 MB wheel with UCX bundled)")
_STATE: dict[str, Any] = {}  # per process: the UCX log file and the agents made so far


def import_nixl() -> Any:
    """The NIXL Python API module (nixl_agent, nixl_agent_config); its INFO logging quieted."""
    os.environ.setdefault("NIXL_LOG_LEVEL", "WARN")
    errors = []
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("; ".join(errors))


def nixl_version() -> str:
    for dist in ("nixl-cu12", "nixl-cu13", "nixl"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "nixl (version unknown)"


def backend_plugins(mod: Any) -> list[str]:
    """Backend plug-ins shipped next to the module (libplugin_<NAME>.so), without starting an agent."""
    base = Path(mod.__file__).resolve().parent
    names = set()
    for d in (base.parent / f"{base.name}.libs" / "nixl", base.parent / f".{base.name}.mesonpy.libs" / "plugins"):
        if d.is_dir():
            names |= {p.name[len("libplugin_"):].split(".so")[0] for p in d.glob("libplugin_*.so*")}
    return sorted(names)


def ucx_log() -> Path:
    """This process's UCX log. UCX reads UCX_LOG_FILE once, when libucs loads (the first agent),
    so the file is per process and each agent parses only what was appended after it started."""
    if "log" not in _STATE:
        path = Path(tempfile.gettempdir()) / f"kvfabric-ucx-{os.getpid()}.log"
        os.environ["UCX_LOG_FILE"] = str(path)
        os.environ["UCX_PROTO_INFO"] = "y"
        _STATE["log"] = path
        atexit.register(lambda: path.unlink(missing_ok=True))
    return _STATE["log"]


def _addr_of(region: memoryview) -> int:
    arr = np.frombuffer(region, dtype=np.uint8)
    try:
        return int(arr.ctypes.data)
    finally:
        del arr


class _Agent:
    """One NIXL agent with the pool registered, and the UCX evidence it leaves."""

    def __init__(self, region: memoryview, opts: NixlOptions, role: str) -> None:
        self.opts = opts
        self.mod = import_nixl()
        self.verbs = verbs.apply(self.mod.__file__)  # before UCX opens its devices
        self.ports_before = sysfs.snapshot_ports()  # RDMA ports' counters (none on most hosts)
        self.log = ucx_log() if opts.backend == "UCX" else None
        self.log_from = self.log.stat().st_size if self.log is not None and self.log.exists() else 0
        for key in ("UCX_TLS", "UCX_NET_DEVICES"):  # this agent's choice only, not a previous one's
            os.environ.pop(key, None)
        os.environ.update(opts.ucx_env())
        _STATE["n"] = _STATE.get("n", 0) + 1
        self.name = f"kvf-{role}-{os.getpid()}-{_STATE['n']}"
        try:
            # No progress thread: NIXL's Python API starts it with a 0 us delay, a busy loop that
            # takes a whole core on each side; our polls (check_xfer_state, get_new_notifs) drive
            # UCX's progress instead (progress_thread=1 restores NIXL's default).
            conf = self.mod.nixl_agent_config(enable_prog_thread=opts.progress_thread, backends=[opts.backend])
            self.agent = self.mod.nixl_agent(self.name, conf)
        except Exception as exc:
            raise TransportError(f"nixl: creating agent with backend {opts.backend}: {exc}") from exc
        if opts.backend not in self.agent.backends:
            raise TransportError(f"nixl: backend {opts.backend} did not start (available plug-ins: "
                                 f"{', '.join(self.agent.plugin_list)})")
        self.base = _addr_of(region)
        self.nbytes = len(region)
        try:
            self.reg = self.agent.register_memory([(self.base, self.nbytes, 0, "")], "DRAM")
        except Exception as exc:
            raise TransportError(f"nixl: register_memory of the {self.nbytes}-byte pool: {exc}") from exc

    def metadata_b64(self) -> str:
        return base64.b64encode(self.agent.get_agent_metadata()).decode()

    def tables(self) -> list[ucxinfo.ProtoTable]:
        if self.log is None or not self.log.exists():
            return []
        with open(self.log, "rb") as fh:
            fh.seek(self.log_from)
            return ucxinfo.parse(fh.read().decode(errors="replace"))

    def data_path(self, side: str, peer: str) -> dict[str, Any]:
        o = self.opts
        out: dict[str, Any] = {
            "transport": "nixl",
            "engine": nixl_version(),
            "backend": o.backend,
            "agent": self.name,
            "peer_agent": peer,
            "ucx_env": o.ucx_env(),
        }
        if self.verbs.drivers:
            out["verbs_providers"] = self.verbs.to_dict()
        if self.log is None:
            out["description"] = f"NIXL WRITE over backend {o.backend} ({side}); no UCX evidence for this backend"
            out["zero_copy"] = None
            return out
        tables = self.tables()
        writes, notes = ucxinfo.remote_writes(tables), ucxinfo.notifications(tables)
        w, n = ucxinfo.lanes_of(writes), ucxinfo.lanes_of(notes)
        scope = sorted({t.scope for t in writes}) or ["(none logged)"]
        out.update({
            "ucx_write_lanes": w,
            "ucx_notify_lanes": n,
            "ucx_scope": scope,
            "ucx_tables": [t.to_dict() for t in writes],
            "zero_copy": ucxinfo.zero_copy(w),
        })
        moved = counters.lane_deltas(self.ports_before, w + n)
        if moved:  # the device's own word that the RDMA lanes carried packets while this agent ran
            out["rdma_port_counters"] = moved
        if side == "initiator":
            what = (f"remote writes by {', '.join(w)} ({', '.join(scope)})" if w
                    else "UCX logged no remote-write protocol selection")
        else:
            what = f"notifications received; the peer's writes land here (lanes in the initiator's data path)"
        out["description"] = f"NIXL WRITE over UCX ({side}): {what}" + (
            f"; notifications by {', '.join(n)}" if n else "") + "".join(
            f"; {port} packets out +{c.get('sent_pkts', c.get('port_xmit_packets', 0))} "
            f"in +{c.get('rcvd_pkts', c.get('port_rcv_packets', 0))}" for port, c in moved.items())
        return out

    def close(self) -> None:
        reg = getattr(self, "reg", None)
        if reg is not None:
            self.reg = None
            try:
                self.agent.deregister_memory(reg)
            except Exception:  # noqa: BLE001 - teardown
                pass


class NixlTarget(EngineTarget):
    name = "nixl"

    def engine_open(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        self.opts = NixlOptions.from_options(self.options)
        self.ag = _Agent(self.region, self.opts, "t")
        self.peer = "(none yet)"
        return {"agent": self.ag.name, "metadata": self.ag.metadata_b64(), "addr": self.ag.base,
                "backend": self.opts.backend}

    def engine_peer(self, hello: Mapping[str, Any]) -> dict[str, Any]:
        if hello.get("backend") != self.opts.backend:
            raise TransportError(f"initiator uses backend {hello.get('backend')!r}, target {self.opts.backend!r}")
        # The target does not load the initiator's metadata: notifications arrive on the
        # initiator's endpoints, and a second set of endpoints from this side only adds UCX
        # connections (under load their connection retries ran out: NIXL_ERR_REMOTE_DISCONNECT).
        self.peer = str(hello.get("agent", "?"))
        return {}

    def engine_notifications(self) -> list[bytes]:
        out: list[bytes] = []
        for msgs in self.ag.agent.get_new_notifs().values():
            out += msgs
        return out

    def engine_data_path(self) -> dict[str, Any]:
        return self.ag.data_path("target", self.peer)

    def engine_close(self) -> None:
        ag = getattr(self, "ag", None)
        if ag is not None:
            ag.close()


class NixlInitiator(EngineInitiator):
    name = "nixl"

    def engine_connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        self.opts = NixlOptions.from_options(self.options)
        if descriptor.get("backend") != self.opts.backend:
            raise TransportError(f"nixl: target uses backend {descriptor.get('backend')!r}, "
                                 f"this side {self.opts.backend!r}")
        self.ag = _Agent(self.region, self.opts, "i")
        name = self.ag.agent.add_remote_agent(base64.b64decode(str(descriptor["metadata"])))
        self.peer = name.decode() if isinstance(name, bytes) else str(name)
        self.remote_base = int(descriptor["addr"])
        self._inflight: list[tuple[int, Any]] = []
        self._checked = not self.opts.require_ucx_transport
        self.requests = 0
        return {"agent": self.ag.name, "backend": self.opts.backend}

    def engine_submit(self, seq: int, batch: np.ndarray, announcement: bytes, timeout_s: float) -> None:
        n = len(batch)
        local = np.zeros((n, 3), np.uint64)
        local[:, 0] = batch["src_off"] + np.uint64(self.ag.base)
        local[:, 1] = batch["nbytes"]
        remote = local.copy()
        remote[:, 0] = batch["dst_off"] + np.uint64(self.remote_base)
        ag = self.ag.agent
        try:
            handle = ag.initialize_xfer("WRITE", ag.get_xfer_descs(local, "DRAM"), ag.get_xfer_descs(remote, "DRAM"),
                                        self.peer, announcement)
            state = ag.transfer(handle)
        except Exception as exc:
            raise TransportError(f"nixl: posting WRITE of batch {seq} ({n} descriptors) to {self.peer}: {exc}") from exc
        if state == "ERR":
            raise TransportError(f"nixl: WRITE of batch {seq} to {self.peer} failed at post")
        self.requests += 1
        self._inflight.append((seq, handle))

    def engine_reap(self, timeout_s: float) -> list[tuple[int, int]]:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        sleep = 0.0001
        ag = self.ag.agent
        while True:
            done, keep = [], []
            for seq, handle in self._inflight:
                try:
                    state = ag.check_xfer_state(handle)
                except Exception as exc:  # nixlBind raises e.g. NIXL_ERR_REMOTE_DISCONNECT
                    raise TransportError(f"nixl: WRITE of batch {seq} to {self.peer}: {exc}") from exc
                if state == "DONE":
                    done.append((seq, time.monotonic_ns()))
                    ag.release_xfer_handle(handle)
                elif state == "ERR":
                    raise TransportError(f"nixl: WRITE of batch {seq} to {self.peer} ended in error")
                else:
                    keep.append((seq, handle))
            self._inflight = keep
            if done:
                if not self._checked:
                    self._check_path()
                return done
            left = deadline - time.monotonic()
            if left <= 0 or not keep:
                return []
            time.sleep(min(sleep, left))
            sleep = min(sleep * 2, 0.001)

    def _check_path(self) -> None:
        """require_ucx_transport: once writes completed, UCX has logged its selection for them."""
        self._checked = True
        lanes = ucxinfo.lanes_of(ucxinfo.remote_writes(self.ag.tables()))
        why = ucxinfo.requirement_failure(lanes, self.opts.require_ucx_transport)
        if why:
            raise TransportError(f"nixl: {why}")

    def engine_data_path(self) -> dict[str, Any]:
        out = self.ag.data_path("initiator", self.peer)
        out["xfer_requests"] = self.requests
        if self.opts.require_ucx_transport:
            out["require_ucx_transport"] = self.opts.require_ucx_transport
        return out

    def engine_close(self) -> None:
        ag = getattr(self, "ag", None)
        if ag is not None:
            for _, handle in getattr(self, "_inflight", []):
                try:
                    ag.agent.release_xfer_handle(handle)
                except Exception:  # noqa: BLE001 - teardown
                    pass
            self._inflight = []
            ag.close()


class NixlTransport(Transport):
    name = "nixl"
    description = "NVIDIA NIXL WRITEs (UCX backend by default), UCX path reported and checkable"
    initiator_cls = NixlInitiator
    target_cls = NixlTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        try:
            opts = NixlOptions.from_options(options or {})
        except KvFabricError as exc:
            return Capability.missing(f"nixl: {exc}")
        if "mod" not in _STATE:
            try:
                _STATE["mod"] = import_nixl()
                _STATE["err"] = ""
            except ImportError as exc:
                _STATE["mod"], _STATE["err"] = None, f"NIXL's Python API cannot be imported ({exc}): {INSTALL_HINT}"
        if _STATE["err"]:
            return Capability.missing(_STATE["err"])
        plugins = backend_plugins(_STATE["mod"])
        if plugins and opts.backend not in plugins:
            return Capability.missing(f"nixl: backend plug-in {opts.backend} is not shipped with "
                                      f"{nixl_version()}; it has {', '.join(plugins)}")
        return Capability.ok(f"NIXL WRITE over {opts.backend}", engine=nixl_version(), backends=plugins)
