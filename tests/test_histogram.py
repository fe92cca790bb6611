"""Compact log histograms (pure): a CDF exact to one bucket, merged across cases."""
from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.measure import histogram, stats


@pytest.mark.parametrize("seed", range(20))
def test_quantiles_are_exact_to_one_bucket(seed):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(mean=rng.uniform(0, 8), sigma=rng.uniform(0.05, 2.5), size=int(rng.integers(1, 3000)))
    h = histogram.log_histogram(values)
    assert h["n"] == len(values) and sum(h["counts"]) + h["zeros"] == len(values)
    width = 10 ** (1 / h["per_decade"])
    for q in (0.01, 0.5, 0.9, 0.99, 1.0):
        true = float(np.quantile(values, q, method="inverted_cdf"))
        got = histogram.quantile(h, q)
        assert true <= got * (1 + 1e-12) and got <= true * width * (1 + 1e-9), (q, true, got)


def test_cdf_is_monotone_and_ends_at_one():
    h = histogram.log_histogram([0, 0, 1.0, 2.0, 2.0, 50.0])
    x, f = histogram.cdf(h)
    assert h["zeros"] == 2
    assert f[0] == pytest.approx(2 / 6) and f[-1] == pytest.approx(1.0)
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(x) > 0)
    assert histogram.quantile(h, 0.2) == 0.0


def test_exact_edges_go_to_the_bucket_they_open():
    h = histogram.log_histogram([1.0, 10.0, 100.0])
    e = histogram.edges(h)
    idx = [int(np.searchsorted(e, v, side="right")) - 1 for v in (1.0, 10.0, 100.0)]
    assert [h["counts"][i] for i in idx] == [1, 1, 1]


def test_merge_adds_counts_over_different_ranges():
    a = histogram.log_histogram([1, 2, 3])
    b = histogram.log_histogram([1000, 2000, 0])
    m = histogram.merge([a, None, b])
    assert m["n"] == 6 and m["zeros"] == 1 and sum(m["counts"]) == 5
    assert histogram.quantile(m, 1.0) >= 2000
    assert histogram.merge([]) is None
    with pytest.raises(ValueError):
        histogram.merge([a, histogram.log_histogram([1], per_decade=10)])


def test_empty_is_none_and_histogram_is_small():
    assert histogram.log_histogram([]) is None
    h = histogram.log_histogram(np.random.default_rng(1).lognormal(4, 1, 1_000_000))
    assert len(h["counts"]) < 200  # a million samples in a couple of hundred integers at most


def test_strided_keeps_at_most_the_limit():
    s = stats.strided(np.arange(2500) / 7, limit=1000)
    assert s["stride"] == 3 and len(s["values"]) <= 1000 and s["values"][1] == pytest.approx(3 / 7, abs=1e-3)
    assert stats.strided(np.arange(5.0))["stride"] == 1
