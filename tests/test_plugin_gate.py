"""Repeats and the baseline gate as users run them (pytester, real agents over loopback)."""
from __future__ import annotations

import json

import numpy as np

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
    loose.stdout.fnmatch_lines(["*throughput Gb/s*UNDECIDED*", "*note: too few samples (1 vs 1;*",
                                "*undecided passes (--kv-gate-undecided=pass)*"])
    strict = pytester.runpytest("--kv-baseline=base.json", "--kv-gate-undecided=fail")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*undecided (--kv-gate-undecided=fail) against baseline base.json*"])
