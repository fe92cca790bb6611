"""Stats (pure): percentiles, rates and the per-request figures of a run."""
from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.measure import stats
from pytest_kvfabric.emulator.plan import REQUEST_DTYPE, TRANSFER_DTYPE
from pytest_kvfabric.measure.result import Result


def test_percentiles_known_values():
    p = stats.percentiles(np.arange(1, 101))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p90"] == pytest.approx(90.1)
    assert p["p99"] == pytest.approx(99.01)
    assert p["max"] == 100
    assert p["p50"] <= p["p90"] <= p["p99"] <= p["p999"] <= p["max"]


def test_percentiles_empty_is_none():
    assert stats.percentiles([], ("p50", "max")) == {"p50": None, "max": None}


def test_rates_are_decimal():
    assert stats.rate_gbps(125_000_000, 1.0) == pytest.approx(1.0)  # 1e9 bits in 1 s
    assert stats.rate_GBps(2_000_000_000, 2.0) == pytest.approx(1.0)
    assert stats.rate_gbps(10, 0.0) is None
    assert stats.cpu_s_per_gb(0.5, 2_000_000_000) == pytest.approx(0.25)
    assert stats.cpu_s_per_gb(0.5, 0) is None


def _two_requests():
    t = np.zeros(4, TRANSFER_DTYPE)
    t["request"] = [0, 0, 1, 1]
    t["layer"] = [0, 1, 0, 1]
    t["nbytes"] = 1_000_000
    t["ready_ns"] = [1_000_000, 2_000_000, 1_000_000, 2_000_000]
    r = np.zeros(2, REQUEST_DTYPE)
    r["request"] = [0, 1]
    r["first"] = [0, 2]
    r["count"] = [2, 2]
    r["prefill_ns"] = 2_000_000
    r["decode_step_ns"] = [10_000_000, 20_000_000]
    r["nbytes"] = 2_000_000
    base = 1_000_000_000
    m = {
        "req_arrival_ns": np.array([base, base], np.int64),
        "req_start_ns": np.array([base, base + 2_000_000], np.int64),  # request 1 queued 2 ms
        # posts: 10 µs late, 20 µs late, on time, 40 µs late
        "post_ns": np.array([base + 1_010_000, base + 2_020_000, base + 3_000_000, base + 4_040_000], np.int64),
        # completions 0.5 ms after each post; the last request lands 3 ms after its prefill end
        "done_ns": np.array([base + 1_510_000, base + 2_520_000, base + 3_500_000, base + 7_000_000], np.int64),
    }
    m["req_done_ns"] = np.array([m["done_ns"][1], m["done_ns"][3]], np.int64)
    return t, r, m


def test_summarize_per_request_figures():
    t, r, m = _two_requests()
    s = stats.summarize(t, r, m, "emulated", ttft_budget_ms=5.0)
    assert s["bytes"] == 4_000_000 and s["transfers"] == 4 and s["requests_completed"] == 2
    # window: first post -> last completion
    window_s = (7_000_000 - 1_010_000) / 1e9
    assert s["duration_s"] == pytest.approx(window_s)
    assert s["throughput_gbps"] == pytest.approx(4_000_000 * 8 / 1e9 / window_s)
    assert s["throughput_GBps"] == pytest.approx(4_000_000 / 1e9 / window_s)
    # exposed: request 0 done 0.52 ms after its prefill end (2 ms); request 1: 7 - (2+2) = 3 ms
    assert sorted([s["exposed_ms"]["p50"], s["exposed_ms"]["max"]]) == pytest.approx([1.76, 3.0])
    assert s["exposed_ms"]["max"] == pytest.approx(3.0)
    # ttft = queue + prefill + exposed: request 1 = 2 + 2 + 3 = 7 ms; request 0 = 2.52 ms
    assert s["ttft_ms"]["p99"] == pytest.approx(2.52 + (7.0 - 2.52) * 0.99)
    assert s["ttft_met_fraction"] == pytest.approx(0.5)
    assert s["tpot_ms"]["p50"] == pytest.approx(15.0)
    assert s["post_lateness_us"]["max"] == pytest.approx(40.0)
    assert s["post_lateness_us"]["p50"] == pytest.approx(15.0)
    assert s["latency_us"]["max"] == pytest.approx(2960.0)
    # transfer time per request: first post -> last completion
    assert s["transfer_ms"]["p50"] == pytest.approx(((2.52 - 1.01) + (7.0 - 3.0)) / 2)


