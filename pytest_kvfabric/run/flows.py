"""The controller of a multi-agent run: rails and xPyD instances, one AgentPair per flow.

A flow is prefill instance p's agent on rail r sending to decode instance d's agent on rail r
(Layout.flow_pair); it runs its sub-plan (emulator/flows.py) and verifies every page at its
decode agent, exactly as a plain pair does. Transports take one initiator per target, so a
decode host with fan-in N runs N receiver agents (one per incoming flow) on the same interface
and address: the fan-in still meets in that interface's queue, which is what incast is about.

Sequence: every flow's agents start and set up in parallel (threads; each wait bounded); once
all are set up, the controller fixes one start instant and sends every flow its run message
with it. Agents that share this host's CLOCK_MONOTONIC (fabric.shares_clock: local, netns)
get it as an absolute time (start_at_ns), so every flow's layer ready times count from one
instant; elsewhere each agent gets a delay counted from the message's arrival (start_in_ns),
which agrees to within the control channel's one-way time. Each sender reports how late its
loop began (flow_start_late_us). The first flow to fail tears every agent down and is named.
With a decode instance fed by several prefill instances, a second phase measures the incast
reference: the same requests from one sender (measure/flowstats.py defines the penalty).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..core.scenario import Scenario
from ..emulator.flows import FlowSpec, SubPlan, flow_masks, flow_plan, rail_of, restrict, route
from ..emulator.memory import check_hbm_fit
from ..emulator.plan import build_plan
from ..emulator.plantypes import TransferPlan
from ..endpoint.agent import unpack_array
from ..errors import IntegrityError, KvFabricError, TransportError
from ..fabric.base import Layout
from ..fabric.select import get_fabric
from ..measure import flowstats, stats
from ..measure.result import Result
from .runner import FLOOR_BYTES_PER_S, RUN_MARGIN_S, SETUP_MARGIN_S, AgentPair, derive_timeout_s, integrity_of

BARRIER_LEAD_S = 0.2  # from "all set up" to the common start: run messages out, senders connected ...
BARRIER_LEAD_PER_FLOW_S = 0.05  # ... one more control round trip and connect per flow on a busy host
_M_KEYS = ("post_ns", "done_ns", "req_arrival_ns", "req_start_ns", "req_done_ns", "post_call_ns")


@dataclass
class FlowRun:
    """One flow's plan, agents and answers."""

    spec: FlowSpec
    sub: SubPlan
    agents: AgentPair
    pre: dict[str, Any] | None = None
    dec: dict[str, Any] | None = None


