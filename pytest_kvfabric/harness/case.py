"""One KV-transfer case, from Scenario to verdict, shared by the fixtures and suite items.

Nothing pytest-specific here: it returns what happened (skip reason, metrics, SLO verdicts,
baseline changes) and the plugin turns that into skip / fail / pass.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..measure import slo as slo_mod
from ..measure.metrics import BUILTIN, MetricSet
from ..errors import KvFabricError
from ..fabric.base import HostPair, Layout
from ..fabric.select import known_fabric, probes_here
from .options import Selection
from ..lab import env as lab_env
from ..report import baseline as baseline_mod
from ..core.scenario import Scenario


def case_id(scenario_id: str, model: str, transport: str) -> str:
    """Stable id matching a case across runs (the baseline key)."""
    return f"{scenario_id}[{model}-{transport}]"


# Opens a fabric's host pair for one process: (selection, worker index, worker count) ->
# (HostPair, closer). Fabrics are named by the pytest_kvfabric_fabrics hook (hookspecs.py).
Opener = Callable[[Selection, int, int], "tuple[HostPair, Callable[[], None]]"]


def open_builtin(selection: Selection, index: int, count: int) -> tuple[HostPair, Callable[[], None]]:
    """The shipped fabrics (local, netns, hosts) through fabric/select.py."""
    from ..fabric import select

    try:
        return select.open_pair(selection.fabric, worker=index, hosts_file=selection.hosts,
                                netns_options=dict(selection.netns), nworkers=count)
    except select.FabricUnavailable as exc:  # e.g. netns without root: the cases skip with this reason
        raise PairUnavailable(str(exc)) from None


class PairManager:
    """This process's host pair, opened on first use and closed at session end, and its probe
    cache (a new session probes again: a transport may have come or gone since the last one).

    Under xdist each worker process has its own manager, hence its own pair. The worker id
    comes from the plugin's config (env vars leak into in-process runs, e.g. pytester under xdist)."""

    def __init__(self, selection: Selection, worker: str = "main", workers: int = 1,
                 opener: Opener | None = None) -> None:
        self.selection = selection
        self.worker = worker
        self.workers = workers
        self.opener: Opener = opener or open_builtin
        self._pair: HostPair | None = None
        self._closer: Callable[[], None] | None = None
        self._error: str | None = None
        self._probes: dict[str, str | None] = {}
        self._layout: Layout | None = None  # the multi-agent layout open now (one shape at a time)
        self._layout_closer: Callable[[], None] | None = None

    def layout(self, rails: int, topology: tuple[int, int]) -> Layout:
        """This process's Layout of `rails` and `topology` (a multi-agent case), opened on first use;
        a case of another shape closes the previous one first (namespaces and agents are per shape)."""
        from ..fabric import alloc, select

        if self._layout is not None and (self._layout.rails, self._layout.topology) == (rails, tuple(topology)):
            return self._layout
        self._close_layout()
        if self.opener is not open_builtin:
            raise select.FabricUsageError(f"fabric {self.selection.fabric!r} (a plug-in's) opens single pairs only; "
                                          f"it cannot place rails={rails} topology={tuple(topology)}")
        index = alloc.worker_index({} if self.worker == "main" else {"PYTEST_XDIST_WORKER": self.worker})
        request = select.PairRequest(worker=index, hosts_file=self.selection.hosts,
                                     netns_options=dict(self.selection.netns), nworkers=self.workers,
                                     rails=int(rails), topology=(int(topology[0]), int(topology[1])))
        try:
            self._layout, self._layout_closer = select.open_layout(self.selection.fabric, request)
        except select.FabricUnavailable as exc:
            raise PairUnavailable(str(exc)) from None
        return self._layout

    def _close_layout(self) -> None:
        closer, self._layout_closer, self._layout = self._layout_closer, None, None
        if closer is not None:
            closer()

    def get(self) -> HostPair:
        if self._error is not None:
            raise PairUnavailable(self._error)
        if self._pair is None:
            from ..fabric import alloc

            index = alloc.worker_index({} if self.worker == "main" else {"PYTEST_XDIST_WORKER": self.worker})
            try:
                self._pair, self._closer = self.opener(self.selection, index, self.workers)
            except PairUnavailable as exc:
                self._error = str(exc)
                raise
        return self._pair

    def close(self) -> None:
        self._close_layout()
        closer, self._closer, self._pair = self._closer, None, None
        if closer is not None:
            closer()

    def probe_reason(self, transport: str, params: Mapping[str, Any]) -> str | None:
        """probe_reason, once per session and parameter set (a new session probes again)."""
        return probe_reason(transport, params, self._probes)

    def pair_probe_reason(self, pair: HostPair, transport: str, params: Mapping[str, Any]) -> str | None:
        return pair_probe_reason(pair, transport, params, self._probes)


def probe_reason(transport: str, params: Mapping[str, Any], cache: dict[str, str | None] | None = None) -> str | None:
    """Why this host cannot run the transport, or None. With a cache, probed once per parameter
    set: some probes do real netlink binds and take a second."""
    from ..transports.registry import probe

    cache = {} if cache is None else cache
    key = json.dumps([transport, params], sort_keys=True, default=str)  # a cache key, not a round trip
    if key not in cache:
        cap = probe(transport, params)
        cache[key] = None if cap.available else f"{transport}: {cap.reason}"
    return cache[key]


def pair_probe_reason(pair: HostPair, transport: str, params: Mapping[str, Any],
                      cache: dict[str, str | None] | None = None) -> str | None:
    """Why the pair's own hosts cannot run the transport, or None (probed on them)."""
    cache = {} if cache is None else cache
    key = json.dumps([pair.name, transport, params], sort_keys=True, default=str)
    if key not in cache:
        from ..fabric.transport_probe import probe_pair

        cache[key] = probe_pair(pair, transport, params)
    return cache[key]


