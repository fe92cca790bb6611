"""Agent process entry point: one endpoint side (prefill or decode), driven over an execnet channel.

The controller runs `fabric.bootstrap.AGENT_BOOTSTRAP` (which calls `serve`) through
`gateway.remote_exec`, then sends plain messages
(dicts of JSON-able values; numpy arrays travel as {"dtype", "data": bytes}):

    {"cmd": "setup", "role": "decode"|"prefill", "spec": Scenario spec, "seed": int,
     "token": str, "bind": data address, "options": {...}}
        -> {"ok": True, "pid", "register_ns", "descriptor" (decode only)}
    {"cmd": "run", "timeout_s": float, "descriptor": {...} (prefill only),
     "start_at_ns" | "start_in_ns": int (prefill, optional: a multi-agent run's common start)}
        -> {"ok": True, ...raw measurements...}
    {"cmd": "exit"} (or the channel closing) ends the agent.
Any failure answers {"ok": False, "kind": exception class name, "error": one line}.

Each agent rebuilds the TransferPlan from the spec itself: the plan never crosses the channel.
In a multi-agent run, options["flow"] (emulator.flows.FlowSpec) names the flow whose rows it runs.
"""
from __future__ import annotations

import os
import resource
import time
from typing import Any

import numpy as np

from ..core.scenario import INJECT_PARAM  # fault injection (scenario.FAULTS), --kv-inject


def pack_array(a: np.ndarray) -> dict[str, Any]:
    return {"dtype": a.dtype.str, "data": np.ascontiguousarray(a).tobytes()}


def unpack_array(d: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).copy()


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Session:
    """State of one run between `setup` and `run` on one agent."""

    def __init__(self, msg: dict[str, Any]) -> None:
        from ..emulator.plan import build_plan
        from ..core.scenario import Scenario
        from ..transports.registry import get_transport
        from . import pattern
        from .pool import Pool, transport_options

        self.role = msg["role"]
        self.scenario = Scenario.from_spec(msg["spec"])
        self.seed = int(msg.get("seed", self.scenario.seed))
        self.options = dict(msg.get("options") or {})
        self.plan = build_plan(self.scenario)
        self.gpu_of_request = None
        flow = self.options.get("flow")
        if flow:  # one flow of a multi-agent run (run/flows.py): its own rows, cut the same way on both ends
            from ..emulator.flows import FlowSpec, flow_plan

            spec = FlowSpec.from_dict(flow)
            sub = flow_plan(self.plan, spec)
            self.plan = sub.plan
            if spec.prefill is None:  # a one-sender reference emulates every prefill instance's GPU
                self.gpu_of_request = sub.gpu.tolist()
        self.transport = get_transport(self.scenario.transport)
        cap = self.transport.probe(dict(self.scenario.transport_params))
        if not cap.available:
            from ..errors import TransportError

            raise TransportError(f"transport {self.scenario.transport!r} not available: {cap.reason}")
        self.topts = transport_options(self.scenario, msg["token"])
        self.inject = dict(self.scenario.transport_params).get(INJECT_PARAM)
        self.keys = pattern.row_keys(self.seed, self.plan.transfers)
        self.pool = None
        self.target = None
        self.initiator = None
        self.reply: dict[str, Any] = {"ok": True, "pid": os.getpid()}
        self.channel: Any = None  # set by serve() for the run
        if self.role == "decode":
            self.pool = Pool(self.transport, self.plan.dst_region_bytes, self.topts)
            verify = self.scenario.verify
            self.base = pattern.base_pattern(self.seed, self.plan.src_region_bytes) if verify else None
            t0 = time.monotonic_ns()
            self.target = self.transport.target(self.pool.region, self.topts)
            self.reply["descriptor"] = self.target.listen(msg["bind"], float(self.options.get("setup_timeout_s", 30.0)))
            self.reply["register_ns"] = self.pool.register_ns + time.monotonic_ns() - t0
            # Built now, not when the run starts: on a 200,000-write plan it takes ~0.4 s, which the
            # first writes would otherwise wait out (and report as latency).
            self.ledger = pattern.PageLedger(
                self.plan.transfers, self.keys, self.base, self.pool.array, self.plan.dst_slot_bytes,
                self.plan.requests["nbytes"], verify=verify, hot_path=self.options.get("hot_path"),
            )
        else:
            self.pool = Pool(self.transport, self.plan.src_region_bytes, self.topts)
            self.pool.array[:] = pattern.base_pattern(self.seed, self.plan.src_region_bytes)
            t0 = time.monotonic_ns()
            self.initiator = self.transport.initiator(self.pool.region, self.topts)
            self.reply["register_ns"] = self.pool.register_ns + time.monotonic_ns() - t0

    def run(self, msg: dict[str, Any]) -> dict[str, Any]:
        timeout_s = float(msg["timeout_s"])
        if self.role == "decode":
            return self._run_decode(timeout_s)
        start_at = msg.get("start_at_ns")
        if start_at is None and msg.get("start_in_ns") is not None:  # no shared clock: count from receipt
            start_at = time.monotonic_ns() + int(msg["start_in_ns"])
        return self._run_prefill(msg["descriptor"], timeout_s, start_at)

    def _run_decode(self, timeout_s: float) -> dict[str, Any]:
        from .decode import DecodeOptions, run_decode

        plan = self.plan
        ledger = self.ledger
        c0 = cpu_s()
        out = run_decode(plan, self.target, ledger, DecodeOptions(timeout_s=timeout_s, inject=self.inject))
        out["cpu_s"] = cpu_s() - c0
        out["spin_cpu_s"] = getattr(self.target, "spin_cpu_ns", 0) / 1e9
        out["data_path"] = {**_plain(self.target.data_path()), "hot_path": ledger.hot_path}
        out["req_complete_ns"] = pack_array(out["req_complete_ns"])
        out["notify_ns"] = pack_array(out["notify_ns"])
        out["placed_by_layer_ns"] = pack_array(out["placed_by_layer_ns"])
        out["ok"] = True
        return out

    def _run_prefill(self, descriptor: dict[str, Any], timeout_s: float, start_at_ns: int | None = None) -> dict[str, Any]:
        from .prefill import MAX_INFLIGHT, MAX_INFLIGHT_BYTES, PrefillOptions, run_prefill, tighten_timer_slack

        sc = self.scenario
        wl = sc.workload
        tighten_timer_slack()
        t0 = time.monotonic_ns()
        self.initiator.connect(descriptor, float(self.options.get("setup_timeout_s", 30.0)))
        connect_ns = time.monotonic_ns() - t0
        opts = PrefillOptions(
            pacing=sc.pacing,
            closed_loop=wl.arrival.kind == "closed",
            concurrency=int(wl.arrival.concurrency or 1) * int(self.options.get("concurrency_scale", 1)),
            max_inflight=int(self.options.get("max_inflight", MAX_INFLIGHT)),
            max_inflight_bytes=int(self.options.get("max_inflight_bytes", MAX_INFLIGHT_BYTES)),
            duration_s=wl.duration_s,
            timeout_s=timeout_s,
            hot_path=self.options.get("hot_path"),
            start_at_ns=start_at_ns,
            gpu_of_request=self.gpu_of_request,
        )
        watcher = ProgressWatcher(self.channel, self.plan, float(self.options.get("progress_s") or 0))
        opts.monitor = watcher.start if watcher.enabled else None
        c0 = cpu_s()
        try:
            out = run_prefill(self.plan, self.initiator, self.pool.array, self.keys, opts)
        finally:
            watcher.stop()
        cpu = cpu_s() - c0
        stats = self.initiator.stats()
        data_path = self.initiator.data_path()
        self.initiator.close()  # BYE: the decode side learns the run is over
        res = {k: (pack_array(v) if isinstance(v, np.ndarray) else v) for k, v in out.items()}
        data_path = {**_plain(data_path), "hot_path": res.pop("hot_path")}
        res.update(ok=True, cpu_s=cpu, spin_cpu_s=res.pop("spin_cpu_ns") / 1e9, connect_ns=connect_ns,
                   data_path=data_path, stats=_plain(stats))
        return res

    def close(self) -> None:
        for obj in (self.initiator, self.target):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - teardown must not mask the run's outcome
                    pass
        self.initiator = self.target = None
        self.base = None
        if self.pool is not None:
            self.pool.release()
            self.pool = None


