"""A baseline recorded as several sessions: the two-level verdict (pure, Hypothesis and simulation),
`kvfabric compare OLD... NEW`, and timings not judged under TCG."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.cli import main
from pytest_kvfabric.report import baseline, jsonreport, verdict
from pytest_kvfabric.report.gate_metrics import BY_KEY, GATED
from pytest_kvfabric.report.verdict import SINGLE_SESSION_NOTE, judge, judge_sessions

TPUT = BY_KEY["throughput"]
KEYS = st.sampled_from(sorted(BY_KEY))
PCT = st.floats(min_value=0, max_value=100, allow_nan=False)
REPEATS = st.lists(st.floats(min_value=0.1, max_value=1e6, allow_nan=False), min_size=1, max_size=8)


@pytest.fixture
def fast(monkeypatch):
    """Fewer resamples for the many-trial simulations: the rate is a property of the method."""
    monkeypatch.setattr(verdict, "SESSION_RESAMPLES", 2000)


def _session(rng: np.random.Generator, center: float, between: float, within: float, n: int) -> list[float]:
    """One session: a multiplicative session effect (a neighbour's load that minute), then repeats."""
    return list(center * rng.lognormal(0, between) * rng.lognormal(0, within, n))


@settings(max_examples=40, deadline=None)
@given(REPEATS, st.integers(2, 5), KEYS, PCT)
def test_sessions_that_all_match_the_current_run_are_never_a_change(xs, k, key, pct):
    j = judge_sessions(BY_KEY[key], [list(xs)] * k, list(xs), pct, seed=2)
    assert j.status in ("unchanged", "undecided") and j.base_sessions == k


@settings(max_examples=40, deadline=None)
@given(st.lists(REPEATS, min_size=2, max_size=4), REPEATS, KEYS, PCT, PCT)
def test_a_larger_threshold_never_turns_a_session_verdict_into_regressed(base, cur, key, t1, t2):
    lo_t, hi_t = sorted((t1, t2))
    strict = judge_sessions(BY_KEY[key], base, cur, lo_t, seed=4)
    loose = judge_sessions(BY_KEY[key], base, cur, hi_t, seed=4)
    assert strict.n_base == sum(map(len, base)) and strict.base_sessions == len(base)
    if strict.status != "regressed":
        assert loose.status != "regressed"
    if strict.status == "unchanged":
        assert loose.status == "unchanged"


@settings(max_examples=30, deadline=None)
@given(REPEATS, REPEATS, KEYS, PCT)
def test_one_baseline_session_is_the_one_session_verdict_with_a_warning(a, b, key, pct):
    one, plain = judge_sessions(BY_KEY[key], [a], b, pct, seed=5), judge(BY_KEY[key], a, b, pct, seed=5)
    assert (one.status, one.change_pct, one.ci_pct) == (plain.status, plain.change_pct, plain.ci_pct)
    assert SINGLE_SESSION_NOTE in one.note and one.base_sessions == 1


@pytest.mark.parametrize("k,threshold", [(3, 5.0), (3, 0.0), (5, 0.0)])
def test_false_alarm_rate_with_a_large_session_spread_stays_low_where_one_session_cries_wolf(fast, k, threshold):
    """Identical systems whose sessions differ by 20% (repeats by 5%), as on a busy shared host:
    the two-level verdict alarms in under 2% of 300 trials even at threshold 0; judging the
    same data by one baseline session alone alarms in over 20% (the cause of the bench's alarms)."""
    rng = np.random.default_rng(20261206 + k)
    alarms = one_session = 0
    for i in range(300):
        base = [_session(rng, 10, 0.2, 0.05, 5) for _ in range(k)]
        cur = _session(rng, 10, 0.2, 0.05, 5)
        alarms += judge_sessions(TPUT, base, cur, threshold, seed=i).status == "regressed"
        one_session += judge(TPUT, base[0], cur, threshold, seed=i).status == "regressed"
    assert alarms <= 6
    assert one_session >= 60


@pytest.mark.parametrize("k,shift,at_least", [(5, 0.40, 0.95), (3, 0.60, 0.95)])
def test_a_large_shift_is_detected_despite_session_noise(fast, k, shift, at_least):
    """4% session and 4% repeat spread (the netns pair of BENCHMARKS.md), 5 repeats, threshold 5%."""
    rng = np.random.default_rng(7 + k)
    found = sum(judge_sessions(TPUT, [_session(rng, 10, 0.04, 0.04, 5) for _ in range(k)],
                               _session(rng, 10 * (1 - shift), 0.04, 0.04, 5), 5.0, seed=i).status == "regressed"
                for i in range(100))
    assert found >= 100 * at_least


def test_more_sessions_decide_more_often_than_fewer(fast):
    rng = np.random.default_rng(11)
    found = {3: 0, 5: 0}
    for i in range(100):
        sessions = [_session(rng, 10, 0.04, 0.04, 5) for _ in range(5)]
        cur = _session(rng, 6, 0.04, 0.04, 5)
        for k in found:
            found[k] += judge_sessions(TPUT, sessions[:k], cur, 5.0, seed=i).status == "regressed"
    assert found[5] > found[3]


def test_zero_and_negative_figures_are_judged_without_logarithms():
    j = judge_sessions(BY_KEY["retransmits"], [[0, 0, 0], [0, 0, 0]], [0, 0, 0], 50.0)
    assert j.status == "unchanged"
    j = judge_sessions(BY_KEY["retransmits"], [[0, 1, 0], [2, 0, 1]], [5000, 6000, 5500], 50.0)
    assert j.status == "regressed" and j.change_pct > 1000


# --- reports: several sessions, TCG, the compare command ---------------------------------------


def _result(case: str, gbps: list[float], retrans: list[float] | None = None) -> dict:
    reps = [{"throughput_gbps": g, "latency_us.p99": 1000 / g} for g in gbps]
    for r, x in zip(reps, retrans or ()):
        r["retransmits"] = x
    return {"case": case, "nodeid": f"t::{case}", "outcome": "passed", "pair": "local",
            "metrics": {"throughput_gbps": float(np.median(gbps))}, "repeats": reps}


def _report(results: list[dict], virtualized: str | None = None) -> dict:
    env = {"kernel": "6.18", "cpu_model": "x", "python": "3.11", "packages": {}, "interfaces": []}
    if virtualized:
        env["virtualized"] = virtualized
    session = {"transports": ["tcp"], "models": ["m"], "gpu": "h100", "fabric": "local", "exitstatus": 0}
    return jsonreport.build(session, env, results)


def _sessions(centers: list[float], n: int = 5) -> list[dict]:
    rng = np.random.default_rng(3)
    return [_report([_result("a", list(c * rng.lognormal(0, 0.02, n)))]) for c in centers]


def test_compare_takes_several_baseline_reports_as_sessions_and_round_trips():
    olds = _sessions([10.0, 10.4, 9.7])
    cmp = baseline.compare(olds, _report([_result("a", [6.0, 6.1, 5.9, 6.0, 6.05])]))
    tp = next(c for c in cmp.changes if c.key == "throughput")
    assert tp.status == "regressed" and tp.judgement.base_sessions == 3 and tp.judgement.n_base == 15
    assert "in 3 sessions" in baseline.render(cmp)
    for c in cmp.changes:
        assert baseline.Change.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_under_tcg_timings_are_undecided_not_judged_and_counts_still_are():
    old = _report([_result("a", [10.0] * 5, [0] * 5)], virtualized="tcg")
    new = _report([_result("a", [1.0] * 5, [9000] * 5)])
    by_key = {c.key: c for c in baseline.compare(old, new).changes}
    assert by_key["throughput"].status == "undecided" and by_key["throughput"].judgement.note == baseline.TCG_NOTE
    assert by_key["latency_p99"].status == "undecided"
    assert by_key["retransmits"].status == "regressed"  # a count, not a timing
    assert {m.key for m in GATED if not m.timing} == {"retransmits"}


def _write(path, report) -> str:
    jsonreport.write(path, report)
    return str(path)


def test_compare_command_with_several_baselines_says_so_and_keeps_its_exit_codes(tmp_path, capsys):
    olds = [_write(tmp_path / f"b{i}.json", r) for i, r in enumerate(_sessions([10.0, 10.4, 9.7]))]
    bad = _write(tmp_path / "bad.json", _report([_result("a", [6.0, 6.1, 5.9, 6.0, 6.05])]))
    same = _write(tmp_path / "same.json", _sessions([10.1])[0])
    assert main(["compare", *olds, same]) == 0
    out = capsys.readouterr().out
    assert "baseline: 3 sessions" in out and "WARNING: the baseline is one session" not in out
    assert main(["compare", *olds, bad, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["baseline_sessions"] == 3 and data["timings_judged"] is True
    tp = next(c for c in data["changes"] if c["metric"] == "throughput")
    assert tp["baseline"]["sessions"] == 3 and tp["verdict"] == "regressed"
    assert main(["compare", olds[0], same]) == 0
    assert "WARNING: the baseline is one session" in capsys.readouterr().out


def test_compare_command_under_tcg_does_not_fail_on_timings(tmp_path, capsys):
    old = _write(tmp_path / "old.json", _report([_result("a", [10.0] * 5)], virtualized="tcg"))
    new = _write(tmp_path / "new.json", _report([_result("a", [1.0] * 5)]))
    assert main(["compare", old, new]) == 0
    out = capsys.readouterr().out
    assert "timing verdicts are undecided (not judged)" in out and "REGRESSED" not in out
    assert main(["compare", old, new, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["timings_judged"] is False


def test_an_undecided_verdict_says_when_the_sessions_spread_is_the_reason():
    j = judge_sessions(TPUT, [[10.0, 10.1, 9.9], [7.0, 7.1, 6.9], [12.0, 12.1, 11.9]], [8.5, 8.6, 8.4], 5.0)
    assert j.status == "undecided" and "sessions differ by more than the threshold" in j.note
    calm = judge_sessions(TPUT, [[10.0, 10.1, 9.9], [10.02, 10.1, 9.95], [9.98, 10.05, 9.9]], [10.0, 9.9, 10.1], 5.0)
    assert calm.status == "unchanged" and calm.note == ""


def _disturbed_session(rng: np.random.Generator, center: float, n: int) -> list[float]:
    """A session a neighbour's burst disturbed: slower by about 20% and its repeats scattered (15%),
    like round 9 of the netns bench (medians 0.30 vs 0.38-0.40 Gbit/s, interquartile range 10%)."""
    return list(center * 0.8 * rng.lognormal(0, 0.15, n))


def test_a_disturbed_current_session_cannot_decide_a_regression():
    calm = [[10.0, 10.1, 9.9, 10.05, 9.95]] * 3
    shaky = [6.0, 9.0, 4.0, 8.0, 5.0]  # 40% slower on the median, repeats all over the place
    j = judge_sessions(TPUT, calm, shaky, 5.0)
    assert j.status == "undecided" and "current session is disturbed" in j.note
    far = judge_sessions(TPUT, calm, [1.0, 1.5, 0.6, 1.3, 0.8], 5.0)  # 90% slower: beyond what scatter explains
    assert far.status == "regressed"
    steady = [6.0, 6.05, 5.95, 6.02, 5.98]  # the same drop, repeats together: a real change
    assert judge_sessions(TPUT, calm, steady, 5.0).status == "regressed"


def test_a_calm_baseline_leaves_its_disturbed_session_out_and_says_so():
    calm = [[10.0, 10.1, 9.9, 10.05, 9.95], [10.2, 10.1, 10.3, 10.15, 10.25], [9.9, 9.8, 10.0, 9.85, 9.95],
            [10.1, 10.0, 10.2, 10.05, 10.15]]
    shaky = [8.0, 6.0, 9.5, 7.0, 9.9]
    cur = [6.0, 6.05, 5.95, 6.02, 5.98]
    with_shaky = judge_sessions(TPUT, [*calm, shaky], cur, 5.0)
    assert with_shaky.status == "regressed" and "1 of 5 baseline sessions left out as disturbed" in with_shaky.note
    assert with_shaky.base_sessions == 5 and with_shaky.n_base == 25


def test_a_noisy_baseline_leaves_no_session_out():
    """Where every session scatters (loopback on a busy host), a slow scattered session is as
    likely as any: it stays in, so the band keeps the slowness that pair showed."""
    rng = np.random.default_rng(3)
    noisy = [list(10 * rng.lognormal(0, 0.3, 5)) for _ in range(4)] + [list(3 * rng.lognormal(0, 1.0, 5))]
    j = judge_sessions(TPUT, noisy, list(3 * rng.lognormal(0, 0.3, 5)), 5.0)
    assert "left out" not in j.note and j.status != "regressed"


@pytest.mark.parametrize("k", [5])
def test_one_disturbed_baseline_session_no_longer_hides_a_large_regression(fast, monkeypatch, k):
    """Calm sessions (4% apart, 3% repeats) with one disturbed among the baseline's five, as on the
    netns bench: the 40% drop is decided in most trials; with the rule off, in a third of them."""
    def trials(seed: int) -> int:
        rng = np.random.default_rng(seed)
        found = 0
        for i in range(60):
            base = [_session(rng, 10, 0.04, 0.03, 5) for _ in range(k - 1)] + [_disturbed_session(rng, 10, 5)]
            found += judge_sessions(TPUT, base, _session(rng, 6, 0.04, 0.03, 5), 5.0, seed=i).status == "regressed"
        return found
    with_rule = trials(99)
    monkeypatch.setattr(verdict, "DISTURBED_FACTOR", float("inf"))
    without = trials(99)
    assert with_rule >= 45 and without <= with_rule - 20  # measured: 50 and 20 of 60


def test_disturbed_sessions_on_both_sides_do_not_raise_false_alarms(fast):
    """Identical systems; every session, baseline or current, disturbed with chance 1 in 5."""
    rng = np.random.default_rng(20261207)
    def one() -> list[float]:
        return _disturbed_session(rng, 10, 5) if rng.random() < 0.2 else _session(rng, 10, 0.04, 0.03, 5)
    alarms = sum(judge_sessions(TPUT, [one() for _ in range(5)], one(), 5.0, seed=i).status == "regressed"
                 for i in range(300))
    assert alarms <= 6
