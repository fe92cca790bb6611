"""Figures of a multi-agent run (rails, xPyD instances): flows merged into totals and groups.

Pure: arrays in, numbers out. Each flow's sender measured on its own monotonic clock, from its
own t0, and every flow's t0 is the run's common start (run/flows.py's barrier), so a flow's
times re-based to its t0 line up with every other flow's. Where the agents share a clock
(local, netns) the t0s are one instant; across hosts they agree to within the barrier's skew
(a control message's one-way time), which the report carries as flow_start_late_us.

Definitions (the README's multi-agent section repeats them):
- totals: the plan's rows, each measured by the flow that carried it; a request is complete
  when every flow holding rows of it completed it, at the latest of their completion times.
- per rail / per instance: the same over the rows of that rail, or the requests of that
  prefill / decode instance.
- fairness: Jain's index over the flows' throughputs x_i (bytes moved / the flow's own
  transfer window): (sum x)^2 / (n * sum x^2); 1 = equal shares, 1/n = one flow has it all.
  It judges the network's sharing where the flows offer equal load (balanced routing, or
  pacing none); under emulated pacing with uneven routing it reflects the routing too.
- incast penalty of a decode instance with fan-in N > 1: exposed p99 (ms) of the requests
  routed to it, measured with its N prefill instances sending at once, minus the exposed p99
  of the same requests sent by ONE sender agent that emulates the same N prefill GPUs'
  timelines (same arrivals, same layer ready times, same total load), run right after on the
  same hosts. The run's incast_penalty_ms is the largest over decode instances.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..emulator.flows import restrict
from ..emulator.plantypes import TransferPlan
from .stats import percentiles, summarize

BASE_NS = 1 << 40  # re-based times start here (0 keeps meaning "never happened")
ROW_KEYS = ("post_ns", "done_ns")
REQ_KEYS = ("req_arrival_ns", "req_start_ns", "req_done_ns")


@dataclass
class FlowMeasure:
    """One flow's raw measurements and where its rows sit in the full plan."""

    name: str  # "p0d1r2"
    rail: int
    prefill: int | None  # None: the one-sender incast reference
    decode: int
    rows: np.ndarray  # full-plan row index of each of the flow's rows
    reqs: np.ndarray  # full-plan request index of each of the flow's requests
    m: Mapping[str, np.ndarray]  # post_ns, done_ns, req_*_ns (absolute, the sender's clock), post_call_ns
    t0_ns: int  # the sender's start (the common start on its clock)
    figures: dict[str, Any] = field(default_factory=dict)  # its own summary, retransmits, CPU...


def rebase(a: np.ndarray, t0_ns: int) -> np.ndarray:
    """Times relative to the flow's start, moved to BASE_NS; 0 (never) stays 0."""
    a = np.asarray(a, np.int64)
    return np.where(a > 0, a - int(t0_ns) + BASE_NS, 0)


def merge(rows: np.ndarray, reqs: np.ndarray, flows: Iterable[FlowMeasure]) -> dict[str, np.ndarray]:
    """The measurements of the plan made of full-plan `rows` and `reqs` (both ascending), from
    the flows that carried them (rows of other flows are ignored)."""
    n, k = len(rows), len(reqs)
    m: dict[str, np.ndarray] = {key: np.zeros(n, np.int64) for key in ROW_KEYS}
    arrival = np.full(k, np.iinfo(np.int64).max, np.int64)
    start = arrival.copy()
    done = np.zeros(k, np.int64)
    missing = np.zeros(k, bool)
    calls = []
    for f in flows:
        pos, hit = _positions(rows, f.rows)
        if not hit.any():
            continue
        for key in ROW_KEYS:
            m[key][pos[hit]] = rebase(np.asarray(f.m[key])[hit], f.t0_ns)
        rpos, rhit = _positions(reqs, f.reqs)
        a = rebase(np.asarray(f.m["req_arrival_ns"])[rhit], f.t0_ns)
        s = rebase(np.asarray(f.m["req_start_ns"])[rhit], f.t0_ns)
        d = rebase(np.asarray(f.m["req_done_ns"])[rhit], f.t0_ns)
        at = rpos[rhit]
        np.minimum.at(arrival, at, np.where(a > 0, a, arrival[at]))
        np.minimum.at(start, at, np.where(s > 0, s, start[at]))
        np.maximum.at(done, at, d)
        missing[at] |= d <= 0
        calls.append(np.asarray(f.m.get("post_call_ns", ()), np.int64))
    big = np.iinfo(np.int64).max
    m["req_arrival_ns"] = np.where(arrival == big, 0, arrival)
    m["req_start_ns"] = np.where(start == big, 0, start)
    m["req_done_ns"] = np.where(missing, 0, done)
    m["post_call_ns"] = np.concatenate(calls) if calls else np.zeros(0, np.int64)
    return m


