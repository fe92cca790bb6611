"""Inside the lab under TCG (KVFABRIC_LAB=tcg), through pytester with real agents on loopback:
timing SLOs are shown but not judged, integrity still is, the report's fingerprint says
virtualized: tcg and the summary says timings are not meaningful."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from pytest_kvfabric.lab.env import LAB_ENV, TCG_NOTE
from pytest_kvfabric.report import jsonreport

CASES = """
import pytest
from pytest_kvfabric.core.scenario import Synthetic

@pytest.mark.kv_slo(min_throughput_gbps=1000000, p99_latency_us=0.001)
def test_impossible_timing(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(synthetic=Synthetic(nbytes=65536, transfers=32, batch=8), pacing="none",
                               pool_bytes=8 << 20))
"""


def test_tcg_lab_run_reports_timings_as_not_judged(pytester, monkeypatch):
    monkeypatch.setenv(LAB_ENV, "tcg")
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest("--junitxml=out.xml", "--kv-json=report.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*kvfabric: {TCG_NOTE}*"])
    report = jsonreport.read(pytester.path / "report.json")
    assert report["environment"]["virtualized"] == "tcg"
    (case,) = report["results"]
    assert all(v["passed"] and v["note"].startswith("not judged") for v in case["verdicts"])
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "out.xml").getroot().iter("property")}
    assert props["kv_slo_min_throughput_gbps"] == "not judged" and props["kv_slo_p99_latency_us"] == "not judged"


def test_outside_the_lab_the_same_case_fails(pytester, monkeypatch):
    monkeypatch.delenv(LAB_ENV, raising=False)
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    assert TCG_NOTE not in result.stdout.str()


LOOSE = """
from pytest_kvfabric.core.scenario import Synthetic

def test_small(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(synthetic=Synthetic(nbytes=65536, transfers=16, batch=8), pacing="none",
                               pool_bytes=8 << 20))
"""


def test_kernel_matrix_comparison_names_the_kernel_change(pytester, monkeypatch):
    import json
    import platform

    monkeypatch.delenv(LAB_ENV, raising=False)
    pytester.makepyfile(test_cases=LOOSE)
    pytester.runpytest("--kv-save-baseline=base.json").assert_outcomes(passed=1)
    base = json.loads((pytester.path / "base.json").read_text())
    base["environment"]["kernel"] = "6.1.0-50-amd64"  # as if saved by `kvfabric lab run --kernel ...6.1...`
    base["environment"]["virtualized"] = "tcg"
    (pytester.path / "base.json").write_text(json.dumps(base))
    result = pytester.runpytest("--kv-baseline=base.json", "--kv-max-regression=1000")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*environment changes since the baseline:*",
        "*WARNING: virtualized: tcg -> (none)*",
        f"*kernel: 6.1.0-50-amd64 -> {platform.release()}*",
        "*a side ran under TCG*not meaningful*"])
