"""Repeats of one case (pure): the median figures a case reports, and each repeat's gated figures.

A case run N times (`--kv-repeat N`) reports, under "metrics", the median of every numeric
figure over its repeats (so SLOs and tables judge the typical run, not the luckiest or the
unluckiest), and under "repeats" each repeat's gated figures (report/gate_metrics.py), which
the baseline gate resamples. Counts stay integers when every repeat agrees (bytes, transfers).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from .gate_metrics import figures

# Subtrees describing what happened rather than how fast: taken from the last repeat as they are.
DESCRIPTIVE = ("data_path", "integrity")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _median(values: Sequence[Any]) -> Any:
    nums = [v for v in values if _is_number(v)]
    if not nums:
        return values[-1]
    if all(isinstance(v, int) for v in nums) and len(set(nums)) == 1:
        return nums[0]
    return float(np.median(np.asarray(nums, dtype=np.float64)))


def _merge(nodes: Sequence[Any]) -> Any:
    last = nodes[-1]
    if isinstance(last, Mapping):
        keys = dict.fromkeys(k for n in nodes if isinstance(n, Mapping) for k in n)
        return {k: _merge([n.get(k) for n in nodes if isinstance(n, Mapping)]) for k in keys}
    if _is_number(last) or any(_is_number(n) for n in nodes):
        return _median(nodes)
    return last


def median_metrics(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One metrics dict from the repeats' metrics: medians of the numeric figures."""
    if not runs:
        raise ValueError("median_metrics needs at least one run")
    if len(runs) == 1:
        return dict(runs[0])
    out = {}
    for key in dict.fromkeys(k for r in runs for k in r):
        nodes = [r.get(key) for r in runs]
        out[key] = nodes[-1] if key in DESCRIPTIVE else _merge(nodes)
    return out


def repeat_figures(runs: Sequence[Mapping[str, Any]], metrics: Any = None) -> list[dict[str, float]]:
    """Each repeat's gated figures, in the order they ran (`metrics`: the run's MetricSet)."""
    return [figures(r, metrics) for r in runs]


def spread(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(median, low, high) of a 95% bootstrap interval of the median, for tables; None if empty."""
    from .verdict import median_interval

    vals = [float(v) for v in values if _is_number(v)]
    if not vals:
        return None
    return median_interval(vals)
