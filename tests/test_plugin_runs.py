"""End-to-end plugin behaviour through pytester: real agents, real sockets, small scenarios."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from pytest_kvfabric.report import jsonreport

# A small synthetic case: 64 writes of 64 KiB posted as fast as tcp takes them.
CASES = """
import pytest
from pytest_kvfabric.core.scenario import Synthetic

SMALL = dict(synthetic=Synthetic(nbytes=65536, transfers=64, batch=16), pacing="none", pool_bytes=8 << 20)

@pytest.mark.kv_slo(min_throughput_gbps=0.001)
def test_loose(kv_run, kv_scenario):
    result = kv_run(kv_scenario.replace(**SMALL))
    assert result.to_dict()["integrity"]["errors"] == 0

@pytest.mark.kv_slo(min_throughput_gbps=1000000)
def test_strict(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(**SMALL))
"""


def _properties(xml_path) -> dict[str, dict[str, str]]:
    root = ET.parse(xml_path).getroot()
    out = {}
    for case in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out[case.get("name")] = props
    return out


def test_same_scenario_passes_or_fails_on_its_threshold_and_junit_carries_metrics(pytester):
    pytester.makepyfile(test_cases=CASES)
    pytester.makeini("[pytest]\nkv_html = page.html\n")  # the ini key of --kv-html
    result = pytester.runpytest("--junitxml=out.xml", "--kv-json=report.json")
    result.assert_outcomes(passed=1, failed=1)
    assert "<img" in (pytester.path / "page.html").read_text()
    result.stdout.fnmatch_lines(["*HTML report written to page.html*"])
    result.stdout.fnmatch_lines(["*SLO missed:*", "*throughput*>= 1e+06 Gb/s*FAIL*"])
    props = _properties(pytester.path / "out.xml")
    loose, strict = props["test_loose[llama3.1-8b-tcp]"], props["test_strict[llama3.1-8b-tcp]"]
    assert float(loose["kv_throughput_gbps"]) > 0
    assert float(loose["kv_latency_us_p99"]) >= float(loose["kv_latency_us_p50"]) > 0
    assert 0 <= float(loose["kv_spin_s_per_gb_sender"]) <= float(loose["kv_cpu_s_per_gb_sender"])
    assert loose["kv_slo_min_throughput_gbps"] == "pass"
    assert strict["kv_slo_min_throughput_gbps"] == "fail"
    report = jsonreport.read(pytester.path / "report.json")  # validates against the schema
    outcomes = {r["case"].split("::")[-1]: r["outcome"] for r in report["results"]}
    assert outcomes == {"test_loose[llama3.1-8b-tcp]": "passed", "test_strict[llama3.1-8b-tcp]": "failed"}
    assert report["environment"]["kernel"]
    assert all(r["pair"] == "local" for r in report["results"])
    # The terminal summary table lists both cases.
    result.stdout.fnmatch_lines(["*kvfabric KV-transfer summary*", "*test_loose*local*passed*"])


def test_under_xdist_the_controller_writes_one_report_and_junit_has_metrics(pytester):
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest("-n", "2", "--junitxml=out.xml", "--kv-json=report.json", "--kv-html=out/r.html")
    result.assert_outcomes(passed=1, failed=1)
    page = (pytester.path / "out" / "r.html").read_text()  # written once, by the controller
    assert page.count("test_loose[llama3.1-8b-tcp]") >= 1 and "test_strict" in page
    props = _properties(pytester.path / "out.xml")
    assert float(props["test_loose[llama3.1-8b-tcp]"]["kv_throughput_gbps"]) > 0
    report = jsonreport.read(pytester.path / "report.json")
    assert len(report["results"]) == 2
    assert {r["worker"] for r in report["results"]} <= {"gw0", "gw1"}
    assert not list(pytester.path.glob("report.json.*")) and not list(pytester.path.glob(".report.json.*"))


def test_baseline_gate_fails_an_injected_regression_and_passes_without(pytester):
    pytester.makepyfile(test_cases=CASES.split("@pytest.mark.kv_slo(min_throughput_gbps=1000000)")[0])
    first = pytester.runpytest("--kv-save-baseline=base.json", "--kv-repeat=3")
    first.assert_outcomes(passed=1)
    base = json.loads((pytester.path / "base.json").read_text())
    # Unchanged baseline: the same host and code do not regress by 10x (noise stays far below).
    again = pytester.runpytest("--kv-baseline=base.json", "--kv-max-regression=900")
    again.assert_outcomes(passed=1)
    # Inject a regression: pretend the baseline was 100x faster (5 repeats: 5 vs 3 can decide).
    for r in base["results"]:
        r["metrics"]["throughput_gbps"] *= 100
        r["repeats"] = [{**rep, "throughput_gbps": rep["throughput_gbps"] * 100} for rep in r["repeats"] * 2][:5]
    (pytester.path / "fast-base.json").write_text(json.dumps(base))
    gated = pytester.runpytest("--kv-baseline=fast-base.json", "--kv-max-regression=5", "--kv-repeat=3")
    gated.assert_outcomes(failed=1)
    gated.stdout.fnmatch_lines(["*regressed against baseline fast-base.json*", "*throughput Gb/s*REGRESSED*"])


def test_missing_baseline_cases_are_listed(pytester):
    pytester.makepyfile(test_cases=CASES.split("@pytest.mark.kv_slo(min_throughput_gbps=1000000)")[0])
    pytester.runpytest("--kv-save-baseline=base.json").assert_outcomes(passed=1)
    base = json.loads((pytester.path / "base.json").read_text())
    base["results"].append({**base["results"][0], "case": "gone/case[m-tcp]", "nodeid": "x::gone"})
    (pytester.path / "base.json").write_text(json.dumps(base))
    result = pytester.runpytest("--kv-baseline=base.json", "--kv-max-regression=900")
    result.stdout.fnmatch_lines(["*1 baseline case(s) not run: gone/case[[]m-tcp[]]*"])


def test_cli_slo_overrides_the_marker(pytester):
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest("-k", "strict", "--kv-slo=min_throughput_gbps=0.001")
    result.assert_outcomes(passed=1, deselected=1)


def test_zero_copy_requirement_fails_or_skips_with_the_kernels_reason(pytester):
    pytester.makepyfile("""
        import pytest
        from pytest_kvfabric.core.scenario import Synthetic

        @pytest.mark.kv_slo(require_zero_copy=True)
        def test_zc(kv_run, kv_scenario):
            kv_run(kv_scenario.replace(synthetic=Synthetic(nbytes=65536, transfers=16, batch=4),
                                       pacing="none", pool_bytes=8 << 20))
    """)
    failed = pytester.runpytest("--kv-transport=zerocopy")
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*zero-copy data path*FAIL*", "*copied 100%*"])
    skipped = pytester.runpytest("--kv-transport=zerocopy", "--kv-on-copy=skip", "-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*zero-copy required but*copied 100%*"])


def test_smoke_suite_main_job_passes(pytester):
    """The README's main job: the smoke suite on tcp with DeepSeek-V3."""
    from pathlib import Path

    smoke = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"
    result = pytester.runpytest(str(smoke), "--kv-transport=tcp", "--kv-model=deepseek-v3", "--kv-json=r.json")
    result.assert_outcomes(passed=4)
    # the suite's TP was written for llama3.1-8b; --kv-model swapped the model, so TP is raised
    # to the smallest that holds DeepSeek-V3 on an h100 (experts over every rank), and said so
    result.stdout.fnmatch_lines(["note: smoke/chat-layerwise*prefill: tp 1 -> 16 ep=16 dp_attention so that deepseek-v3 fits h100's 80 GB*"])
    report = jsonreport.read(pytester.path / "r.json")
    notes = {r["scenario"]: r["notes"] for r in report["results"]}
    assert any("decode: tp 4 -> 16" in n for n in notes["smoke/tp8-to-tp4"])
    assert all(r["metrics"]["integrity"]["errors"] == 0 and r["metrics"]["integrity"]["pages_checked"] > 0
               for r in report["results"])