class FlowRunner:
    """Runs multi-agent scenarios on a Layout (a context manager, like AgentPair)."""

    def __init__(self, layout: Layout, timeout_s: float | None = None, options: Mapping[str, Any] | None = None) -> None:
        self.layout = layout
        self.timeout_s = timeout_s
        self.options = dict(options or {})
        self.shares_clock = bool(get_fabric(layout.fabric).shares_clock)
        self._live: list[AgentPair] = []
        self.last_flows: list[FlowRun] = []  # the latest phase's flows (their agents' pids, for checks)

    def __enter__(self) -> "FlowRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        live, self._live = self._live, []
        for agents in live:
            agents.close()

    # -- the run ----------------------------------------------------------------------------
    def run(self, scenario: Scenario, check_integrity: bool = True) -> Result:
        """Run one multi-agent scenario; raises TransportError naming the flow that failed, or
        IntegrityError (with the Result as `exc.result`)."""
        from ..transports.registry import get_transport

        self._check_layout(scenario)
        try:
            get_transport(scenario.transport)
        except ImportError as exc:
            raise TransportError(f"transport {scenario.transport!r} could not be imported: {exc}") from None
        check_hbm_fit(scenario, scenario.id)
        plan = build_plan(scenario)
        run_timeout = self.timeout_s if self.timeout_s is not None else derive_timeout_s(plan)
        topo = scenario.topology
        specs = [FlowSpec(scenario.rails, r, topo.prefill, topo.decode, p, d, topo.routing, scenario.seed)
                 for p in range(topo.prefill) for d in range(topo.decode) for r in range(scenario.rails)]
        flows = self._run_phase(scenario, plan, specs, run_timeout, {})
        references: dict[int, list[FlowRun]] = {}
        for d, fan_in in sorted(self._fan_in(flows).items()):
            if fan_in > 1:  # one sender, same requests and emulated timelines: the incast reference
                ref = [FlowSpec(scenario.rails, r, topo.prefill, topo.decode, None, d, topo.routing, scenario.seed)
                       for r in range(scenario.rails)]
                references[d] = self._run_phase(scenario, plan, ref, run_timeout, {"concurrency_scale": topo.prefill})
        result = build_result(scenario, plan, self.layout, flows, references)
        if check_integrity and result.integrity["errors"]:
            exc = IntegrityError(
                f"{result.integrity['errors']} page(s) failed verification; first: {result.integrity['first_error']}")
            exc.result = result  # type: ignore[attr-defined]
            raise exc
        return result

    def _check_layout(self, scenario: Scenario) -> None:
        if (scenario.rails, scenario.topology.shape) != (self.layout.rails, self.layout.topology):
            raise KvFabricError(
                f"scenario {scenario.id} wants rails={scenario.rails} topology={scenario.topology.shape}, "
                f"but layout {self.layout.name} has rails={self.layout.rails} topology={self.layout.topology}")

    @staticmethod
    def _fan_in(flows: list[FlowRun]) -> dict[int, int]:
        """Decode instance -> how many prefill instances send to it."""
        senders: dict[int, set[int]] = {}
        for f in flows:
            senders.setdefault(f.spec.decode, set()).add(int(f.spec.prefill or 0))
        return {d: len(s) for d, s in senders.items()}

    def _run_phase(self, scenario: Scenario, plan: TransferPlan, specs: list[FlowSpec], run_timeout: float,
                   extra: Mapping[str, Any]) -> list[FlowRun]:
        """Set every non-empty flow up in parallel, start them at one instant, collect them all."""
        flows = []
        for spec in specs:
            sub = flow_plan(plan, spec)
            if not len(sub.plan.transfers):
                continue  # e.g. rail 1 of a TP1 prefill: no rank maps to it (reported as an idle rail)
            pair = self.layout.flow_pair(spec.prefill or 0, spec.decode, spec.rail)
            flows.append(FlowRun(spec, sub, AgentPair(pair, run_timeout, self.options)))
        if not flows:
            raise KvFabricError(f"scenario {scenario.id}: no flow has any transfer to carry")
        self._live.extend(f.agents for f in flows)
        self.last_flows = flows
        events: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        go, abort = threading.Event(), threading.Event()
        start: dict[str, int] = {}

        def work(i: int, f: FlowRun) -> None:
            try:
                opts = {**extra, "flow": f.spec.to_dict()}
                _, dsetup = f.agents.setup(scenario, f.sub.plan, opts)
                events.put(("setup", i, None))
                if not go.wait(SETUP_MARGIN_S * 2 + run_timeout) or abort.is_set():
                    return  # the controller gave up (and closes the agents)
                f.agents.launch(run_timeout, dsetup, start)
                f.pre, f.dec = f.agents.collect(run_timeout)
                events.put(("done", i, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the controller, which names the flow
                events.put(("error", i, exc))

        threads = [threading.Thread(target=work, args=(i, f), name=f"kvfabric-flow-{f.spec.name}", daemon=True)
                   for i, f in enumerate(flows)]
        ok = False
        try:
            for t in threads:
                t.start()
            setup_s = SETUP_MARGIN_S + max(f.sub.plan.src_region_bytes for f in flows) / FLOOR_BYTES_PER_S
            self._await(events, flows, "setup", time.monotonic() + setup_s + 5.0)
            lead_ns = int((BARRIER_LEAD_S + BARRIER_LEAD_PER_FLOW_S * len(flows)) * 1e9)
            start.update({"start_at_ns": time.monotonic_ns() + lead_ns} if self.shares_clock
                         else {"start_in_ns": lead_ns})
            go.set()
            self._await(events, flows, "done", time.monotonic() + run_timeout + 2 * RUN_MARGIN_S + 5.0)
            ok = True
        finally:
            if not ok:
                abort.set()
            go.set()
            if not ok:
                self.close()
            for t in threads:
                t.join(timeout=5.0)
            for f in flows:  # this phase's agents are done: their processes go now
                f.agents.close()
        return flows

    @staticmethod
    def _await(events: "queue.Queue[tuple[str, int, Any]]", flows: list[FlowRun], what: str, deadline: float) -> None:
        """Wait until every flow reported `what`; the first error is raised naming its flow."""
        waiting = set(range(len(flows)))
        while waiting:
            remaining = deadline - time.monotonic()
            try:
                kind, i, exc = events.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                names = ", ".join(flows[i].spec.name for i in sorted(waiting))
                raise TransportError(f"flow(s) {names} did not finish {what} in time") from None
            if kind == "error":
                f = flows[i]
                pair = f.agents.pair
                msg = f"flow {f.spec.name} ({pair.prefill.name} -> {pair.decode.name}): {exc}"
                raise (type(exc) if isinstance(exc, KvFabricError) else TransportError)(msg) from None
            if kind == what:
                waiting.discard(i)


def _measure(f: FlowRun) -> flowstats.FlowMeasure:
    pre = f.pre or {}
    m = {k: unpack_array(pre[k]) for k in _M_KEYS}
    return flowstats.FlowMeasure(f.spec.name, f.spec.rail, f.spec.prefill, f.spec.decode, f.sub.rows, f.sub.reqs,
                                 m, int(pre.get("t0_ns", 0)))


def build_result(scenario: Scenario, plan: TransferPlan, layout: Layout, flows: list[FlowRun],
                 references: Mapping[int, list[FlowRun]]) -> Result:
    """The run's Result: totals over every flow, plus per rail, per instance, per flow, fairness
    and incast (measure/flowstats.py)."""
    budget = scenario.slo.get("ttft_budget_ms") if scenario.slo else None
    pacing = scenario.pacing
    measures = [_measure(f) for f in flows]
    T, R = plan.transfers, plan.requests
    all_rows = np.ones(len(T), bool)
    s = flowstats.group_summary(plan, all_rows, np.ones(len(R), bool), measures, pacing, budget)
    topo = scenario.topology
    pre_of, dec_of = route(len(R), topo.prefill, topo.decode, topo.routing, scenario.seed)
    row_req = T["request"].astype(np.int64)
    rails = rail_of(T["src_rank"], scenario.rails)

    per_flow: list[dict[str, Any]] = []
    pages, errors, first = 0, 0, None
    cpu = {"sender": 0.0, "receiver": 0.0}
    spin = {"sender": 0.0, "receiver": 0.0}
    retrans: list[int] = []
    for f, fm in zip(flows, measures):
        pre, dec = f.pre or {}, f.dec or {}
        fs = stats.summarize(f.sub.plan.transfers, f.sub.plan.requests, fm.m, pacing, budget)
        integ = integrity_of(fs, dec)
        pages += integ["pages_checked"]
        errors += integ["errors"]
        if first is None and integ["first_error"]:
            first = f"flow {f.spec.name}: {integ['first_error']}"
        rt = (pre.get("stats") or {}).get("retransmits")
        if rt is not None:
            retrans.append(int(rt))
        for side, src in (("sender", pre), ("receiver", dec)):
            cpu[side] += float(src.get("cpu_s") or 0.0)
            spin[side] += float(src.get("spin_cpu_s") or 0.0)
        pair = f.agents.pair
        carried = f.sub.plan.requests["count"] > 0  # the flow's own requests (its instance's others move no bytes here)
        per_flow.append({"flow": f.spec.name, "prefill": f.spec.prefill, "decode": f.spec.decode, "rail": f.spec.rail,
                         "sender": pair.prefill.name, "receiver": pair.decode.name, **flowstats.brief(fs),
                         "requests": int(carried.sum()),
                         "requests_completed": int((carried & (np.asarray(fm.m["req_done_ns"]) > 0)).sum()),
                         "retransmits": rt, "pages_checked": integ["pages_checked"],
                         "errors": integ["errors"], "start_late_us": int(pre.get("start_late_ns", 0)) / 1e3,
                         "cpu_s": {"sender": pre.get("cpu_s"), "receiver": dec.get("cpu_s")}})

    def group(row_mask: np.ndarray, req_mask: np.ndarray, keep: list[str]) -> dict[str, Any]:
        g = flowstats.brief(flowstats.group_summary(plan, row_mask, req_mask, measures, pacing, budget))
        in_group = [e for e in per_flow if e["flow"] in keep]
        rts = [e["retransmits"] for e in in_group if e["retransmits"] is not None]
        return {**g, "flows": keep, "retransmits": sum(rts) if rts else None}

    per_rail = []
    for r in range(scenario.rails):
        rows = rails == r
        host = layout.prefill[0][r]
        entry: dict[str, Any] = {"rail": r, "interface": host.interface or "lo",
                                 "ranks": sorted({int(k) for k in np.unique(T["src_rank"][rows])})}
        if rows.any():
            reqs = np.zeros(len(R), bool)
            reqs[np.unique(row_req[rows])] = True
            entry.update(group(rows, reqs, [f.spec.name for f in flows if f.spec.rail == r]))
        else:
            entry.update(bytes=0, throughput_gbps=None, note="idle: no prefill rank maps to this rail "
                                                             f"(ranks {plan.src_ranks}, rails {scenario.rails})")
        per_rail.append(entry)
    per_instance: dict[str, list[dict[str, Any]]] = {"prefill": [], "decode": []}
    for side, of, count in (("prefill", pre_of, topo.prefill), ("decode", dec_of, topo.decode)):
        for i in range(count):
            reqs = of == i
            entry = {side: i, "requests_routed": int(reqs.sum())}
            if reqs.any():
                keep = [f.spec.name for f in flows if (f.spec.prefill if side == "prefill" else f.spec.decode) == i]
                entry.update(group(reqs[row_req], reqs, keep))
            per_instance[side].append(entry)

    incast = []
    for d, refs in sorted(references.items()):
        reqs = dec_of == d
        fanned = flowstats.group_summary(plan, reqs[row_req], reqs, measures, pacing, budget)
        ref = flowstats.group_summary(plan, reqs[row_req], reqs, [_measure(f) for f in refs], pacing, budget)
        fan_in = len({f.spec.prefill for f in flows if f.spec.decode == d})
        incast.append(flowstats.incast_entry(d, fan_in, fanned, ref))

    moved = s["bytes"]
    first_pre, first_dec = flows[0].pre or {}, flows[0].dec or {}
    return Result(
        scenario=scenario.id, transport=scenario.transport, model=scenario.model.id, gpu=scenario.gpu.id,
        pair=layout.name, pacing=pacing,
        retransmits=sum(retrans) if retrans else None,
        connect_ms=max(int((f.pre or {}).get("connect_ns", 0)) for f in flows) / 1e6,
        register_ms=None,
        cpu_s_per_gb={k: stats.cpu_s_per_gb(v, moved) for k, v in cpu.items()},
        spin_s_per_gb={k: stats.cpu_s_per_gb(v, moved) for k, v in spin.items()},
        integrity={"pages_checked": pages, "errors": errors, "first_error": first},
        data_path={"sender": first_pre.get("data_path", {}), "receiver": first_dec.get("data_path", {})},
        notifications=sum(int((f.dec or {}).get("notifications", 0)) for f in flows),
        rails=scenario.rails, topology={"prefill": topo.prefill, "decode": topo.decode, "routing": topo.routing},
        per_rail=per_rail, per_instance=per_instance, flows=per_flow,
        fairness_jain=flowstats.jain(e["throughput_gbps"] for e in per_flow),
        incast=incast or None, incast_penalty_ms=flowstats.worst_penalty(incast),
        flow_start_late_us=flowstats.start_late_us(int((f.pre or {}).get("start_late_ns", 0)) for f in flows),
        **s,
    )


def run_flows(scenario: Scenario, layout: Layout | None = None, timeout_s: float | None = None,
              options: Mapping[str, Any] | None = None) -> Result:
    """Run a multi-agent scenario on `layout` (default: every agent on loopback) and tear down."""
    if layout is None:
        from ..fabric.local import local_layout

        layout = local_layout(scenario.rails, scenario.topology.shape)
    with FlowRunner(layout, timeout_s, options) as runner:
        return runner.run(scenario)


__all__ = ["FlowRunner", "run_flows", "build_result", "flow_masks", "restrict"]
