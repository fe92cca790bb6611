"""Rails and traffic matrices through the plugin, as users run them (pytester, loopback fabric)."""
from __future__ import annotations

import json

import pytest

SUITE = """\
suite: tiny
defaults:
  gpu: h100
  models: [llama3.1-8b]
  pool_mib: 8
  prefill: {tp: 2}
  decode: {tp: 2}
  workload: {isl: 32, osl: 8, requests: 2, arrival: {kind: poisson, rate_per_s: 100}}
scenarios:
%s
"""


@pytest.mark.parametrize("args, expected", [
    (["--kv-rails=0"], "--kv-rails: must be >= 1"),
    (["--kv-rails=65"], "--kv-rails: must be <= 64, got 65"),
    (["--kv-rails=two"], "--kv-rails: expected int, got 'two'"),
])
def test_bad_rails_are_usage_errors(pytester, args, expected):
    pytester.makepyfile("def test_x(kv_model): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str(), result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_bad_rails_in_ini_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nkv_rails = -1\n")
    pytester.makepyfile("def test_x(kv_model): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "--kv-rails: must be >= 1" in result.stderr.str()


@pytest.mark.parametrize("body, expected", [
    ("  - id: a\n    topology: {prefill: 0}", "scenarios[[]0[]].topology.prefill: must be >= 1*"),
    ("  - id: a\n    topology: {prefill: 2, routing: hash}", "*scenarios[[]0[]].topology.routing*"),
    ("  - id: a\n    rails: 100", "*scenarios[[]0[]].rails: must be <= 64*"),
])
def test_bad_topology_in_a_suite_fails_collection_naming_the_field(pytester, body, expected):
    (pytester.mkdir("suites") / "bad.yaml").write_text(SUITE % body)
    result = pytester.runpytest("suites/bad.yaml")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*bad.yaml*{expected}"])


def test_kv_rails_runs_every_rail_and_reports_per_rail_figures(pytester):
    (pytester.mkdir("suites") / "tiny.yaml").write_text(SUITE % "  - id: two-ranks")
    result = pytester.runpytest("suites/tiny.yaml", "--kv-rails", "2", "--kv-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (case,) = json.loads((pytester.path / "out.json").read_text())["results"]
    m = case["metrics"]
    assert m["rails"] == 2 and case["pair"] == "local-1p1d-2r"
    assert [r["rail"] for r in m["per_rail"]] == [0, 1]
    assert all(r["bytes"] > 0 for r in m["per_rail"]) and sum(r["bytes"] for r in m["per_rail"]) == m["bytes"]
    assert m["integrity"]["errors"] == 0 and m["integrity"]["pages_checked"] > 0


def test_ini_rails_and_suite_topology_report_instances_fairness_and_incast(pytester):
    pytester.makeini("[pytest]\nkv_rails = 1\n")
    body = ("  - id: fan-in\n    topology: {prefill: 2, decode: 1}\n"
            "    slo: {min_fairness_jain: 0.3, max_incast_penalty_ms: 100000}")
    (pytester.mkdir("suites") / "tiny.yaml").write_text(SUITE % body)
    result = pytester.runpytest("suites/tiny.yaml", "--kv-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (case,) = json.loads((pytester.path / "out.json").read_text())["results"]
    m = case["metrics"]
    assert [e["prefill"] for e in m["per_instance"]["prefill"]] == [0, 1]
    assert all(e["bytes"] > 0 for e in m["per_instance"]["prefill"])
    assert 0.3 <= m["fairness_jain"] <= 1.0 and m["incast"][0]["fan_in"] == 2
    assert {v["key"] for v in case["verdicts"] if v["passed"]} >= {"min_fairness_jain", "max_incast_penalty_ms"}


def test_a_fairness_slo_on_a_single_pair_is_not_measured_and_fails(pytester):
    (pytester.mkdir("suites") / "tiny.yaml").write_text(SUITE % "  - id: one\n    slo: {min_fairness_jain: 0.5}")
    result = pytester.runpytest("suites/tiny.yaml", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fairness (Jain, flows): not measured*"])
