"""Baseline gate (pure verdicts over repeats) and the `kvfabric compare` command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pytest_kvfabric.cli import main
from pytest_kvfabric.report import baseline, jsonreport

RNG_SEED = 7


def _result(case: str, gbps: list[float], p99: list[float], pair: str = "local") -> dict:
    reps = [{"throughput_gbps": g, "latency_us.p50": p / 2, "latency_us.p99": p} for g, p in zip(gbps, p99)]
    return {"case": case, "nodeid": f"t::{case}", "outcome": "passed", "pair": pair,
            "metrics": {"throughput_gbps": float(np.median(gbps)),
                        "latency_us": {"p50": float(np.median(p99)) / 2, "p99": float(np.median(p99))}},
            "repeats": reps}


def _report(results: list[dict], kernel: str = "6.18", fabric: str = "local") -> dict:
    env = {"kernel": kernel, "cpu_model": "x", "python": "3.11", "packages": {"numpy": "2.4"},
           "interfaces": [{"name": "lo", "netns": None, "mtu": 65536}]}
    session = {"transports": ["tcp"], "models": ["m"], "gpu": "h100", "fabric": fabric, "exitstatus": 0}
    return jsonreport.build(session, env, results)


def _noisy(center: float, n: int, cv: float = 0.02, seed: int = RNG_SEED) -> list[float]:
    return list(center * np.random.default_rng(seed).lognormal(0, cv, n))


def _verdicts(cmp: baseline.Comparison) -> dict[tuple[str, str], str]:
    return {(c.case, c.key): c.status for c in cmp.changes}


def test_clear_shift_is_regressed_identical_is_unchanged_and_improvement_is_improved():
    old = _report([_result("a", _noisy(10, 5), _noisy(100, 5)), _result("b", _noisy(10, 5), _noisy(100, 5)),
                   _result("c", _noisy(10, 5), _noisy(100, 5))])
    new = _report([_result("a", _noisy(6, 5, seed=1), _noisy(100, 5, seed=2)),  # throughput -40%
                   _result("b", _noisy(10, 5), _noisy(100, 5)),  # identical samples
                   _result("c", _noisy(10, 5, seed=3), _noisy(50, 5, seed=4))])  # latency halved
    v = _verdicts(baseline.compare(old, new, {"throughput": 5, "latency_p99": 10, "latency_p50": 10}))
    assert v[("a", "throughput")] == "regressed" and v[("a", "latency_p99")] == "unchanged"
    assert v[("b", "throughput")] == v[("b", "latency_p99")] == v[("b", "latency_p50")] == "unchanged"
    assert v[("c", "latency_p99")] == "improved" and v[("c", "throughput")] == "unchanged"


@pytest.mark.parametrize("n_old,n_new", [(1, 1), (2, 2), (3, 3), (1, 2), (2, 5)])
def test_too_little_data_is_undecided_even_for_a_huge_shift(n_old, n_new):
    old = _report([_result("a", [10.0] * n_old, [100.0] * n_old)])
    new = _report([_result("a", [1.0] * n_new, [1000.0] * n_new)])
    cmp = baseline.compare(old, new, 5)
    assert {c.status for c in cmp.changes} == {"undecided"}
    assert "too few samples" in cmp.changes[0].judgement.note
    assert not cmp.failed("pass") and cmp.failed("fail")


def test_a_single_sample_baseline_still_compares_with_a_no_noise_band_note():
    old = _report([_result("a", [10.0], [100.0])])  # a baseline recorded before repeats existed
    new = _report([_result("a", _noisy(5, 5), _noisy(100, 5))])
    cmp = baseline.compare(old, new, 5)
    tp = next(c for c in cmp.changes if c.key == "throughput")
    assert tp.status == "regressed" and "no noise band of its own" in tp.judgement.note


def test_a_report_without_repeats_counts_as_one_sample():
    r = _result("a", [10.0], [100.0])
    del r["repeats"]
    assert baseline.samples(r) == [{"throughput_gbps": 10.0, "latency_us.p50": 50.0, "latency_us.p99": 100.0}]


def test_the_threshold_decides_between_regressed_and_unchanged():
    old = _report([_result("a", _noisy(10, 8), _noisy(100, 8))])
    new = _report([_result("a", _noisy(9.2, 8, seed=9), _noisy(100, 8))])  # about -8%
    assert _verdicts(baseline.compare(old, new, {"throughput": 2}))[("a", "throughput")] == "regressed"
    assert _verdicts(baseline.compare(old, new, {"throughput": 20}))[("a", "throughput")] == "unchanged"


def test_verdicts_are_reproducible():
    old = _report([_result("a", _noisy(10, 5, cv=0.2), _noisy(100, 5, cv=0.2))])
    new = _report([_result("a", _noisy(9, 5, cv=0.2, seed=5), _noisy(100, 5, cv=0.2, seed=6))])
    assert baseline.compare(old, new).changes == baseline.compare(old, new).changes


def test_missing_cases_listed_on_both_sides():
    one = _result("a", [1.0] * 3, [1.0] * 3)
    cmp = baseline.compare(_report([one, _result("old-only", [1.0], [1.0])]),
                           _report([one, _result("new-only", [1.0], [1.0])]), 5)
    assert cmp.only_old == ("old-only",) and cmp.only_new == ("new-only",)
    text = baseline.render(cmp)
    assert "old-only" in text and "new-only" in text


def test_change_round_trips_through_json():
    old = _report([_result("a", _noisy(10, 5), _noisy(100, 5))])
    new = _report([_result("a", _noisy(6, 5, seed=1), _noisy(100, 5))])
    for c in baseline.compare(old, new).changes:
        assert baseline.Change.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def _write(path, report) -> str:
    jsonreport.write(path, report)
    return str(path)


def test_compare_command_table_exit_codes_and_json(tmp_path, capsys):
    old = _write(tmp_path / "old.json", _report([_result("a", _noisy(10, 5), _noisy(100, 5))]))
    same = _write(tmp_path / "same.json", _report([_result("a", _noisy(10, 5, seed=11), _noisy(100, 5, seed=12))]))
    bad = _write(tmp_path / "bad.json", _report([_result("a", _noisy(6, 5, seed=1), _noisy(100, 5))]))
    assert main(["compare", old, same]) == 0
    assert main(["compare", old, bad, "--max-regression", "throughput=5,latency_p99=10"]) == 1
    out = capsys.readouterr().out
    assert "baseline median [95% CI]" in out and "REGRESSED" in out and "1 regression(s)" in out
    assert "environment: no difference from the baseline" in out
    assert main(["compare", old, bad, "--max-regression", "90"]) == 0  # within a 90% allowance
    capsys.readouterr()
    assert main(["compare", old, bad, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    tp = next(c for c in data["changes"] if c["metric"] == "throughput")
    assert tp["verdict"] == "regressed" and tp["baseline"]["n"] == 5 and len(tp["change_ci_pct"]) == 2
    assert data["exit"] == 1 and data["counts"]["regressed"] == 1


def test_compare_undecided_fails_only_when_asked(tmp_path, capsys):
    old = _write(tmp_path / "old.json", _report([_result("a", [10.0, 10.0], [100.0, 100.0])]))
    new = _write(tmp_path / "new.json", _report([_result("a", [5.0, 5.0], [100.0, 100.0])]))
    assert main(["compare", old, new]) == 0
    assert main(["compare", old, new, "--undecided", "fail"]) == 1
    assert "UNDECIDED" in capsys.readouterr().out


def test_compare_prints_environment_changes_and_warns_on_a_different_pair(tmp_path, capsys):
    old = _write(tmp_path / "old.json", _report([_result("a", [10.0] * 5, [100.0] * 5)]))
    new = _write(tmp_path / "new.json", _report([_result("a", [10.0] * 5, [100.0] * 5, pair="netns:999-0")],
                                                kernel="6.19", fabric="netns"))
    assert main(["compare", old, new]) == 0
    out = capsys.readouterr().out
    env_part, verdicts = out.split("case ", 1)  # the environment comes above the verdicts
    assert "kernel: 6.18 -> 6.19" in env_part
    assert "WARNING: fabric: local -> netns" in env_part and "WARNING: pairs: local -> netns" in env_part


def test_compare_warns_about_a_single_sample_baseline(tmp_path, capsys):
    one = _result("a", [10.0], [100.0])
    old = _write(tmp_path / "old.json", _report([one]))
    new = _write(tmp_path / "new.json", _report([_result("a", [10.0] * 5, [100.0] * 5)]))
    assert main(["compare", old, new]) == 0
    assert "single sample on one side" in capsys.readouterr().out


@pytest.mark.parametrize("value,expected", [("nan", "finite"), ("-3", "finite"), ("inf", "finite"),
                                            ("bogus=3", "unknown metric"), ("throughput=", "expected a percentage")])
def test_compare_refuses_bad_thresholds(tmp_path, capsys, value, expected):
    old = _write(tmp_path / "old.json", _report([_result("a", [10.0], [100.0])]))
    assert main(["compare", old, old, "--max-regression", value]) == 2
    err = capsys.readouterr().err
    assert "--max-regression" in err and expected in err and "Traceback" not in err


def test_compare_rejects_a_file_that_is_not_a_report(tmp_path, capsys):
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"results": []}))
    assert main(["compare", str(junk), str(junk)]) == 2
    err = capsys.readouterr().err
    assert "junk.json" in err and "required" in err and "Traceback" not in err


def _netns_report(pid: int, firmware: str) -> dict:
    """A netns run's environment as the agents' probes record it: `interfaces` is the list of names
    present, the NIC's facts are under `nic`; host keys carry the run's namespace tag."""
    host = {"kernel": "6.18", "interfaces": ["kvf-d0", "lo"],
            "nic": {"name": "kvf-d0", "driver": "veth", "driver_version": "1.0", "firmware": firmware, "mtu": 9000,
                    "offloads": {"gro": "off"}}}
    return {"session": {"fabric": "netns"}, "results": [{"case": "c", "pair": f"netns:{pid}-0"}],
            "environment": {"kernel": "6.18", "hosts": {f"netns:{pid}-0/decode": host}}}


def test_environment_diff_reads_host_nics_and_ignores_the_runs_namespace_tag():
    from pytest_kvfabric.report.fpdiff import diff

    assert diff(_netns_report(111, "1.0"), _netns_report(222, "1.0")) == []  # only the pid differs
    changed = diff(_netns_report(111, "1.0"), _netns_report(222, "2.0"))
    assert [(d.what, d.old, d.new) for d in changed] == [("host netns/decode.nic[0].firmware", "1.0", "2.0")]