def _plain(obj: Any) -> Any:
    """JSON-able copy (execnet serializes only builtin types)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool, bytes)):
        return obj
    return str(obj)


class ProgressWatcher:
    """A thread that reports the prefill agent's progress every `every_s` seconds while it runs
    ({"progress": {...}} on the channel), read from the arrays the pacing loop fills in, so the
    loop itself does nothing extra. Disabled unless the controller asks (every_s > 0)."""

    def __init__(self, channel: Any, plan: Any, every_s: float) -> None:
        import threading

        self.channel = channel
        self.enabled = channel is not None and every_s > 0
        self.every_s = every_s
        self.nbytes = plan.transfers["nbytes"]
        self.total = int(plan.total_bytes)
        self.nreq = len(plan.requests)
        self._stop = threading.Event()
        self._thread: Any = None

    def start(self, done_ns: np.ndarray, req_done: np.ndarray) -> None:
        import threading

        def loop() -> None:
            t0 = time.monotonic()
            while not self._stop.wait(self.every_s):
                done = done_ns > 0
                msg = {"progress": {"requests_done": int(np.count_nonzero(req_done)), "requests": self.nreq,
                                    "bytes_done": int(self.nbytes[done].sum()), "bytes_total": self.total,
                                    "elapsed_s": time.monotonic() - t0}}
                try:
                    self.channel.send(msg)
                except Exception:  # noqa: BLE001 - the controller went away: the run itself will notice
                    return

        self._thread = threading.Thread(target=loop, name="kvfabric-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _failure(exc: BaseException) -> dict[str, Any]:
    msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
    return {"ok": False, "kind": type(exc).__name__, "error": msg, "pid": os.getpid()}


def serve(channel: Any) -> None:
    """Answer controller messages until told to exit or the channel closes."""
    session: _Session | None = None
    try:
        while True:
            try:
                msg = channel.receive()
            except EOFError:
                return
            if not isinstance(msg, dict) or msg.get("cmd") == "exit":
                return
            cmd = msg.get("cmd")
            try:
                if cmd == "setup":
                    if session is not None:
                        session.close()
                    session = None
                    session = _Session(msg)
                    reply = session.reply
                elif cmd == "run":
                    if session is None:
                        raise RuntimeError("run before setup")
                    session.channel = channel  # progress messages go out on it during the run
                    try:
                        reply = session.run(msg)
                    finally:
                        session.close()
                        session = None
                else:
                    raise RuntimeError(f"unknown command {cmd!r}")
            except Exception as exc:  # noqa: BLE001 - every failure goes back as one line
                reply = _failure(exc)
                if session is not None:
                    session.close()
                    session = None
            channel.send(reply)
    finally:
        if session is not None:
            session.close()
