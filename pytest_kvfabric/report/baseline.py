"""Baseline comparison (pure): did throughput or latency regress more than N% per case?"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# (metric path in a result's metrics, human name, True if higher is better)
COMPARED = (
    ("throughput_gbps", "throughput Gb/s", True),
    ("latency_us.p50", "latency p50 µs", False),
    ("latency_us.p99", "latency p99 µs", False),
)


def _get(metrics: Mapping[str, Any], path: str) -> float | None:
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, Mapping) or node.get(part) is None:
            return None
        node = node[part]
    return float(node)


@dataclass(frozen=True)
class Change:
    case: str
    metric: str
    old: float
    new: float
    change_pct: float  # signed: positive = worse
    regressed: bool


@dataclass(frozen=True)
class Comparison:
    changes: tuple[Change, ...]
    only_old: tuple[str, ...]  # cases in the baseline but not in this run
    only_new: tuple[str, ...]

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.regressed)

    def for_case(self, case: str) -> list[Change]:
        return [c for c in self.changes if c.case == case]


def case_metrics(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """case id -> metrics for every result of a JSON report that has metrics."""
    return {r["case"]: r["metrics"] for r in report.get("results", []) if r.get("metrics")}


def compare_metrics(case: str, old: Mapping[str, Any], new: Mapping[str, Any], max_regression_pct: float) -> list[Change]:
    out = []
    for path, name, higher_better in COMPARED:
        o, n = _get(old, path), _get(new, path)
        if o is None or n is None or o == 0:
            continue
        worse = (o - n) / o * 100 if higher_better else (n - o) / o * 100
        out.append(Change(case, name, o, n, worse, worse > max_regression_pct))
    return out


def compare(old_report: Mapping[str, Any], new_report: Mapping[str, Any], max_regression_pct: float) -> Comparison:
    old, new = case_metrics(old_report), case_metrics(new_report)
    changes: list[Change] = []
    for case in sorted(set(old) & set(new)):
        changes += compare_metrics(case, old[case], new[case], max_regression_pct)
    return Comparison(tuple(changes), tuple(sorted(set(old) - set(new))), tuple(sorted(set(new) - set(old))))


def render(cmp: Comparison, max_regression_pct: float) -> str:
    from tabulate import tabulate

    rows = [
        (c.case, c.metric, f"{c.old:.4g}", f"{c.new:.4g}", f"{c.change_pct:+.1f}%",
         "REGRESSED" if c.regressed else "ok")
        for c in cmp.changes
    ]
    lines = [tabulate(rows, headers=["case", "metric", "baseline", "now", "worse by", "verdict"])] if rows else []
    lines.append(_missing("in the baseline but not in this run", cmp.only_old))
    lines.append(_missing("in this run but not in the baseline", cmp.only_new))
    n = len(cmp.regressions)
    lines.append(f"{n} regression(s) over {max_regression_pct:g}%" if n else f"no regression over {max_regression_pct:g}%")
    return "\n".join(line for line in lines if line)


def _missing(what: str, cases: Iterable[str]) -> str:
    cases = list(cases)
    return f"{len(cases)} case(s) {what}: {', '.join(cases)}" if cases else ""
