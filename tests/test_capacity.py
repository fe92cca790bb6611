"""Capacity told up front: needed against carried Gb/s, and an SLO miss that follows from it says so."""
from __future__ import annotations

import json

from pytest_kvfabric.measure.capacity import Capacity, explains, from_record, needed_gbps
from pytest_kvfabric.report.table import capacity_label


def test_needed_is_bytes_over_the_prefill_time_back_to_back():
    assert needed_gbps(1_000_000_000, 2e9) == 4.0  # 8 Gbit over 2 s
    assert needed_gbps(10, 0) is None


def test_a_short_link_explains_timing_misses_only():
    cap = Capacity(34.5, 20.0, "probe")
    assert cap.short and cap.sentence().startswith("scenario needs 34.5 Gb/s; this pair carried 20 Gb/s")
    note = explains(cap, ["max_exposed_ms", "require_zero_copy"])
    assert note and "scenario needs 34.5 Gb/s; this pair carried 20 Gb/s" in note and "max_exposed_ms" in note
    assert "require_zero_copy" not in note
    assert explains(cap, ["require_zero_copy"]) is None  # not a bandwidth matter
    assert explains(Capacity(10.0, 20.0, "probe"), ["max_exposed_ms"]) is None  # enough capacity
    assert explains(Capacity(10.0, None, "not probed"), ["max_exposed_ms"]) is None
    assert explains(None, ["max_exposed_ms"]) is None


def test_record_round_trip_and_table_label():
    d = Capacity(34.5, 20.0, "probe").to_dict()
    assert d["short"] is True and from_record(d) == Capacity(34.5, 20.0, "probe")
    assert capacity_label(d) == "34.5/20 SHORT"
    assert capacity_label(Capacity(1.0, 20.0, "p").to_dict()) == "1/20"
    assert capacity_label(None) == "-"


CASES = """
import dataclasses
import pytest

@pytest.mark.kv_slo(max_exposed_ms=0.001)
def test_needs_more_than_loopback(kv_run, kv_scenario):
    # A GPU a thousand times faster than any, with no fixed overheads: its prefill is over in
    # microseconds, so hiding the KV transfer behind it needs far more than any loopback carries.
    gpu = dataclasses.replace(kv_scenario.gpu, tflops={"bf16": 1e6}, hbm_tb_per_s=1e4, scaleup_gb_per_s=1e6,
                              step_overhead_us=0.0, layer_overhead_us=0.0, allreduce_latency_us=0.0)
    kv_run(kv_scenario.replace(gpu=gpu))
"""


def test_an_slo_miss_from_too_little_capacity_says_so(pytester):
    pytester.makepyfile(test_cap=CASES)
    result = pytester.runpytest("--kv-json=r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*SLO missed*", "*capacity: scenario needs * Gb/s; this pair carried * Gb/s*"])
    rec = json.loads((pytester.path / "r.json").read_text())["results"][0]
    cap = rec["capacity"]
    assert cap["short"] is True and cap["needed_gbps"] > 1000 > cap["carried_gbps"] > 0
    result.stdout.fnmatch_lines(["*SHORT*failed*"])  # the summary table shows both figures


def test_kvfabric_run_says_up_front_when_the_link_is_short():
    from pytest_kvfabric.commands.run import short_link_line

    line = short_link_line(Capacity(36.5, 3.4, "0.3 s unpaced probe of tcp with 4 MiB writes"))
    assert line.startswith("kvfabric run: scenario needs 36.5 Gb/s; this pair carried 3.4 Gb/s")
    assert short_link_line(Capacity(1.0, 3.4, "p")) is None and short_link_line(None) is None
