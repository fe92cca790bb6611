"""Pure helpers of benchmarks/_common.py: parsing, medians, ratios, tables (no processes)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as C  # noqa: E402

SOCKPERF = """sockperf: \x1b[2;35m====> avg-latency=15.196 (std-dev=71.285)\x1b[0m
sockperf: \x1b[2;35mTotal 50917 observations\x1b[0m; each percentile contains 509.17 observations
sockperf: ---> <MAX> observation = 2679.940
sockperf: ---> percentile 99.000 =   46.090
sockperf: ---> percentile 50.000 =   11.110
sockperf: ---> <MIN> observation =    8.140
"""


def test_parse_sockperf_reads_half_rtt_percentiles() -> None:
    d = C.parse_sockperf(SOCKPERF)
    assert d["p50"] == pytest.approx(11.11)
    assert d["p99"] == pytest.approx(46.09)
    assert d["avg"] == pytest.approx(15.196)
    assert d["min"] == pytest.approx(8.14) and d["max"] == pytest.approx(2679.94)
    assert d["observations"] == 50917


def test_parse_sockperf_without_percentiles_names_the_problem() -> None:
    with pytest.raises(RuntimeError, match="50th percentile"):
        C.parse_sockperf("sockperf: error: connection refused")


def test_summary_and_percentile() -> None:
    s = C.summary([3.0, 1.0, 2.0, float("nan")])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert C.percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert C.percentile([5], 99) == 5
    assert math.isnan(C.percentile([], 50))
    assert C.summary([])["n"] == 0


def test_ratio_row_throughput_and_latency_verdicts() -> None:
    r = C.ratio_row("x", [2.0, 4.0, 3.0], [2.0, 2.0, 2.0], unit="GB/s", target=1.0)
    assert r["ratio"] == pytest.approx(1.5) and r["met"] is True
    assert r["paired_ratio"]["median"] == pytest.approx(1.5)
    lat = C.ratio_row("y", [30.0], [20.0], unit="us", target=1.3, higher_is_better=False)
    assert lat["ratio"] == pytest.approx(1.5) and lat["met"] is False
    ctx = C.ratio_row("z", [1.0], [2.0], unit="CPU s/GB", target=None)
    assert ctx["met"] is None


def test_median_ci_uses_binomial_order_statistics() -> None:
    # n=9: [x(2), x(8)] covers the median with 1 - 2*(1+9)/512 = 96.1 %; [x(3), x(7)] only 82 %.
    ci = C.median_ci([9, 1, 8, 2, 7, 3, 6, 4, 5])
    assert (ci["lo"], ci["hi"], ci["n"]) == (2.0, 8.0, 9)
    assert ci["coverage"] == pytest.approx(1 - 2 * 10 / 512)
    # n=5: only [min, max] reaches 90 % (93.75 %); n=3 cannot (75 %) and says so.
    assert (C.median_ci([5, 4, 3, 2, 1])["lo"], C.median_ci([5, 4, 3, 2, 1])["hi"]) == (1.0, 5.0)
    assert C.median_ci([1, 2, 3])["coverage"] == pytest.approx(0.75)
    assert C.median_ci([float("nan")])["n"] == 0
    big = C.median_ci(list(range(2000)))  # exact integer binomials: no float underflow
    assert 0.9 <= big["coverage"] < 0.95 and big["lo"] < 1000 < big["hi"]


@pytest.mark.parametrize("ours, decided", [
    ([1.1, 1.2, 1.3, 1.4, 1.5], "met"),         # every round above: the interval is too
    ([0.5, 0.6, 0.7, 0.8, 0.9], "missed"),
    ([0.9, 1.05, 1.1, 1.2, 1.3], "undecided"),  # median meets it, the interval straddles it
    ([1.1, 1.2, 1.3], "undecided"),             # 3 rounds: no 90 % interval at all
])
def test_ratio_row_decides_only_when_the_interval_clears_the_target(ours, decided) -> None:
    r = C.ratio_row("x", ours, [1.0] * len(ours), unit="GB/s", target=1.0)
    assert r["decided"] == decided
    lat = C.ratio_row("y", [2.0 - x for x in ours], [1.0] * len(ours), unit="us", target=1.0,
                      higher_is_better=False)
    assert lat["decided"] == decided
    assert C.ratio_row("z", ours, [1.0] * len(ours), unit="CPU s/GB", target=None)["decided"] is None


def test_interleave_rotates_order_and_collects_per_contender() -> None:
    order: list[str] = []
    mk = lambda n: (lambda: order.append(n) or {"v": len(order)})  # noqa: E731
    out = C.interleave(3, {"a": mk("a"), "b": mk("b")})
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert [r["round"] for r in out["a"]] == [0, 1, 2]


def test_format_table_marks_missed_targets() -> None:
    rows = [C.ratio_row("ours vs ref", [0.5], [1.0], unit="GB/s", target=1.0, ref_label="iperf3")]
    text = C.format_table(rows)
    assert "ours vs ref" in text and "iperf3: 1.000" in text and "NO" in text
    assert "[0.50-0.50] (only 0%: too few rounds): undecided" in text


def test_top_frames_self_time(tmp_path: Path) -> None:
    p = tmp_path / "prof.txt"
    p.write_text("main;a;send 30\nmain;b;send 10\nmain;recv 60\n")
    top = dict(C.top_frames(str(p)))
    assert top["send"] == pytest.approx(0.4) and top["recv"] == pytest.approx(0.6)


def test_netns_prefix_pins_only_when_asked() -> None:
    assert C.netns_prefix(None) == []
    assert C.netns_prefix("ns1") == ["ip", "netns", "exec", "ns1"]
    assert C.netns_prefix("ns1", [0, 2]) == ["ip", "netns", "exec", "ns1", "taskset", "-c", "0,2"]
    assert C.netns_prefix(None, [1]) == ["taskset", "-c", "1"]


def test_bench_rails_aggregate_sums_rates_and_takes_the_median_rail_cpu() -> None:
    import bench_rails

    agg = bench_rails.aggregate([
        {"gbps_bytes": 1.0, "cpu_s_per_gb_sender": 0.2, "cpu_s_per_gb_receiver": 0.3, "retransmits": 1},
        {"gbps_bytes": 0.5, "cpu_s_per_gb_sender": 0.4, "cpu_s_per_gb_receiver": 0.4, "retransmits": None},
        {"gbps_bytes": 0.5, "cpu_s_per_gb_sender": 0.1, "cpu_s_per_gb_receiver": 0.1}])
    assert agg["gbps_bytes"] == pytest.approx(2.0) and agg["retransmits"] == 1
    assert agg["rails_cpu_s_per_gb"] == pytest.approx([0.5, 0.8, 0.2]) and agg["cpu_s_per_gb_rail"] == pytest.approx(0.5)
