"""The gate's pure parts: threshold parsing (Hypothesis), verdict rules and calibration."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.limits import MAX_REGRESSION_PCT
from pytest_kvfabric.report.gate_metrics import BY_KEY, DEFAULT_THRESHOLDS, GATED, parse_thresholds
from pytest_kvfabric.report.repeats import median_metrics
from pytest_kvfabric.report.verdict import judge, too_few

KEYS = st.sampled_from(sorted(BY_KEY))
PCT = st.floats(min_value=0, max_value=MAX_REGRESSION_PCT, allow_nan=False, allow_infinity=False)


@given(st.dictionaries(KEYS, PCT, max_size=len(GATED)))
def test_keyed_thresholds_round_trip_and_defaults_fill_the_rest(given_pcts):
    text = ",".join(f"{k}={v!r}" for k, v in given_pcts.items())
    out = parse_thresholds(text)
    assert set(out) == set(BY_KEY)
    for k in BY_KEY:
        assert out[k] == given_pcts.get(k, DEFAULT_THRESHOLDS[k])


@given(PCT, st.dictionaries(KEYS, PCT, max_size=3))
def test_a_bare_number_sets_every_metric_and_keys_override_it(every, keyed):
    items = [repr(every)] + [f"{k}={v!r}" for k, v in keyed.items()]
    out = parse_thresholds(",".join(items))
    assert out == {k: keyed.get(k, every) for k in BY_KEY}


@given(KEYS, st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), st.just(math.inf), st.just(-math.inf)))
def test_nan_negative_and_infinite_thresholds_are_refused_naming_the_key(key, bad):
    with pytest.raises(ProfileError, match=f"--kv-max-regression: {key}: must be a finite number"):
        parse_thresholds(f"{key}={bad!r}")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=20).filter(
    lambda s: s not in BY_KEY), PCT)
def test_unknown_keys_are_refused_listing_the_valid_ones(key, pct):
    with pytest.raises(ProfileError, match="unknown metric; valid: throughput, latency_p50"):
        parse_thresholds(f"{key}={pct!r}", "--kv-max-regression")


@given(st.text(max_size=30))
def test_any_text_either_parses_or_raises_a_profile_error(text):
    try:
        out = parse_thresholds(text)
    except ProfileError as exc:
        assert str(exc).startswith("--kv-max-regression: ")
    else:
        assert set(out) == set(BY_KEY) and all(math.isfinite(v) and v >= 0 for v in out.values())


def test_every_gated_metric_has_a_direction_and_a_default():
    assert {m.key for m in GATED} >= {"throughput", "latency_p50", "latency_p99", "latency_p999", "exposed_p99",
                                      "ttft_met", "cpu_sender", "cpu_receiver", "retransmits", "post_lateness_p99"}
    assert BY_KEY["throughput"].higher_is_better and BY_KEY["ttft_met"].higher_is_better
    assert not BY_KEY["latency_p99"].higher_is_better and not BY_KEY["retransmits"].higher_is_better


SAMPLES = st.lists(st.floats(min_value=0.1, max_value=1e6, allow_nan=False), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(SAMPLES, KEYS, PCT)
def test_identical_samples_are_never_a_regression_or_an_improvement(xs, key, pct):
    j = judge(BY_KEY[key], xs, list(xs), pct, seed=1)
    assert j.status in ("unchanged", "undecided")


@settings(max_examples=60, deadline=None)
@given(SAMPLES, SAMPLES, KEYS, PCT, PCT)
def test_a_larger_threshold_never_turns_unchanged_into_regressed(a, b, key, t1, t2):
    lo_t, hi_t = sorted((t1, t2))
    strict, loose = judge(BY_KEY[key], a, b, lo_t, seed=3), judge(BY_KEY[key], a, b, hi_t, seed=3)
    if strict.status != "regressed":
        assert loose.status != "regressed"
    if strict.status == "unchanged":
        assert loose.status == "unchanged"


@pytest.mark.parametrize("n,m,decides", [(1, 1, False), (1, 2, False), (1, 3, True), (2, 2, False), (3, 3, False),
                                         (3, 4, False), (4, 4, True), (3, 5, True), (5, 5, True), (2, 7, False), (2, 8, True)])
def test_sample_counts_that_can_decide(n, m, decides):
    assert (too_few(n, m) is None) == decides


@pytest.mark.parametrize("n,cv", [(5, 0.05), (5, 0.15), (10, 0.15)])
def test_false_alarm_rate_on_identical_distributions_is_below_one_percent(n, cv):
    """Calibration: 400 pairs drawn from one distribution, threshold 5% (seeded, pure)."""
    rng = np.random.default_rng(20261206)
    alarms = sum(judge(BY_KEY["throughput"], 10 * rng.lognormal(0, cv, n), 10 * rng.lognormal(0, cv, n), 5.0,
                       seed=i).status == "regressed" for i in range(400))
    assert alarms <= 4


def test_a_40_percent_cut_is_detected_at_five_repeats_with_moderate_noise():
    rng = np.random.default_rng(5)
    found = sum(judge(BY_KEY["throughput"], 10 * rng.lognormal(0, 0.1, 5), 6 * rng.lognormal(0, 0.1, 5), 5.0,
                      seed=i).status == "regressed" for i in range(100))
    assert found >= 98


def test_median_metrics_takes_medians_of_figures_and_keeps_descriptions():
    runs = [{"throughput_gbps": v, "bytes": 100, "latency_us": {"p99": v * 10, "p50": None},
             "data_path": {"sender": {"transport": f"t{i}"}}} for i, v in enumerate((1.0, 5.0, 2.0))]
    m = median_metrics(runs)
    assert m["throughput_gbps"] == 2.0 and m["bytes"] == 100 and isinstance(m["bytes"], int)
    assert m["latency_us"] == {"p99": 20.0, "p50": None}
    assert m["data_path"] == {"sender": {"transport": "t2"}}  # the last repeat's, as it was


def test_readme_table_lists_every_gated_metric_with_its_direction_and_default():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text().split("**Gated metrics**", 1)[1]
    rows = {}
    for line in text.split("\n\n", 2)[1].splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for key in cells[0].replace("`", "").split(","):
            rows[key.strip()] = (cells[2], float(cells[3].rstrip("%")))
    assert rows == {m.key: ("higher" if m.higher_is_better else "lower", m.default_pct) for m in GATED}
