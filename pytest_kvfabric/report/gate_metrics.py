"""Every metric the baseline gate judges, declared once with its direction and default threshold.

The gate (report/gate.py), the `--kv-max-regression` / `kvfabric compare --max-regression`
parser, the README table and the verdict tables all read GATED; adding a gated metric is one row.
Pure: no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import ProfileError
from ..core.limits import MAX_REGRESSION_PCT


@dataclass(frozen=True)
class GatedMetric:
    key: str  # the threshold key users type: --kv-max-regression latency_p99=10
    path: str  # where a result's metrics hold it: "latency_us.p99"
    label: str  # column text, with its unit
    higher_is_better: bool
    default_pct: float  # allowed regression in percent when the user sets none
    # A baseline median below `floor` counts as `floor` when the change is made relative, so a
    # move from ~0 (no exposed time, no retransmits) is not an infinite percentage: the smallest
    # absolute change that can count is threshold% x floor.
    floor: float = 0.0
    # A timing: its value means nothing when a side ran under software emulation (the lab's TCG).
    timing: bool = True

    def worse_pct(self, base: Any, cur: Any) -> Any:
        """Signed relative change, positive = worse (numpy arrays or floats)."""
        denom = np.maximum(np.abs(base), self.floor)
        diff = (base - cur) if self.higher_is_better else (cur - base)
        return diff / denom * 100.0


GATED: tuple[GatedMetric, ...] = (
    GatedMetric("throughput", "throughput_gbps", "throughput Gb/s", True, 5.0),
    GatedMetric("latency_p50", "latency_us.p50", "latency p50 µs", False, 10.0),
    GatedMetric("latency_p99", "latency_us.p99", "latency p99 µs", False, 10.0),
    GatedMetric("latency_p999", "latency_us.p999", "latency p99.9 µs", False, 20.0),
    GatedMetric("exposed_p99", "exposed_ms.p99", "exposed p99 ms", False, 10.0, floor=1.0),
    GatedMetric("ttft_met", "ttft_met_fraction", "TTFT-met fraction", True, 2.0, floor=0.01),
    GatedMetric("cpu_sender", "cpu_s_per_gb.sender", "work CPU s/GB sender", False, 10.0, floor=0.01),
    GatedMetric("cpu_receiver", "cpu_s_per_gb.receiver", "work CPU s/GB receiver", False, 10.0, floor=0.01),
    GatedMetric("retransmits", "retransmits", "TCP retransmits", False, 50.0, floor=100.0, timing=False),
    GatedMetric("post_lateness_p99", "post_lateness_us.p99", "post lateness p99 µs", False, 25.0, floor=100.0),
)
BY_KEY: dict[str, GatedMetric] = {m.key: m for m in GATED}
DEFAULT_THRESHOLDS: dict[str, float] = {m.key: m.default_pct for m in GATED}


def lookup(metrics: Mapping[str, Any] | None, path: str) -> float | None:
    """The figure at a dotted path, as a finite float, else None (absent, null, NaN)."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    value = float(node)
    return value if math.isfinite(value) else None


def _pct(text: str, source: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProfileError(source, field, f"expected a percentage (a number >= 0), got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ProfileError(source, field, f"must be a finite number >= 0, got {text}")
    if value > MAX_REGRESSION_PCT:
        raise ProfileError(source, field, f"must be <= {MAX_REGRESSION_PCT:g} (above it no gate is left), got {text}")
    return value


def parse_thresholds(text: str | Iterable[str] | None, source: str = "--kv-max-regression") -> dict[str, float]:
    """'5' (every metric), 'throughput=5,latency_p99=10', or both ('5,latency_p99=10': the
    keyed ones override the bare number) -> {metric key: percent}, defaults filled in.

    NaN, infinities, negative numbers, empty items and unknown keys are errors naming the key."""
    items: list[str] = []
    for chunk in ([text] if isinstance(text, str) else list(text or ())):
        items += [i.strip() for i in str(chunk).split(",")]
    out = dict(DEFAULT_THRESHOLDS)
    keyed: dict[str, float] = {}
    for item in items:
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            every = _pct(key, source, "(every metric)")
            out = {k: every for k in out}
            continue
        if key not in BY_KEY:
            raise ProfileError(source, key or "(empty key)",
                               f"unknown metric; valid: {', '.join(BY_KEY)} (or a bare percentage for all)")
        keyed[key] = _pct(value.strip(), source, key)
    out.update(keyed)
    return out


def figures(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """One repeat's gated figures {path: value} (what the report keeps per repeat)."""
    out = {}
    for m in GATED:
        v = lookup(metrics, m.path)
        if v is not None:
            out[m.path] = v
    return out