def _positions(sorted_index: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each wanted index in sorted_index, whether it is there)."""
    pos = np.searchsorted(sorted_index, wanted)
    pos = np.minimum(pos, max(len(sorted_index) - 1, 0))
    hit = (sorted_index[pos] == wanted) if len(sorted_index) else np.zeros(len(wanted), bool)
    return pos, hit


def group_summary(plan: TransferPlan, row_mask: np.ndarray, req_mask: np.ndarray, flows: Sequence[FlowMeasure],
                  pacing: str, ttft_budget_ms: float | None = None) -> dict[str, Any]:
    """stats.summarize over the rows and requests of a group (all, one rail, one instance)."""
    sub = restrict(plan, row_mask, req_mask)
    m = merge(sub.rows, sub.reqs, flows)
    return summarize(sub.plan.transfers, sub.plan.requests, m, pacing, ttft_budget_ms)


def brief(s: Mapping[str, Any]) -> dict[str, Any]:
    """The figures a per-rail / per-instance / per-flow entry keeps of a summary."""
    return {
        "bytes": s["bytes"],
        "requests": s["requests"],
        "requests_completed": s["requests_completed"],
        "duration_s": s["duration_s"],
        "throughput_gbps": s["throughput_gbps"],
        "latency_us": {k: s["latency_us"].get(k) for k in ("p50", "p99", "max")},
        "exposed_ms": dict(s["exposed_ms"]),
        "post_lateness_us": dict(s["post_lateness_us"]),
    }


def jain(values: Iterable[float | None]) -> float | None:
    """Jain's fairness index of the positive values, None with fewer than two."""
    x = np.asarray([v for v in values if v is not None and v > 0], np.float64)
    if len(x) < 2:
        return None
    return float(x.sum() ** 2 / (len(x) * (x ** 2).sum()))


def incast_entry(decode: int, fan_in: int, fanned: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """One decode instance's incast figures from its fan-in and one-sender summaries."""
    out: dict[str, Any] = {"decode": decode, "fan_in": fan_in}
    for q in ("p50", "p99"):
        a, b = fanned["exposed_ms"].get(q), reference["exposed_ms"].get(q)
        out[f"exposed_{q}_ms"] = a
        out[f"reference_exposed_{q}_ms"] = b
        out[f"penalty_{q}_ms"] = None if a is None or b is None else a - b
    a, b = out["exposed_p99_ms"], out["reference_exposed_p99_ms"]
    out["penalty_ratio_p99"] = None if a is None or not b else a / b
    out["reference_throughput_gbps"] = reference["throughput_gbps"]
    out["throughput_gbps"] = fanned["throughput_gbps"]
    return out


def worst_penalty(entries: Sequence[Mapping[str, Any]]) -> float | None:
    vals = [e["penalty_p99_ms"] for e in entries if e.get("penalty_p99_ms") is not None]
    return max(vals) if vals else None


def start_late_us(late_ns: Iterable[int]) -> dict[str, float | None]:
    """How late the flows' pacing loops began after the common start (µs): the barrier's skew."""
    return percentiles(np.asarray(list(late_ns), np.float64) / 1e3, ("p50", "max"))
