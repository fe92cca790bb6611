"""Baseline comparison (pure) and the `kvfabric compare` gate."""
from __future__ import annotations

import json

from pytest_kvfabric.cli import main
from pytest_kvfabric.report import baseline, jsonreport


def _report(cases: dict[str, tuple[float, float]]) -> dict:
    results = [
        {"case": c, "nodeid": f"t::{c}", "outcome": "passed",
         "metrics": {"throughput_gbps": gbps, "latency_us": {"p50": p99 / 2, "p99": p99}}}
        for c, (gbps, p99) in cases.items()
    ]
    env = {"kernel": "6.18", "cpu_model": "x", "python": "3.11", "packages": {}, "interfaces": []}
    session = {"transports": ["tcp"], "models": ["m"], "gpu": "h100", "fabric": "local", "exitstatus": 0}
    return jsonreport.build(session, env, results)


def test_regression_beyond_threshold_is_flagged_both_directions():
    old = _report({"a": (10.0, 100.0), "b": (10.0, 100.0)})
    new = _report({"a": (9.0, 100.0), "b": (10.0, 104.0)})
    cmp = baseline.compare(old, new, 5.0)
    regressed = {(c.case, c.metric) for c in cmp.regressions}
    assert regressed == {("a", "throughput Gb/s")}
    cmp2 = baseline.compare(old, new, 3.0)
    assert ("b", "latency p99 µs") in {(c.case, c.metric) for c in cmp2.regressions}


def test_improvements_are_not_regressions():
    cmp = baseline.compare(_report({"a": (10.0, 100.0)}), _report({"a": (20.0, 50.0)}), 0.0)
    assert cmp.regressions == ()


def test_missing_cases_listed_on_both_sides():
    cmp = baseline.compare(_report({"a": (1, 1), "old-only": (1, 1)}), _report({"a": (1, 1), "new-only": (1, 1)}), 5)
    assert cmp.only_old == ("old-only",) and cmp.only_new == ("new-only",)
    text = baseline.render(cmp, 5)
    assert "old-only" in text and "new-only" in text


def test_compare_command_exit_codes(tmp_path, capsys):
    old, good, bad = tmp_path / "old.json", tmp_path / "good.json", tmp_path / "bad.json"
    jsonreport.write(old, _report({"a": (10.0, 100.0)}))
    jsonreport.write(good, _report({"a": (9.8, 101.0)}))
    jsonreport.write(bad, _report({"a": (5.0, 100.0)}))
    assert main(["compare", str(old), str(good)]) == 0
    assert main(["compare", str(old), str(bad), "--max-regression", "5"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "1 regression(s)" in out


def test_compare_rejects_a_file_that_is_not_a_report(tmp_path, capsys):
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"results": []}))
    assert main(["compare", str(junk), str(junk)]) == 2
    err = capsys.readouterr().err
    assert "junk.json" in err and "required" in err and "Traceback" not in err