def test_summarize_exposed_clipped_at_zero_and_incomplete_request():
    t, r, m = _two_requests()
    m["done_ns"][3] = 0  # request 1 never completed
    m["req_done_ns"][1] = 0
    m["done_ns"][1] = m["req_start_ns"][0] + 1_000_000  # landed before the prefill end
    m["req_done_ns"][0] = m["done_ns"][1]
    s = stats.summarize(t, r, m, "emulated", None)
    assert s["requests_completed"] == 1
    assert s["exposed_ms"]["max"] == 0.0
    assert s["transfers"] == 3
    assert s["ttft_met_fraction"] is None


def test_pacing_none_has_no_lateness():
    t, r, m = _two_requests()
    s = stats.summarize(t, r, m, "none")
    assert s["post_lateness_us"] == {"p50": None, "p99": None, "max": None}
    assert s["post_call_us"] == {"p50": None, "p99": None, "max": None}  # no call durations given


def test_post_call_durations_become_microsecond_percentiles():
    t, r, m = _two_requests()
    m = dict(m, post_call_ns=np.array([10_000, 20_000, 30_000, 1_000_000], np.int64))
    s = stats.summarize(t, r, m, "emulated")
    assert s["post_call_us"]["p50"] == pytest.approx(25.0)
    assert s["post_call_us"]["max"] == pytest.approx(1000.0)


def test_result_to_dict_has_documented_keys():
    d = Result(scenario="s", transport="tcp", model="m", gpu="g", pair="local").to_dict()
    for key in ("scenario", "transport", "model", "gpu", "pair", "throughput_gbps", "throughput_GBps",
                "latency_us", "exposed_ms", "transfer_ms", "ttft_ms", "tpot_ms", "post_lateness_us", "post_call_us",
                "cpu_s_per_gb", "retransmits", "connect_ms", "register_ms", "integrity", "data_path",
                "bytes", "transfers", "requests", "requests_completed", "duration_s", "ttft_met_fraction"):
        assert key in d


def test_exposed_fraction_is_exposed_over_prefill_per_request():
    import numpy as np

    from pytest_kvfabric.emulator.plan import REQUEST_DTYPE, TRANSFER_DTYPE
    from pytest_kvfabric.measure.stats import summarize

    transfers = np.zeros(2, dtype=TRANSFER_DTYPE)
    transfers["request"] = [0, 1]
    transfers["nbytes"] = 1000
    requests = np.zeros(2, dtype=REQUEST_DTYPE)
    requests["request"] = [0, 1]
    requests["first"] = [0, 1]
    requests["count"] = 1
    requests["prefill_ns"] = [10_000_000, 20_000_000]  # 10 ms and 20 ms of emulated prefill
    m = {
        "post_ns": np.array([1_000, 2_000]),
        "done_ns": np.array([12_000_000, 22_000_000]),
        "req_arrival_ns": np.array([1, 1]),
        "req_start_ns": np.array([1, 1]),
        # request 0 lands 2 ms after its prefill end (0.2), request 1 lands 5 ms after (0.25)
        "req_done_ns": np.array([12_000_001, 25_000_001]),
    }
    s = summarize(transfers, requests, m, "emulated", None)
    assert s["exposed_ms"]["max"] == pytest.approx(5.0)
    assert s["exposed_fraction"]["max"] == pytest.approx(0.25)
    assert s["exposed_fraction"]["p50"] == pytest.approx(0.225)


def test_summarize_keeps_compact_distributions_and_a_timeline():
    t, r, m = _two_requests()
    m = dict(m, placed_by_layer_ns=np.array([m["req_start_ns"][1] + 3_400_000, m["req_start_ns"][1] + 4_900_000]))
    s = stats.summarize(t, r, m, "emulated")
    assert s["latency_hist_us"]["n"] == 4
    assert s["exposed_ms_requests"] == {"stride": 1, "values": [0.52, 3.0]}
    tl = s["timeline"]  # the last request (1): started at base + 2 ms
    assert tl["request"] == 1 and tl["layers"] == [0, 1] and tl["bytes"] == [1_000_000, 1_000_000]
    assert tl["ready_ms"] == [1.0, 2.0] and tl["prefill_ms"] == 2.0 and tl["arrival_ms"] == -2.0
    assert tl["first_post_ms"] == [1.0, 2.04] and tl["last_done_ms"] == [1.5, 5.0]
    assert tl["placed_ms"] == [3.4, 4.9] and tl["done_ms"] == 5.0


def test_timeline_request_is_the_last_with_writes():
    r = np.zeros(3, REQUEST_DTYPE)
    r["count"] = [2, 1, 0]
    assert stats.timeline_request(r) == 1
    r["count"] = 0
    assert stats.timeline_request(r) is None
