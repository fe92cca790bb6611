"""SLO checks are pure: thresholds against a result dict."""
from __future__ import annotations

import pytest

from pytest_kvfabric.measure import slo
from pytest_kvfabric.errors import ProfileError

METRICS = {
    "throughput_gbps": 20.0,
    "latency_us": {"p50": 100.0, "p99": 900.0},
    "exposed_ms": {"p99": 3.0},
    "exposed_fraction": {"p99": 0.05},
    "cpu_s_per_gb": {"sender": 0.2, "receiver": 0.4},
    "spin_s_per_gb": {"sender": 0.0625, "receiver": 0.3125},  # (exact in binary: no rounding at the edge)
    "ttft_met_fraction": 0.9,
    "retransmits": 0,
    "data_path": {"sender": {"transport": "zerocopy", "zero_copy": False,
                             "description": "kernel copied 100% of MSG_ZEROCOPY sends"}},
}


@pytest.mark.parametrize(
    "key,threshold,passed",
    [
        ("p99_latency_us", 1000, True),
        ("p99_latency_us", 899, False),
        ("min_throughput_gbps", 20, True),
        ("min_throughput_gbps", 20.5, False),
        ("max_exposed_ms", 3, True),
        ("max_exposed_ms", 2.9, False),
        ("max_exposed_fraction", 0.04, False),
        ("max_cpu_s_per_gb", 0.4, True),  # worst side counts
        ("max_cpu_s_per_gb", 0.3, False),
        ("max_work_cpu_s_per_gb", 0.1375, True),  # worst side without spin: sender 0.1375, receiver 0.0875
        ("max_work_cpu_s_per_gb", 0.13, False),
        ("min_ttft_met_fraction", 0.95, False),
        ("max_retransmits", 0, True),
    ],
)
def test_thresholds(key, threshold, passed):
    (verdict,) = slo.check({key: threshold}, METRICS)
    assert verdict.passed is passed
    assert verdict.key == key


def test_zero_copy_required_fails_with_the_kernels_reason():
    (verdict,) = slo.check({"require_zero_copy": True}, METRICS)
    assert not verdict.passed
    assert "copied 100%" in verdict.note
    assert slo.check({"require_zero_copy": False}, METRICS) == []


def test_missing_measurement_fails_rather_than_passes():
    (verdict,) = slo.check({"max_post_lateness_us": 100}, METRICS)
    assert not verdict.passed and verdict.note == "not measured"


def test_parameters_are_not_verdicts():
    assert slo.check({"ttft_budget_ms": 100}, METRICS) == []


def test_failure_table_lists_metric_measured_threshold_verdict():
    text = slo.failure_table(slo.check({"p99_latency_us": 500, "min_throughput_gbps": 1}, METRICS))
    assert "metric" in text and "measured" in text and "threshold" in text and "verdict" in text
    assert "FAIL" in text and "pass" in text and "<= 500" in text


@pytest.mark.parametrize(
    "items,message",
    [
        (["bogus=1"], "unknown SLO key"),
        (["p99_latency_us"], "expected KEY=VALUE"),
        (["p99_latency_us=fast"], "expected a number"),
        (["p99_latency_us=-1"], "must be >= 0"),
        (["require_zero_copy=maybe"], "expected true/false"),
    ],
)
def test_bad_assignments_name_the_key_and_reason(items, message):
    with pytest.raises(ProfileError, match=message):
        slo.parse_assignments(items)


def test_assignments_are_typed():
    assert slo.parse_assignments(["p99_latency_us=5", "require_zero_copy=yes"]) == {
        "p99_latency_us": 5.0, "require_zero_copy": True}
