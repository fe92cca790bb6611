"""One KV-transfer case, from Scenario to verdict, shared by the fixtures and suite items.

Nothing pytest-specific here: it returns what happened (skip reason, metrics, SLO verdicts,
baseline changes) and the plugin turns that into skip / fail / pass.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..measure import slo as slo_mod
from ..errors import KvFabricError
from ..fabric.base import HostPair
from .options import Selection
from ..lab import env as lab_env
from ..report import baseline as baseline_mod
from ..core.scenario import Scenario


def case_id(scenario_id: str, model: str, transport: str) -> str:
    """Stable id matching a case across runs (the baseline key)."""
    return f"{scenario_id}[{model}-{transport}]"


def worker_id() -> str:
    """This process's xdist worker id; the plugin sets it from its own config (env vars leak
    into in-process pytest runs, e.g. pytester under xdist)."""
    return _WORKER["id"]


_WORKER = {"id": os.environ.get("PYTEST_XDIST_WORKER", "main"), "count": "1"}


def set_worker(worker: str, count: int) -> None:
    _WORKER["id"], _WORKER["count"] = worker, str(count)


class PairManager:
    """Opens this process's host pair on first use and closes it at session end.

    Under xdist each worker process has its own manager, hence its own pair."""

    def __init__(self, selection: Selection) -> None:
        self.selection = selection
        self._pair: HostPair | None = None
        self._closer: Callable[[], None] | None = None
        self._error: str | None = None

    def get(self) -> HostPair:
        if self._error is not None:
            raise PairUnavailable(self._error)
        if self._pair is None:
            try:
                self._pair, self._closer = open_pair(self.selection)
            except PairUnavailable as exc:
                self._error = str(exc)
                raise
        return self._pair

    def close(self) -> None:
        closer, self._closer, self._pair = self._closer, None, None
        if closer is not None:
            closer()


class PairUnavailable(Exception):
    """The fabric cannot give this process a host pair (e.g. netns without root): skip reason."""


def open_pair(selection: Selection) -> tuple[HostPair, Callable[[], None]]:
    from ..fabric import alloc, select

    worker = worker_id()
    index = alloc.worker_index({} if worker == "main" else {"PYTEST_XDIST_WORKER": worker})
    try:
        return select.open_pair(selection.fabric, worker=index, hosts_file=selection.hosts,
                                netns_options=dict(selection.netns), nworkers=int(_WORKER["count"]))
    except select.FabricUnavailable as exc:  # e.g. netns without root: the cases skip with this reason
        raise PairUnavailable(str(exc)) from None


@dataclass
class CaseOutcome:
    case: str
    scenario: Scenario
    pair: str | None = None
    skip_reason: str | None = None
    metrics: dict[str, Any] | None = None
    verdicts: list[slo_mod.Verdict] = field(default_factory=list)
    changes: list[baseline_mod.Change] = field(default_factory=list)
    repeats: list[dict[str, float]] = field(default_factory=list)  # each repeat's gated figures
    unavailable: bool = False  # skip_reason is the transport probe's: the transport is missing here
    error: str | None = None
    result: Any = None  # the runner's Result object
    interfaces: list[dict[str, Any]] = field(default_factory=list)
    host_fingerprints: dict[str, Any] = field(default_factory=dict)
    capacity: Any = None  # capacity.Capacity of a paced case: needed against carried Gb/s

    def capacity_note(self) -> str | None:
        """Why a timing SLO miss follows from too little bandwidth, when it does."""
        from ..measure.capacity import explains

        return explains(self.capacity, [v.key for v in self.verdicts if not v.passed])

    @property
    def slo_failed(self) -> bool:
        return any(not v.passed for v in self.verdicts)

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.changes)

    @property
    def undecided(self) -> bool:
        return any(c.undecided for c in self.changes)

    def record(self) -> dict[str, Any]:
        """What the JSON report keeps of this case (the plugin adds nodeid and outcome)."""
        sc = self.scenario
        return {
            "case": self.case,
            "scenario": sc.id,
            "model": "synthetic" if sc.synthetic else sc.model.id,
            "transport": sc.transport,
            "pair": self.pair,
            "worker": worker_id(),
            "transport_params": dict(sc.transport_params),
            "metrics": self.metrics,
            "repeats": self.repeats or None,
            "gate": [c.to_dict() for c in self.changes] or None,
            "verdicts": [
                {"key": v.key, "metric": v.metric, "measured": v.measured, "threshold": v.threshold,
                 "passed": v.passed, "note": v.note}
                for v in self.verdicts
            ],
            "notes": list(sc.notes) or None,
            "reason": self.skip_reason or self.error,
            "unavailable": self.unavailable or None,
            "interfaces": self.interfaces,
            "host_fingerprints": self.host_fingerprints,
            "capacity": self.capacity.to_dict() if self.capacity is not None else None,
        }

    def junit_properties(self) -> list[tuple[str, Any]]:
        """Flat metrics for JUnit XML <properties> (strings; one property per figure)."""
        m = self.metrics or {}
        props: list[tuple[str, Any]] = [("kv_case", self.case), ("kv_pair", self.pair or "")]
        for key in ("throughput_gbps", "bytes", "transfers"):
            if m.get(key) is not None:
                props.append((f"kv_{key}", m[key]))
        for group in ("latency_us", "exposed_ms", "cpu_s_per_gb", "spin_s_per_gb", "post_lateness_us",
                      "post_call_us"):
            for k, v in (m.get(group) or {}).items():
                if v is not None:
                    props.append((f"kv_{group}_{k}", v))
        for v in self.verdicts:
            props.append((f"kv_slo_{v.key}", ("pass" if v.passed else "fail") if v.judged else "not judged"))
        return props


_PROBES: dict[str, str | None] = {}


def forget_probes() -> None:
    """A new session probes again (a transport may have come or gone since the last one)."""
    _PROBES.clear()


def probe_reason(transport: str, params: Mapping[str, Any]) -> str | None:
    """Why this host cannot run the transport, or None. Probed once per process and
    parameter set: some probes do real netlink binds and take a second."""
    from ..transports.registry import probe

    key = json.dumps([transport, params], sort_keys=True, default=str)
    if key not in _PROBES:
        cap = probe(transport, params)
        _PROBES[key] = None if cap.available else f"{transport}: {cap.reason}"
    return _PROBES[key]


def pair_probe_reason(pair: HostPair, transport: str, params: Mapping[str, Any]) -> str | None:
    key = json.dumps([pair.name, transport, params], sort_keys=True, default=str)
    if key not in _PROBES:
        from ..fabric.transport_probe import probe_pair

        _PROBES[key] = probe_pair(pair, transport, params)
    return _PROBES[key]


def run_case(
    scenario: Scenario,
    pairs: PairManager,
    selection: Selection,
    baseline_samples: Mapping[str, list[list[dict[str, float]]]] | None,
    case: str,
    timeout_s: float | None = None,
    baseline_tcg: bool = False,
) -> CaseOutcome:
    """Run the case `selection.repeat` times back to back on this process's pair; judge the
    median figures against its SLOs and every repeat against the baseline's repeats."""
    out = CaseOutcome(case=case, scenario=scenario)
    if selection.fabric == "local":  # other fabrics probe on the agents' own hosts, below
        reason = probe_reason(scenario.transport, scenario.transport_params)
        if reason:
            out.skip_reason, out.unavailable = reason, True
            return out
    try:
        pair = pairs.get()
    except PairUnavailable as exc:
        out.skip_reason = f"fabric {selection.fabric}: {exc}"
        return out
    except KvFabricError as exc:  # unreachable host, bad inventory: the case fails, named
        out.error = f"fabric {selection.fabric}: {type(exc).__name__}: {exc}"
        return out
    out.pair = pair.name
    if pair.fabric != "local":  # the agents' hosts answer for themselves (their NICs, kernels)
        reason = pair_probe_reason(pair, scenario.transport, scenario.transport_params)
        if reason:
            out.skip_reason, out.unavailable = f"{scenario.transport}: {reason}", True
            return out
    if pair.fabric == "local":
        out.interfaces = [{"name": "lo", "netns": None}]
    elif pair.fabric == "netns":
        split = pair.details.get("cpu_split") or {}  # --kv-netns-cpu-split: the CPUs each side had
        out.interfaces = [{"name": h.interface or "lo", "netns": h.netns, "cpus": split.get(role)}
                          for role, h in (("prefill", pair.prefill), ("decode", pair.decode))]
    # Remote hosts report their own kernel and NIC (collected on the host through its gateway).
    out.host_fingerprints = {f"{pair.name}/{role}": fp for role, fp in
                             (pair.details.get("fingerprint") or {}).items()}
    from ..report.repeats import median_metrics, repeat_figures
    from ..run.runner import AgentPair

    out.capacity = up_front_capacity(scenario, pair)
    n = max(1, selection.repeat)
    runs: list[dict[str, Any]] = []
    timeout = selection.timeout_s if selection.timeout_s is not None else timeout_s  # CLI wins
    try:  # the repeats share one pair of agents: a repeat measures the transfer, not a process start
        with AgentPair(pair, timeout) as agents:
            for i in range(n):
                result = agents.run(scenario)
                runs.append(json.loads(json.dumps(result.to_dict(), default=_jsonable)))
    except KvFabricError as exc:  # transport failure, integrity error, timeout: named, no traceback
        out.error = f"{type(exc).__name__}: {exc}" + (f" (repeat {len(runs) + 1} of {n})" if n > 1 else "")
        partial = getattr(exc, "result", None)  # an IntegrityError still carries what was measured
        if partial is not None:
            out.metrics = json.loads(json.dumps(partial.to_dict(), default=_jsonable))
        return out
    out.metrics = median_metrics(runs)
    out.repeats = repeat_figures(runs)
    out.result = result if n == 1 else type(result)(**out.metrics)  # the median run, as a Result
    out.verdicts = slo_mod.check(scenario.slo, out.metrics, virtualized=lab_env.virtualized())
    if baseline_samples is not None and case in baseline_samples:
        out.changes = baseline_mod.compare_samples(case, baseline_samples[case], out.repeats,
                                                   selection.thresholds or None,
                                                   tcg=baseline_tcg or lab_env.virtualized() == "tcg")
    return out


def up_front_capacity(scenario: Scenario, pair: HostPair) -> Any:
    """Before a paced case: the bandwidth its plan needs and, when it has a timing SLO that a slow
    link could miss, what the pair carries (a short probe, once per pair and transport)."""
    if scenario.pacing != "emulated" or scenario.synthetic:
        return None
    from ..measure.capacity import TIMING_KEYS, Capacity, needed_gbps
    from ..emulator.plan import build_plan

    try:
        plan = build_plan(scenario)
    except KvFabricError:
        return None  # the run reports the scenario's error itself
    need = needed_gbps(plan.total_bytes, float(plan.requests["prefill_ns"].sum()))
    if not set(scenario.slo or ()) & TIMING_KEYS:
        return Capacity(need, None, "not probed: no timing SLO")
    from ..run.capacity_probe import carried_gbps

    carried, how = carried_gbps(pair, scenario.transport, scenario.transport_params)
    return Capacity(need, carried, how)


def _jsonable(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:
        pass
    return str(obj)
