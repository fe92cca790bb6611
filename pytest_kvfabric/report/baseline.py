"""Baseline gate (pure): per case and gated metric, a statistical verdict from every repeat on
both sides (report/verdict.py), against per-metric thresholds (report/gate_metrics.py).

A report's result keeps its repeats' figures under "repeats" (a list of {metric path: value});
a report from before repeats existed, or a run with one repeat, counts as one sample. A
baseline may be several reports, one per session (`--kv-baseline a.json,b.json,c.json`): each
is a session of the two-level verdict (verdict.judge_sessions).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from ..measure.metrics import BUILTIN, MetricSet
from .gate_metrics import BY_KEY, figures, parse_thresholds
from .fpdiff import ran_under_tcg
from .verdict import Judgement, judge_sessions, seed_for

TCG_NOTE = "a side ran under TCG (software emulation): timings not judged"

UNDECIDED_POLICIES = ("pass", "fail")


@dataclass(frozen=True)
class Change:
    """One metric of one case: the verdict and the figures it was drawn from."""
    case: str
    key: str
    threshold_pct: float
    judgement: Judgement
    label: str = ""  # the metric's label when it is not a built-in one (a plug-in's)

    @property
    def metric(self) -> str:
        return self.label or (BY_KEY[self.key].label if self.key in BY_KEY else self.key)

    @property
    def status(self) -> str:
        return self.judgement.status

    @property
    def old(self) -> float:
        return self.judgement.base_median

    @property
    def new(self) -> float:
        return self.judgement.cur_median

    @property
    def change_pct(self) -> float | None:
        return self.judgement.change_pct

    @property
    def regressed(self) -> bool:
        return self.status == "regressed"

    @property
    def undecided(self) -> bool:
        return self.status == "undecided"

    def to_dict(self) -> dict[str, Any]:
        j = self.judgement
        return {"case": self.case, "metric": self.key, "label": self.metric, "verdict": j.status,
                "threshold_pct": self.threshold_pct, "change_pct": j.change_pct,
                "change_ci_pct": list(j.ci_pct) if j.ci_pct else None,
                "baseline": {"median": j.base_median, "ci": list(j.base_ci), "n": j.n_base,
                             "sessions": j.base_sessions},
                "current": {"median": j.cur_median, "ci": list(j.cur_ci), "n": j.n_cur},
                "note": j.note}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Change:
        b, c = d["baseline"], d["current"]
        ci = d.get("change_ci_pct")
        j = Judgement(d["verdict"], d.get("change_pct"), tuple(ci) if ci else None, b["median"], tuple(b["ci"]),
                      c["median"], tuple(c["ci"]), b["n"], c["n"], d.get("note") or "", int(b.get("sessions", 1)))
        return cls(d["case"], d["metric"], float(d["threshold_pct"]), j,
                   "" if d["metric"] in BY_KEY else str(d.get("label") or ""))


@dataclass(frozen=True)
class Comparison:
    changes: tuple[Change, ...]
    only_old: tuple[str, ...]  # cases in the baseline but not in this run
    only_new: tuple[str, ...]
    # (case, reason): measured in the baseline, skipped now because something is missing (a
    # transport whose probe fails): the gate cannot vouch for it, so it fails.
    unavailable: tuple[tuple[str, str], ...] = ()

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.regressed)

    @property
    def undecided(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.undecided)

    def failed(self, undecided: str = "pass") -> bool:
        return bool(self.regressions or self.unavailable or (undecided == "fail" and self.undecided))


def samples(result: Mapping[str, Any], metrics: MetricSet | None = None) -> list[dict[str, float]]:
    """The repeats' figures of one result (one sample when the report predates repeats)."""
    reps = result.get("repeats")
    if reps:
        return [dict(r) for r in reps]
    return [figures(result.get("metrics"), metrics)] if result.get("metrics") else []


def case_samples(report: Mapping[str, Any], metrics: MetricSet | None = None) -> dict[str, list[dict[str, float]]]:
    """case id -> its samples, for every result of a JSON report that has metrics."""
    out = {}
    for r in report.get("results", []):
        s = samples(r, metrics)
        if s:
            out[r["case"]] = s
    return out


Sessions = list[list[dict[str, float]]]  # one case's baseline: each session's repeats' figures


def case_sessions(reports: Sequence[Mapping[str, Any]], metrics: MetricSet | None = None) -> dict[str, Sessions]:
    """case id -> its samples in each report (session) that measured it, in the reports' order."""
    out: dict[str, Sessions] = {}
    for report in reports:
        for case, s in case_samples(report, metrics).items():
            out.setdefault(case, []).append(s)
    return out


