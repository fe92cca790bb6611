from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.emulator.workload import PRESETS, preset, sample_requests
from pytest_kvfabric.errors import ProfileError, UnknownIdError
from pytest_kvfabric.core.scenario import Arrival, Distribution, Workload

K = 1024


def test_presets_cover_the_applications():
    assert set(PRESETS) == {"chat", "deep-research", "coding", "summarization", "multi-turn-chat"}
    for name, wl in PRESETS.items():
        isl, osl, _ = sample_requests(wl.__class__(**{**wl.__dict__, "requests": 500}), seed=1)
        if name == "chat":
            assert 96 <= np.median(isl) <= 160 and 96 <= np.median(osl) <= 160
        elif name == "deep-research":
            assert isl.min() >= 128 and isl.max() <= K and osl.min() >= 128 * K
        elif name == "multi-turn-chat":  # the conversation so far: a few K tokens in, chat-sized answers out
            assert isl.min() >= 512 and isl.max() <= 4 * K and 96 <= np.median(osl) <= 160
        elif name == "coding":
            assert isl.min() >= 128 * K and isl.max() <= 1024 * K and 128 <= osl.min() and osl.max() <= 4 * K
        else:
            assert isl.min() >= 128 * K and isl.max() <= 1024 * K and osl.max() <= K
        assert wl.preset == name


def test_unknown_preset_lists_valid():
    with pytest.raises(UnknownIdError, match="chat, coding, deep-research, multi-turn-chat, summarization"):
        preset("poetry")


def test_seeded_and_deterministic():
    wl = Workload(isl=Distribution(kind="uniform", low=10, high=1000), requests=50,
                  arrival=Arrival(kind="poisson", rate_per_s=10.0))
    a = sample_requests(wl, seed=7)
    b = sample_requests(wl, seed=7)
    c = sample_requests(wl, seed=8)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_distributions():
    n = 4000
    fixed = Workload(isl=Distribution.fixed(77), requests=n)
    assert set(sample_requests(fixed, 0)[0].tolist()) == {77}
    uni = Workload(isl=Distribution(kind="uniform", low=5, high=9), requests=n)
    assert set(sample_requests(uni, 0)[0].tolist()) == {5, 6, 7, 8, 9}
    norm = Workload(isl=Distribution(kind="normal", mean=100, std=50, low=80, high=120), requests=n)
    x = sample_requests(norm, 0)[0]
    assert x.min() == 80 and x.max() == 120 and abs(np.median(x) - 100) <= 3
    logn = Workload(isl=Distribution(kind="lognormal", mean=1000, std=0.5), requests=n)
    x = sample_requests(logn, 0)[0]
    assert abs(np.median(x) / 1000 - 1) < 0.05  # mean parameter = median
    assert np.std(np.log(x)) == pytest.approx(0.5, rel=0.05)


def test_poisson_arrivals_and_closed_loop():
    wl = Workload(requests=5000, arrival=Arrival(kind="poisson", rate_per_s=100.0))
    arr = sample_requests(wl, 3)[2]
    assert arr[0] == 0 and np.all(np.diff(arr) >= 0)
    assert np.mean(np.diff(arr)) == pytest.approx(1e7, rel=0.05)  # 10 ms mean gap
    closed = Workload(requests=10, arrival=Arrival(kind="closed", concurrency=4))
    assert not sample_requests(closed, 3)[2].any()


@pytest.mark.parametrize(
    "wl, field",
    [
        (Workload(isl=Distribution(kind="uniform", low=1)), "isl.high"),
        (Workload(osl=Distribution(kind="normal", mean=5)), "osl.std"),
        (Workload(isl=Distribution(kind="zipf")), "isl.kind"),
        (Workload(arrival=Arrival(kind="poisson")), "arrival.rate_per_s"),
        (Workload(requests=0), "requests"),
    ],
)
def test_bad_workload_names_field(wl, field):
    with pytest.raises(ProfileError) as err:
        sample_requests(wl, 0)
    assert err.value.field == field
