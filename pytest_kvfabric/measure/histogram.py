"""Compact log-spaced histograms (pure): a distribution kept in a few dozen integers.

A report keeps one per case so that a latency CDF can be drawn later, exact to a bucket,
without storing every sample. Bucket k holds values in [10**(k/per_decade), 10**((k+1)/per_decade));
with 20 buckets per decade a bucket is 12.2% wide. Only the buckets from the first to the
last non-empty one are stored; values <= 0 are counted apart (`zeros`).

    {"per_decade": 20, "first": 34, "counts": [3, 0, 12, ...], "zeros": 0, "n": 15}
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

PER_DECADE = 20


def log_histogram(values: Iterable[float] | np.ndarray, per_decade: int = PER_DECADE) -> dict[str, Any] | None:
    """The histogram of `values`; None when there are none."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    pos = a[a > 0]
    zeros = int(a.size - pos.size)
    if pos.size == 0:
        return {"per_decade": per_decade, "first": 0, "counts": [], "zeros": zeros, "n": int(a.size)}
    k = np.floor(np.log10(pos) * per_decade).astype(np.int64)
    # Float rounding can put an exact edge one bucket low; move it up so edges are inclusive below.
    k += pos >= 10.0 ** ((k + 1) / per_decade)
    first = int(k.min())
    counts = np.bincount(k - first)
    return {"per_decade": per_decade, "first": first, "counts": counts.tolist(), "zeros": zeros, "n": int(a.size)}


def edges(hist: Mapping[str, Any]) -> np.ndarray:
    """Bucket edges: len(counts) + 1 values."""
    pd, first = int(hist["per_decade"]), int(hist["first"])
    return 10.0 ** (np.arange(first, first + len(hist["counts"]) + 1) / pd)


def cdf(hist: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(x, F): F[i] is the fraction of samples below x[i] (x = upper bucket edges, starting
    with the lower edge of the first bucket at the zeros' fraction)."""
    n = int(hist["n"])
    counts = np.asarray(hist["counts"], np.float64)
    if n == 0 or counts.size == 0:
        return np.zeros(0), np.zeros(0)
    f = (int(hist.get("zeros", 0)) + np.concatenate([[0.0], np.cumsum(counts)])) / n
    return edges(hist), f


def quantile(hist: Mapping[str, Any], q: float) -> float | None:
    """Upper edge of the bucket holding the q-quantile (0 < q <= 1): the true value is at most
    one bucket (12%) below it. 0.0 when it falls among the zeros."""
    n = int(hist["n"])
    if n == 0:
        return None
    rank = q * n
    if rank <= int(hist.get("zeros", 0)):
        return 0.0
    x, f = cdf(hist)
    i = int(np.searchsorted(f * n, rank - 1e-9, side="left"))
    return float(x[min(i, len(x) - 1)])


def merge(hists: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """One histogram of several (same per_decade), e.g. all cases of one transport."""
    hs = [h for h in hists if h]
    if not hs:
        return None
    pd = int(hs[0]["per_decade"])
    if any(int(h["per_decade"]) != pd for h in hs):
        raise ValueError("histograms with different per_decade cannot be merged")
    with_counts = [h for h in hs if h["counts"]]
    zeros = sum(int(h.get("zeros", 0)) for h in hs)
    n = sum(int(h["n"]) for h in hs)
    if not with_counts:
        return {"per_decade": pd, "first": 0, "counts": [], "zeros": zeros, "n": n}
    lo = min(int(h["first"]) for h in with_counts)
    hi = max(int(h["first"]) + len(h["counts"]) for h in with_counts)
    out = np.zeros(hi - lo, np.int64)
    for h in with_counts:
        s = int(h["first"]) - lo
        out[s:s + len(h["counts"])] += np.asarray(h["counts"], np.int64)
    return {"per_decade": pd, "first": lo, "counts": out.tolist(), "zeros": zeros, "n": n}
