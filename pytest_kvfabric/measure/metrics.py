"""Every figure a case reports, declared once: name, unit, direction, how it is computed, and
where it shows (terminal table column, JUnit property, SLO key, baseline gate). Pure: no I/O.

The summary table (report/table.py), the JSON report (computed figures are written into a
case's metrics), JUnit properties (harness/case.py), SLO keys (measure/slo.py), the baseline
gate and `--kv-max-regression` (report/gate_metrics.py, report/baseline.py) all read a
MetricSet; a run's set is BUILTIN plus what plug-ins return from `pytest_kvfabric_metrics`
(hookspecs.py). Adding a figure the agents already measure is one Metric row here (or in a
plug-in's hook); a figure they do not yet measure is that row plus its line in stats.summarize.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np


def lookup(metrics: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a dotted path ('latency_us.p99') of a result's metrics, else None."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return None
        node = node[part]
    return node


def finite(value: Any) -> float | None:
    """A number as a finite float, else None (absent, null, NaN, a bool, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Metric:
    key: str  # stable name: --kv-max-regression latency_p99=10, the gate's JSON "metric"
    path: str | None  # where a result's metrics hold it ("latency_us.p99"); a computed one is written
    #                  there; None: computed whenever read, never stored
    name: str  # human name: "latency p99" (the label is name + unit)
    unit: str  # "µs", "Gb/s", "" for fractions and counts
    higher_is_better: bool | None  # direction; None: a condition (bool) or a plain count
    compute: Callable[[Mapping[str, Any]], Any] | None = None  # from a result's metrics; None: read at path
    gate_pct: float | None = None  # gated against a baseline with this default threshold (%); None: not gated
    # A baseline median below `floor` counts as `floor` when the change is made relative, so a
    # move from ~0 (no exposed time, no retransmits) is not an infinite percentage.
    floor: float = 0.0
    slo: str | None = None  # the SLO key users type (--kv-slo KEY=VALUE); None: no SLO
    slo_help: str = ""
    timing: bool = True  # an SLO on time or rate: not judged inside an emulated VM (lab/env.py)
    link_bound: bool = False  # an SLO a too-slow link can miss on its own (measure/capacity.py)
    column: str | None = None  # header of its column in the terminal summary; None: no column
    column_scale: float = 1.0  # the column shows value / scale (Gb/s -> GB/s: 8)
    junit: bool = True  # a JUnit property kv_<path with _ for .> (kv_<key> for an unstored one)

    @property
    def label(self) -> str:
        return f"{self.name} {self.unit}".rstrip()

    @property
    def default_pct(self) -> float | None:
        """The gate's default threshold (%), as report/gate_metrics.py has always called it."""
        return self.gate_pct

    @property
    def kind(self) -> str:
        """The SLO's sense: max (measured <= threshold), min (>=) or bool (must hold)."""
        return "bool" if self.higher_is_better is None else ("min" if self.higher_is_better else "max")

    @property
    def junit_name(self) -> str:
        return "kv_" + (self.path or self.key).replace(".", "_")

    def value(self, metrics: Mapping[str, Any] | None) -> Any:
        """This figure of a result's metrics (computed when it has a `compute`), None if not measured."""
        if metrics is None:
            return None
        if self.path is not None:
            stored = lookup(metrics, self.path)
            if stored is not None or self.compute is None:
                return stored
        try:
            return self.compute(metrics)  # type: ignore[misc]
        except (KeyError, TypeError, ValueError, ZeroDivisionError, ArithmeticError):
            return None  # a figure it needs was not measured

    def figure(self, metrics: Mapping[str, Any] | None) -> float | None:
        """value() as a finite float, else None (what tables and the gate compare)."""
        return finite(self.value(metrics))

    def worse_pct(self, base: Any, cur: Any) -> Any:
        """Signed relative change, positive = worse (numpy arrays or floats)."""
        denom = np.maximum(np.abs(base), self.floor)
        diff = (base - cur) if self.higher_is_better else (cur - base)
        return diff / denom * 100.0


class MetricSet:
    """A run's metrics, in the order tables list them; the views each consumer reads."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics: tuple[Metric, ...] = tuple(metrics)
        self.by_key: dict[str, Metric] = {}
        self.slo_keys: dict[str, Metric] = {}
        for m in self.metrics:
            if m.key in self.by_key:
                raise ValueError(f"metric {m.key!r} declared twice")
            if m.gate_pct is not None and (m.path is None or m.higher_is_better is None):
                raise ValueError(f"metric {m.key!r}: a gated metric needs a path and a direction")
            self.by_key[m.key] = m
            if m.slo:
                if m.slo in self.slo_keys:
                    raise ValueError(f"SLO key {m.slo!r} declared twice ({self.slo_keys[m.slo].key}, {m.key})")
                self.slo_keys[m.slo] = m
        self.gated: tuple[Metric, ...] = tuple(m for m in self.metrics if m.gate_pct is not None)
        self.gated_by_key: dict[str, Metric] = {m.key: m for m in self.gated}
        self.columns: tuple[Metric, ...] = tuple(m for m in self.metrics if m.column)
        self.timing_slo_keys = frozenset(k for k, m in self.slo_keys.items() if m.timing)
        self.link_bound_slo_keys = frozenset(k for k, m in self.slo_keys.items() if m.link_bound)

    def plus(self, extra: Iterable[Metric]) -> "MetricSet":
        return MetricSet((*self.metrics, *extra))

    def complete(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write every computed metric that has a path into a result's metrics (in place), so the
        JSON report, repeats and the baseline carry it; returns the same dict."""
        for m in self.metrics:
            if m.compute is not None and m.path is not None and lookup(metrics, m.path) is None:
                value = m.value(metrics)
                if value is not None:
                    node = metrics
                    *parents, leaf = m.path.split(".")
                    for part in parents:
                        node = node.setdefault(part, {})
                    node[leaf] = value
        return metrics

    def gate_figures(self, metrics: Mapping[str, Any] | None) -> dict[str, float]:
        """One repeat's gated figures {path: value} (what a report keeps per repeat)."""
        out = {}
        for m in self.gated:
            v = m.figure(metrics)
            if v is not None:
                out[m.path] = v  # type: ignore[index]
        return out

    def junit(self, metrics: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
        """(property name, value) for every measured JUnit metric."""
        out = []
        for m in self.metrics:
            if m.junit:
                v = m.value(metrics)
                if v is not None:
                    out.append((m.junit_name, v))
        return out


# ---------------------------------------------------------------- the built-in figures


def _worst_cpu(m: Mapping[str, Any], less_spin: bool) -> float | None:
    """The worst side's CPU per GB, less its busy-waiting (spin_s_per_gb, missing = 0) if asked."""
    values = []
    for side in ("sender", "receiver"):
        cpu = lookup(m, f"cpu_s_per_gb.{side}")
        if cpu is not None:
            values.append(cpu - ((lookup(m, f"spin_s_per_gb.{side}") or 0.0) if less_spin else 0.0))
    return max(values) if values else None


def _zero_copy(m: Mapping[str, Any]) -> bool | None:
    """True only if a side reported a zero-copy data path and no side reported copying."""
    sides = [lookup(m, "data_path.sender"), lookup(m, "data_path.receiver")]
    flags = [s.get("zero_copy") for s in sides if isinstance(s, Mapping) and s.get("zero_copy") is not None]
    return all(flags) if flags else None


def _family(prefix: str, group: str, name: str, unit: str, better: bool | None, keys: Iterable[str]) -> list[Metric]:
    """Figures reported only (JUnit), one per key of a group: latency_us.p90, ..."""
    return [Metric(f"{prefix}_{k}", f"{group}.{k}", f"{name} {k}", unit, better) for k in keys]


BUILTIN = MetricSet((
    Metric("throughput", "throughput_gbps", "throughput", "Gb/s", True, gate_pct=5.0, slo="min_throughput_gbps",
           slo_help="decimal Gb/s over the transfer window", link_bound=True, column="GB/s", column_scale=8),
    Metric("bytes", "bytes", "bytes moved", "B", None),
    Metric("transfers", "transfers", "writes completed", "", None),
    Metric("latency_p50", "latency_us.p50", "latency p50", "µs", False, gate_pct=10.0, slo="p50_latency_us",
           slo_help="median write latency, post to completion", link_bound=True, column="p50 µs"),
    Metric("latency_p90", "latency_us.p90", "latency p90", "µs", False),
    Metric("latency_p99", "latency_us.p99", "latency p99", "µs", False, gate_pct=10.0, slo="p99_latency_us",
           slo_help="p99 write latency, post to completion", link_bound=True, column="p99 µs"),
    Metric("latency_p999", "latency_us.p999", "latency p99.9", "µs", False, gate_pct=20.0),
    Metric("latency_max", "latency_us.max", "latency max", "µs", False),
    Metric("exposed_p50", "exposed_ms.p50", "exposed p50", "ms", False),
    Metric("exposed_p99", "exposed_ms.p99", "exposed p99", "ms", False, gate_pct=10.0, floor=1.0,
           slo="max_exposed_ms", link_bound=True, column="exposed p99 ms",
           slo_help="p99 transfer time after the emulated prefill end (what the network adds to TTFT)"),
    Metric("exposed_max", "exposed_ms.max", "exposed max", "ms", False),
    Metric("exposed_fraction_p99", "exposed_fraction.p99", "exposed/prefill p99", "", False, junit=False,
           slo="max_exposed_fraction", link_bound=True,
           slo_help="p99 of exposed transfer time as a fraction of the request's prefill time"),
    Metric("ttft_met", "ttft_met_fraction", "TTFT met fraction", "", True, gate_pct=2.0, floor=0.01, junit=False,
           slo="min_ttft_met_fraction", link_bound=True,
           slo_help="fraction of requests whose emulated TTFT is within ttft_budget_ms"),
    Metric("cpu_sender", "cpu_s_per_gb.sender", "CPU sender", "s/GB", False, gate_pct=10.0, floor=0.01),
    Metric("cpu_receiver", "cpu_s_per_gb.receiver", "CPU receiver", "s/GB", False, gate_pct=10.0, floor=0.01),
    Metric("spin_sender", "spin_s_per_gb.sender", "spin CPU sender", "s/GB", False),
    Metric("spin_receiver", "spin_s_per_gb.receiver", "spin CPU receiver", "s/GB", False),
    Metric("cpu_worst", None, "CPU s/GB (worst side)", "s/GB", False, lambda m: _worst_cpu(m, False), junit=False,
           slo="max_cpu_s_per_gb", column="CPU s/GB",
           slo_help="CPU seconds per decimal GB moved, worst of sender and receiver"),
    Metric("work_cpu_worst", None, "CPU s/GB without spin (worst side)", "s/GB", False,
           lambda m: _worst_cpu(m, True), junit=False, slo="max_work_cpu_s_per_gb",
           slo_help="as max_cpu_s_per_gb, less the CPU each side spent busy-waiting (spin_s_per_gb): "
                    "what moving and checking the bytes cost, steady under emulated pacing at any load"),
    Metric("retransmits", "retransmits", "TCP retransmits", "", False, gate_pct=50.0, floor=100.0, junit=False,
           slo="max_retransmits", timing=False, slo_help="TCP segments retransmitted during the run"),
    *_family("post_lateness", "post_lateness_us", "post lateness", "µs", False, ("p50",)),
    Metric("post_lateness_p99", "post_lateness_us.p99", "post lateness p99", "µs", False, gate_pct=25.0, floor=100.0,
           slo="max_post_lateness_us", link_bound=True,
           slo_help="p99 of how late a write was posted after its layer was ready"),
    *_family("post_lateness", "post_lateness_us", "post lateness", "µs", False, ("max",)),
    *_family("post_call", "post_call_us", "post() call", "µs", False, ("p50", "p99", "max")),
    # Multi-agent runs (rails, xPyD; measure/flowstats.py defines them); unmeasured for one pair.
    Metric("fairness", "fairness_jain", "fairness (Jain, flows)", "", True, slo="min_fairness_jain",
           slo_help="Jain's index over the flows' throughputs: 1 = equal shares, 1/n = one flow has all"),
    Metric("incast_penalty", "incast_penalty_ms", "incast penalty p99", "ms", False, slo="max_incast_penalty_ms",
           link_bound=True, slo_help="exposed p99 of a decode instance's requests with its N prefill instances "
                                     "sending at once, minus the same requests sent by one sender"),
    Metric("flow_start_late_max", "flow_start_late_us.max", "flow start late max", "µs", False),
    Metric("zero_copy", None, "zero-copy data path", "", None, _zero_copy, junit=False, slo="require_zero_copy",
           timing=False, slo_help="the kernel/NIC must report a zero-copy data path on every side that reports one"),
))
