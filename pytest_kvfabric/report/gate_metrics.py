"""The baseline gate's view of the metric declarations (measure/metrics.py): which metrics it
judges, their directions and default thresholds, and the `--kv-max-regression` /
`kvfabric compare --max-regression` parser. A gated metric is one Metric row with a gate_pct.
Pure: no I/O.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from ..errors import ProfileError
from ..core.limits import MAX_REGRESSION_PCT
from ..measure.metrics import BUILTIN, Metric, MetricSet, finite
from ..measure.metrics import lookup as _raw

GatedMetric = Metric  # a Metric whose gate_pct is set
GATED: tuple[Metric, ...] = BUILTIN.gated
BY_KEY: dict[str, Metric] = BUILTIN.gated_by_key
DEFAULT_THRESHOLDS: dict[str, float] = {m.key: m.gate_pct for m in GATED}  # type: ignore[misc]


def lookup(metrics: Mapping[str, Any] | None, path: str) -> float | None:
    """The figure at a dotted path, as a finite float, else None (absent, null, NaN)."""
    return finite(_raw(metrics, path))


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


def parse_thresholds(text: str | Iterable[str] | None, source: str = "--kv-max-regression",
                     metrics: MetricSet | None = None) -> dict[str, float]:
    """'5' (every metric), 'throughput=5,latency_p99=10', or both ('5,latency_p99=10': the
    keyed ones override the bare number) -> {metric key: percent}, defaults filled in.

    NaN, infinities, negative numbers, empty items and unknown keys are errors naming the key."""
    items: list[str] = []
    for chunk in ([text] if isinstance(text, str) else list(text or ())):
        items += [i.strip() for i in str(chunk).split(",")]
    by_key = (metrics or BUILTIN).gated_by_key
    out = {k: m.gate_pct for k, m in by_key.items()}
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
        if key not in by_key:
            raise ProfileError(source, key or "(empty key)",
                               f"unknown metric; valid: {', '.join(by_key)} (or a bare percentage for all)")
        keyed[key] = _pct(value.strip(), source, key)
    out.update(keyed)
    return out


def figures(metrics: Mapping[str, Any] | None, metric_set: MetricSet | None = None) -> dict[str, float]:
    """One repeat's gated figures {path: value} (what the report keeps per repeat)."""
    return (metric_set or BUILTIN).gate_figures(metrics)