class PairUnavailable(Exception):
    """The fabric cannot give this process a host pair (e.g. netns without root): skip reason."""


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
    metric_set: MetricSet = BUILTIN  # the run's metrics (built-ins and plug-ins')
    worker: str = "main"

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
            "worker": self.worker,
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
        """Flat metrics for JUnit XML <properties> (one property per declared figure, measure/metrics.py)."""
        props: list[tuple[str, Any]] = [("kv_case", self.case), ("kv_pair", self.pair or "")]
        props += self.metric_set.junit(self.metrics)
        for v in self.verdicts:
            props.append((f"kv_slo_{v.key}", ("pass" if v.passed else "fail") if v.judged else "not judged"))
        return props


def run_case(
    scenario: Scenario,
    pairs: PairManager,
    selection: Selection,
    baseline_samples: Mapping[str, list[list[dict[str, float]]]] | None,
    case: str,
    timeout_s: float | None = None,
    metric_set: MetricSet | None = None,
    baseline_tcg: bool = False,
) -> CaseOutcome:
    """Run the case `selection.repeat` times back to back on this process's pair; judge the
    median figures against its SLOs and every repeat against the baseline's repeats."""
    ms = metric_set or BUILTIN
    out = CaseOutcome(case=case, scenario=scenario, metric_set=ms, worker=pairs.worker)
    if probes_here(selection.fabric):  # other fabrics probe on the agents' own hosts, below
        reason = pairs.probe_reason(scenario.transport, scenario.transport_params)
        if reason:
            out.skip_reason, out.unavailable = reason, True
            return out
    layout: Layout | None = None
    try:
        if scenario.multi_agent:
            layout = pairs.layout(scenario.rails, scenario.topology.shape)
            pair = layout.flow_pair(0, 0, 0)  # probes and capacity: the first flow's hosts
        else:
            pair = pairs.get()
    except PairUnavailable as exc:
        out.skip_reason = f"fabric {selection.fabric}: {exc}"
        return out
    except KvFabricError as exc:  # unreachable host, bad inventory: the case fails, named
        out.error = f"fabric {selection.fabric}: {type(exc).__name__}: {exc}"
        return out
    out.pair = layout.name if layout is not None else pair.name
    if not probes_here(pair.fabric):  # the agents' hosts answer for themselves (their NICs, kernels)
        reason = pairs.pair_probe_reason(pair, scenario.transport, scenario.transport_params)
        if reason:
            out.skip_reason, out.unavailable = f"{scenario.transport}: {reason}", True
            return out
    fabric = known_fabric(pair.fabric)  # None: a plug-in's hook fabric (its hosts report theirs)
    out.interfaces = case_interfaces(fabric, pair, layout)
    # Remote hosts report their own kernel and NIC (collected on the host through its gateway).
    name, details = (layout.name, layout.details) if layout is not None else (pair.name, pair.details)
    out.host_fingerprints = {f"{name}/{role}": fp for role, fp in (details.get("fingerprint") or {}).items()}
    from ..report.repeats import median_metrics, repeat_figures
    from ..run.flows import FlowRunner
    from ..run.runner import AgentPair

    # A multi-agent case's capacity (one probe per rail and instance) is not measured yet: none is said.
    out.capacity = up_front_capacity(scenario, pair) if layout is None else None
    n = max(1, selection.repeat)
    runs: list[dict[str, Any]] = []
    timeout = selection.timeout_s if selection.timeout_s is not None else timeout_s  # CLI wins
    try:  # the repeats share one pair of agents: a repeat measures the transfer, not a process start
        with (AgentPair(pair, timeout) if layout is None else FlowRunner(layout, timeout)) as agents:
            for i in range(n):
                result = agents.run(scenario)
                runs.append(ms.complete(result.to_dict()))
    except KvFabricError as exc:  # transport failure, integrity error, timeout: named, no traceback
        out.error = f"{type(exc).__name__}: {exc}" + (f" (repeat {len(runs) + 1} of {n})" if n > 1 else "")
        partial = getattr(exc, "result", None)  # an IntegrityError still carries what was measured
        if partial is not None:
            out.metrics = ms.complete(partial.to_dict())
        return out
    out.metrics = median_metrics(runs)
    out.repeats = repeat_figures(runs, ms)
    out.result = result if n == 1 else type(result).from_dict(out.metrics)  # the median run, as a Result
    out.verdicts = slo_mod.check(scenario.slo, out.metrics, virtualized=lab_env.virtualized(), metric_set=ms)
    if baseline_samples is not None and case in baseline_samples:
        out.changes = baseline_mod.compare_samples(case, baseline_samples[case], out.repeats,
                                                   selection.thresholds or None, metrics=ms,
                                                   tcg=baseline_tcg or lab_env.virtualized() == "tcg")
    return out


def case_interfaces(fabric: Any, pair: HostPair, layout: Layout | None) -> list[dict[str, Any]]:
    """The data-plane interfaces a case records: its pair's, or every flow's of a layout (once each)."""
    if fabric is None:
        return []
    if layout is None:
        return fabric.interfaces(pair)
    seen: dict[str, dict[str, Any]] = {}
    P, D = layout.topology
    for p in range(P):
        for d in range(D):
            for r in range(layout.rails):
                for itf in fabric.interfaces(layout.flow_pair(p, d, r)):
                    seen.setdefault(json.dumps(itf, sort_keys=True, default=str), itf)
    return list(seen.values())


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
