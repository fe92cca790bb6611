"""Statistical verdict on one metric: improved / unchanged / regressed / undecided (pure, numpy).

Method: a percentile bootstrap of the relative change of medians. Both sides are resampled
with replacement (RESAMPLES times, vectorised, seeded so a verdict is reproducible), each
resample's median is taken, and the change `(current - baseline) / max(|baseline|, floor)`
(sign flipped for higher-is-better metrics, so positive = worse) gives a two-sided
CONFIDENCE interval [lo, hi]. With threshold t (percent):

- regressed:  lo > t   (even the most favourable reading is a regression beyond t)
- improved:   hi < -t
- unchanged:  hi <= t  (whatever it is, it is not a regression beyond t)
- undecided:  otherwise (the interval straddles t), or too few samples to reach CONFIDENCE at all
              (too_few: 1 vs 1, 3 vs 3...). A single-sample side borrows the other side's spread.

Why this and not a rank test (Mann-Whitney, as Google Benchmark's compare.py): a rank test
answers "do the distributions differ?", not "by how much?", so it flags a significant 0.5%
shift and cannot compare with a threshold; the interval gives the size with its uncertainty,
and "undecided" falls out of it when the data cannot decide. No SciPy needed.

False alarms: with no true change, "regressed" needs the lower end of a 95% interval above
t, which the one-sided 2.5% bound caps even at a true change of exactly t; at 0 it is far
rarer. At n=5 per side the bootstrap interval of a median is about the sample range, so a
false alarm needs the two sides fully separated AND t apart (chance 1/252 before the margin).
benchmarks/bench_gate.py measures the rate on real runs: there, identical sessions a minute apart
on a busy shared host differ by far more than the repeats inside one session (the repeats share
their session's conditions), so false alarms come from the environment moving, not from this test.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .gate_metrics import GatedMetric

RESAMPLES = 4000
CONFIDENCE = 0.95
MIN_SAMPLES = 3  # at least one side needs this many repeats to have a noise band
STATUSES = ("improved", "unchanged", "regressed", "undecided")


@dataclass(frozen=True)
class Judgement:
    status: str
    change_pct: float | None  # point estimate, positive = worse
    ci_pct: tuple[float, float] | None  # interval of change_pct
    base_median: float
    base_ci: tuple[float, float]
    cur_median: float
    cur_ci: tuple[float, float]
    n_base: int
    n_cur: int
    note: str = ""


def seed_for(*parts: str) -> int:
    """A stable seed per case and metric: the same data always gets the same verdict."""
    return zlib.crc32("/".join(parts).encode())


def _boot_medians(x: np.ndarray, rng: np.random.Generator, shape_from: np.ndarray | None = None) -> np.ndarray:
    """Medians of RESAMPLES resamples of x. A single sample borrows the other side's spread
    (`shape_from` scaled to that sample: multiplicative noise assumed equal on both sides), as
    one draw per resample, because a single run carries no noise band of its own."""
    if x.size == 1:
        if shape_from is None or shape_from.size < 2 or np.median(shape_from) == 0:
            return np.full(RESAMPLES, x[0])
        scaled = shape_from * (x[0] / np.median(shape_from))
        return scaled[rng.integers(0, scaled.size, size=RESAMPLES)]
    idx = rng.integers(0, x.size, size=(RESAMPLES, x.size))
    return np.median(x[idx], axis=1)


def _interval(values: np.ndarray) -> tuple[float, float]:
    alpha = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(values, [alpha, 100 - alpha])
    return float(lo), float(hi)


def too_few(n_base: int, n_cur: int) -> str | None:
    """Why these sample counts cannot decide, or None. Two sides of n and m samples can be
    ordered C(n+m, n) ways; when that is under 1/alpha (alpha = 2.5%, one side of the 95%
    interval), even total separation is not significant (3 vs 3: 1 in 20), so no verdict.
    One side with a single sample borrows the other side's spread (it needs >= MIN_SAMPLES)."""
    lo, hi = sorted((n_base, n_cur))
    if lo == 1:
        return None if hi >= MIN_SAMPLES else f"too few samples ({n_base} vs {n_cur}; a single-sample side needs {MIN_SAMPLES} on the other)"
    if math.comb(lo + hi, lo) * (1 - CONFIDENCE) / 2 < 1:
        return f"too few samples ({n_base} vs {n_cur}) for {CONFIDENCE:.0%} confidence; use 5 repeats or more"
    return None


def judge(metric: GatedMetric, base: Sequence[float], cur: Sequence[float], threshold_pct: float,
          seed: int = 0) -> Judgement:
    """The verdict for one metric of one case from every sample on both sides."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(cur, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("judge needs at least one sample on each side")
    rng = np.random.default_rng(seed)
    ma, mb = _boot_medians(a, rng, b), _boot_medians(b, rng, a)
    med_a, med_b = float(np.median(a)), float(np.median(b))
    common = dict(base_median=med_a, base_ci=_interval(ma), cur_median=med_b, cur_ci=_interval(mb),
                  n_base=int(a.size), n_cur=int(b.size))
    if metric.floor <= 0 and med_a == 0:
        # No relative change from zero: equal zeros are unchanged, anything else undecided.
        same = bool(np.all(a == 0) and np.all(b == 0))
        return Judgement("unchanged" if same else "undecided", 0.0 if same else None, None,
                         note="" if same else "baseline median is 0: no relative change", **common)
    point = float(metric.worse_pct(med_a, med_b))
    few = too_few(a.size, b.size)
    if few:
        return Judgement("undecided", point, None, note=few, **common)
    lo, hi = _interval(metric.worse_pct(ma, mb))
    if lo > threshold_pct:
        status = "regressed"
    elif hi < -threshold_pct:
        status = "improved"
    elif hi <= threshold_pct:
        status = "unchanged"
    else:
        status = "undecided"
    note = ""
    if min(a.size, b.size) == 1:
        side = "baseline" if a.size == 1 else "current run"
        note = f"the {side} has one sample: no noise band of its own (the other side's spread is assumed)"
    return Judgement(status, point, (lo, hi), note=note, **common)


def median_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median of the samples and its bootstrap CONFIDENCE interval."""
    x = np.asarray(values, dtype=np.float64)
    lo, hi = _interval(_boot_medians(x, np.random.default_rng(seed)))
    return float(np.median(x)), lo, hi
