"""Repeats and the baseline gate as users run them (pytester, real agents over loopback)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_kvfabric.report import jsonreport

CASE = """
from pytest_kvfabric.core.scenario import Synthetic

def test_small(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(synthetic=Synthetic(nbytes=65536, transfers=32, batch=16), pacing="none",
                               pool_bytes=8 << 20))
"""


def test_ini_repeat_keeps_every_repeat_and_reports_medians_with_an_interval(pytester):
    pytester.makepyfile(test_cases=CASE)
    pytester.makeini("[pytest]\nkv_repeat = 3\n")
    result = pytester.runpytest("--kv-json=report.json")
    result.assert_outcomes(passed=1)
    report = jsonreport.read(pytester.path / "report.json")
    assert report["session"]["repeat"] == 3
    (r,) = report["results"]
    assert len(r["repeats"]) == 3 and all(rep["throughput_gbps"] > 0 for rep in r["repeats"])
    assert r["metrics"]["throughput_gbps"] == np.median([rep["throughput_gbps"] for rep in r["repeats"]])
    result.stdout.fnmatch_lines(["*test_small*local*[[]*,*[]]*passed*"])  # GB/s median [low, high]


def test_undecided_passes_by_default_fails_on_request_and_the_environment_diff_comes_first(pytester):
    pytester.makepyfile(test_cases=CASE)
    pytester.runpytest("--kv-save-baseline=base.json").assert_outcomes(passed=1)
    base = json.loads((pytester.path / "base.json").read_text())
    base["environment"]["kernel"] = "5.15.0-old"
    (pytester.path / "base.json").write_text(json.dumps(base))
    # One sample on each side cannot decide anything: undecided, reported.
    loose = pytester.runpytest("--kv-baseline=base.json")
    loose.assert_outcomes(passed=1)
    out = loose.stdout.str()
    assert out.index("kernel: 5.15.0-old ->") < out.index("baseline median [95% CI]")
    assert "WARNING: the baseline is one session" in out
    loose.stdout.fnmatch_lines(["*throughput Gb/s*UNDECIDED*", "*note: too few samples (1 vs 1;*",
                                "*undecided passes (--kv-gate-undecided=pass)*"])
    strict = pytester.runpytest("--kv-baseline=base.json", "--kv-gate-undecided=fail")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*undecided (--kv-gate-undecided=fail) against baseline base.json*"])


def test_a_baseline_of_several_sessions_is_judged_on_two_levels_and_tcg_leaves_timings_unjudged(pytester):
    pytester.makepyfile(test_cases=CASE)
    pytester.makeini("[pytest]\nkv_repeat = 3\n")
    for name in ("b1.json", "b2.json"):
        pytester.runpytest(f"--kv-save-baseline={name}").assert_outcomes(passed=1)
    two = pytester.runpytest("--kv-baseline=b1.json,b2.json", "--kv-json=cur.json")
    two.assert_outcomes(passed=1)
    two.stdout.fnmatch_lines(["*baseline: 2 sessions (two-level verdict*", "*throughput Gb/s*n=6 in 2 sessions*"])
    assert "WARNING: the baseline is one session" not in two.stdout.str()
    (r,) = jsonreport.read(pytester.path / "cur.json")["results"]
    tp = next(c for c in r["gate"] if c["metric"] == "throughput")
    assert tp["baseline"]["sessions"] == 2 and tp["baseline"]["n"] == 6 and tp["current"]["n"] == 3
    # A baseline session recorded under the lab's TCG: timings are not judged, and say so.
    b2 = json.loads((pytester.path / "b2.json").read_text())
    b2["environment"]["virtualized"] = "tcg"
    (pytester.path / "b2.json").write_text(json.dumps(b2))
    tcg = pytester.runpytest("--kv-baseline=b1.json,b2.json", "--kv-json=tcg.json")
    tcg.assert_outcomes(passed=1)
    tcg.stdout.fnmatch_lines(["*a side ran under TCG*timing verdicts are undecided (not judged)*"])
    (r,) = jsonreport.read(pytester.path / "tcg.json")["results"]
    assert {c["verdict"] for c in r["gate"] if c["metric"] != "retransmits"} == {"undecided"}
    assert all("TCG" in c["note"] for c in r["gate"] if c["metric"] != "retransmits")
    missing = pytester.runpytest("--kv-baseline=b1.json,nope.json")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*--kv-baseline: nope.json: no such file*"])
