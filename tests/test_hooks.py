"""The pytest_kvfabric_* hooks (hookspecs.py), each through pytester with a conftest that implements it."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from pytest_kvfabric.report import jsonreport

# One new metric end to end, declared in one place: the conftest's hook.
CONFTEST = """
import pytest
from pytest_kvfabric.measure.metrics import Metric


def pytest_kvfabric_metrics(config):
    return [Metric("bytes_per_write", "bytes_per_write", "bytes per write", "B", True,
                   compute=lambda m: m["bytes"] / m["transfers"], gate_pct=5.0,
                   slo="min_bytes_per_write", slo_help="mean bytes per completed write", column="B/write")]


def pytest_kvfabric_report_sections(config, results, metrics):
    return [("my section", f"{len(results)} case(s), {len(metrics.metrics)} metrics")]


def pytest_kvfabric_fabrics(config):
    def open_mine(selection, index, count):
        from pytest_kvfabric.fabric.local import local_pair

        with open("opened-mine.txt", "a") as fh:
            fh.write(f"{selection.fabric} {index} {count}\\n")
        return local_pair(), lambda: open("closed-mine.txt", "w").close()

    return {"mine": open_mine}
"""

CASES = """
import pytest
from pytest_kvfabric.core.scenario import Synthetic

SMALL = dict(synthetic=Synthetic(nbytes=65536, transfers=16, batch=16), pacing="none", pool_bytes=8 << 20)

@pytest.mark.kv_slo(min_bytes_per_write=1000)
def test_loose(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(**SMALL))

@pytest.mark.kv_slo(min_bytes_per_write=1e6)
def test_strict(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(**SMALL))
"""


def test_a_conftest_adds_a_metric_a_report_section_and_a_fabric(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest("--kv-fabric=mine", "--junitxml=out.xml", "--kv-json=report.json")
    result.assert_outcomes(passed=1, failed=1)
    # metric: its SLO key judged (marker), its table column, JSON report, JUnit property
    result.stdout.fnmatch_lines(["*SLO missed:*", "*bytes per write*6554*>= 1e+06 B*FAIL*"])
    result.stdout.fnmatch_lines(["*kvfabric KV-transfer summary*", "case*B/write*", "*test_loose*65500*passed*"])
    report = jsonreport.read(pytester.path / "report.json")
    loose = next(r for r in report["results"] if "test_loose" in r["case"])
    assert loose["metrics"]["bytes_per_write"] == 65536
    assert loose["repeats"] == [{**loose["repeats"][0], "bytes_per_write": 65536.0}]  # gated: kept per repeat
    root = ET.parse(pytester.path / "out.xml").getroot()
    props = {p.get("name"): p.get("value") for case in root.iter("testcase") if case.get("name").startswith("test_loose")
             for p in case.iter("property")}
    assert float(props["kv_bytes_per_write"]) == 65536 and props["kv_slo_min_bytes_per_write"] == "pass"
    # report section: after the built-in one
    result.stdout.fnmatch_lines(["*kvfabric KV-transfer summary*", "*my section*", "2 case(s), * metrics"])
    # fabric: --kv-fabric accepted it; opened once for the session, closed at its end
    assert (pytester.path / "opened-mine.txt").read_text() == "mine 0 1\n"
    assert (pytester.path / "closed-mine.txt").exists()
    assert report["session"]["fabric"] == "mine"
    # the gate judges the new metric too, and --kv-max-regression takes its key
    base = json.loads((pytester.path / "report.json").read_text())
    for r in base["results"]:
        r["repeats"] = [{**rep, "bytes_per_write": rep["bytes_per_write"] * 4} for rep in r["repeats"] or ()] * 5
    (pytester.path / "base.json").write_text(json.dumps(base))
    gated = pytester.runpytest("--kv-fabric=mine", "--kv-baseline=base.json", "--kv-max-regression=900,bytes_per_write=5",
                               "--kv-repeat=3", "-k", "loose")
    gated.assert_outcomes(failed=1, deselected=1)
    gated.stdout.fnmatch_lines(["*bytes per write B*REGRESSED*"])


def test_a_metric_that_repeats_a_builtin_key_is_a_usage_error(pytester):
    pytester.makeconftest("""
        from pytest_kvfabric.measure.metrics import Metric

        def pytest_kvfabric_metrics(config):
            return [Metric("mine", "mine", "mine", "", True, slo="min_throughput_gbps")]
    """)
    result = pytester.runpytest()
    assert result.ret == 4  # usage error
    result.stderr.fnmatch_lines(["*kvfabric: pytest_kvfabric_metrics: SLO key 'min_throughput_gbps' declared twice*"])


def test_without_the_conftest_its_names_are_refused(pytester):
    result = pytester.runpytest("--kv-fabric=mine")
    result.stderr.fnmatch_lines(["*--kv-fabric: mine: unknown fabric; valid: local, netns, hosts*"])
    result = pytester.runpytest("--kv-slo=min_bytes_per_write=1")
    result.stderr.fnmatch_lines(["*unknown SLO key*"])