def test_a_tests_own_scenario_takes_every_command_line_override(pytester):
    """harness/resolve.py: the command line (layer 6) beats the test's own Scenario (layer 5) for
    --kv-pool-mib and --kv-pacing as for --kv-slo (the pool and pacing were once ignored)."""
    pytester.makepyfile(test_own="""
        from pytest_kvfabric.core.scenario import Synthetic

        def test_pacing(kv_run, kv_scenario):
            own = kv_scenario.replace(synthetic=Synthetic(nbytes=65536, transfers=8), pacing="none",
                                      pool_bytes=8 << 20, slo={})
            assert kv_run(own).pacing == "emulated"

        def test_pool(kv_run, kv_scenario):
            # 1 MiB writes: the test's own 64 MiB pool holds 64 slots, --kv-pool-mib=1 holds one
            kv_run(kv_scenario.replace(synthetic=Synthetic(nbytes=1 << 20, transfers=2), pacing="none",
                                       pool_bytes=64 << 20))
    """)
    result = pytester.runpytest("--kv-pacing=emulated", "--kv-pool-mib=1", "--kv-slo=min_throughput_gbps=0.0001",
                                "--kv-json=report.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ProfileError*pool_bytes: pool of 1048576 bytes holds 1 slot(s)*"])
    report = jsonreport.read(pytester.path / "report.json")
    slos = {r["case"].split("::")[-1]: [v["key"] for v in r["verdicts"]] for r in report["results"]}
    assert slos["test_pacing[llama3.1-8b-tcp]"] == ["min_throughput_gbps"]  # --kv-slo over slo={}