def case_metrics(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """case id -> metrics (medians over repeats) of every result that has metrics."""
    return {r["case"]: r["metrics"] for r in report.get("results", []) if r.get("metrics")}


def _thresholds(thresholds: Mapping[str, float] | float | str | None, metrics: MetricSet | None) -> dict[str, float]:
    if isinstance(thresholds, Mapping):
        return {**parse_thresholds(None, metrics=metrics), **thresholds}
    return parse_thresholds(None if thresholds is None else str(thresholds), metrics=metrics)


def compare_samples(case: str, old: Sequence[Mapping[str, float]] | Sessions, new: Sequence[Mapping[str, float]],
                    thresholds: Mapping[str, float] | float | str | None = None,
                    metrics: MetricSet | None = None, tcg: bool = False) -> list[Change]:
    """Verdicts for every gated metric both sides measured. `old`: one session's samples, or a
    list of sessions (several baseline reports); `tcg`: a side ran under software emulation, so
    timing metrics are undecided (said in the note), not judged."""
    limits = _thresholds(thresholds, metrics)
    sessions = [list(s) for s in old] if old and not isinstance(old[0], Mapping) else [list(old)]
    out = []
    for m in (metrics or BUILTIN).gated:
        a = [[s[m.path] for s in sess if s.get(m.path) is not None] for sess in sessions]
        a = [x for x in a if x]
        b = [s[m.path] for s in new if s.get(m.path) is not None]
        if not (a and b):
            continue
        j = judge_sessions(m, a, b, limits[m.key], seed_for(case, m.key))
        if tcg and m.timing:
            j = replace(j, status="undecided", note=TCG_NOTE)
        label = "" if m.key in BY_KEY else m.label
        out.append(Change(case, m.key, limits[m.key], j, label))
    return out


def compare(old_report: Mapping[str, Any] | Sequence[Mapping[str, Any]], new_report: Mapping[str, Any],
            thresholds: Mapping[str, float] | float | str | None = None) -> Comparison:
    """`old_report`: one report, or several (the baseline's sessions)."""
    olds = [old_report] if isinstance(old_report, Mapping) else list(old_report)
    old, new = case_sessions(olds), case_samples(new_report)
    tcg = ran_under_tcg(*olds, new_report)
    changes: list[Change] = []
    for case in sorted(set(old) & set(new)):
        changes += compare_samples(case, old[case], new[case], thresholds, tcg=tcg)
    gone = {r["case"]: r.get("reason") or "skipped" for r in new_report.get("results", [])
            if r["case"] in old and not r.get("metrics") and (r.get("outcome") == "skipped" or r.get("unavailable"))}
    return Comparison(tuple(changes), tuple(sorted(set(old) - set(new) - set(gone))),
                      tuple(sorted(set(new) - set(old))), tuple(sorted(gone.items())))


def _fig(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _with_ci(median: float, ci: Sequence[float], n: int, sessions: int = 1) -> str:
    if n < 2:
        return f"{_fig(median)} (n=1)"
    per = f" in {sessions} sessions" if sessions > 1 else ""
    return f"{_fig(median)} [{_fig(ci[0])}, {_fig(ci[1])}] n={n}{per}"


def rows(changes: Iterable[Change]) -> list[tuple[str, ...]]:
    out = []
    for c in changes:
        j = c.judgement
        change = "-" if j.change_pct is None else f"{j.change_pct:+.1f}%"
        if j.ci_pct:
            change += f" [{j.ci_pct[0]:+.1f}, {j.ci_pct[1]:+.1f}]"
        out.append((c.case, c.metric, _with_ci(j.base_median, j.base_ci, j.n_base, j.base_sessions),
                    _with_ci(j.cur_median, j.cur_ci, j.n_cur), change, f"{c.threshold_pct:g}%",
                    j.status.upper() if j.status in ("regressed", "undecided") else j.status))
    return out


HEADERS = ["case", "metric", "baseline median [95% CI]", "current median [95% CI]",
           "worse by [95% CI]", "allowed", "verdict"]


def render_changes(changes: Sequence[Change]) -> str:
    from tabulate import tabulate

    if not changes:
        return ""
    lines = [tabulate(rows(changes), headers=HEADERS)]
    notes = sorted({c.judgement.note for c in changes if c.judgement.note})
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def summary_line(cmp: Comparison) -> str:
    counts = {s: sum(1 for c in cmp.changes if c.status == s) for s in ("regressed", "undecided", "improved", "unchanged")}
    text = ", ".join(f"{n} {s}" for s, n in counts.items())
    n = len(cmp.regressions)
    head = f"{n} regression(s) beyond the threshold" if n else "no regression beyond the threshold"
    if cmp.unavailable:
        head += f", {len(cmp.unavailable)} case(s) unavailable since the baseline"
    return f"{head} ({text}; metric verdicts over {len({c.case for c in cmp.changes})} case(s))"


def render(cmp: Comparison, thresholds: Any = None) -> str:
    lines = [render_changes(cmp.changes)]
    lines += [f"FAILED {case}: unavailable since the baseline: {reason}" for case, reason in cmp.unavailable]
    lines.append(_missing("in the baseline but not in this run", cmp.only_old))
    lines.append(_missing("in this run but not in the baseline", cmp.only_new))
    lines.append(summary_line(cmp))
    return "\n".join(line for line in lines if line)


def to_json(cmp: Comparison) -> dict[str, Any]:
    return {"changes": [c.to_dict() for c in cmp.changes], "only_baseline": list(cmp.only_old),
            "unavailable_since_baseline": [{"case": c, "reason": r} for c, r in cmp.unavailable],
            "only_current": list(cmp.only_new),
            "counts": {s: sum(1 for c in cmp.changes if c.status == s) for s in ("regressed", "undecided", "improved", "unchanged")}}


def sessions_line(reports: Sequence[Mapping[str, Any]]) -> str:
    """How many sessions the baseline holds, and what that means for the verdicts."""
    if len(reports) > 1:
        return (f"baseline: {len(reports)} sessions (two-level verdict: the spread between sessions "
                "is part of every interval)")
    return ("WARNING: the baseline is one session: the verdicts cannot see the spread between sessions, "
            "so a busy neighbour can pass for a regression; record it as 5 sessions "
            "(--kv-baseline a.json,b.json,...; README, gating an upgrade)")


def _missing(what: str, cases: Iterable[str]) -> str:
    cases = list(cases)
    return f"{len(cases)} case(s) {what}: {', '.join(cases)}" if cases else ""


__all__ = ["Change", "Comparison", "compare", "compare_samples", "case_samples", "case_sessions", "case_metrics",
           "samples", "sessions_line", "TCG_NOTE",
           "render", "render_changes", "summary_line", "to_json", "UNDECIDED_POLICIES"]
