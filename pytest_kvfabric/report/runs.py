"""What the HTML report draws from (pure): recorded JSON in, flat case records out.

Three kinds of JSON are accepted, told apart by their shape:
- a pytest session report (`--kv-json`, format `pytest-kvfabric-report`): many cases;
- a `kvfabric run --json` Result: one case;
- a `kvfabric sweep --json` report (format `pytest-kvfabric-sweep`): points per transport and size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ProfileError
from ..measure.metrics import lookup

SESSION_FORMAT = "pytest-kvfabric-report"
SWEEP_FORMAT = "pytest-kvfabric-sweep"


@dataclass
class Run:
    """One input file, normalized."""
    label: str
    kind: str  # "session" | "run" | "sweep"
    created: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    session: dict[str, Any] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[str, Any] | None = None


def kind_of(data: Any) -> str | None:
    if not isinstance(data, Mapping):
        return None
    if data.get("format") == SESSION_FORMAT:
        return "session"
    if data.get("format") == SWEEP_FORMAT:
        return "sweep"
    if {"scenario", "transport", "throughput_gbps", "integrity"} <= set(data):
        return "run"
    return None


def normalize(data: Any, label: str, source: str) -> Run:
    """A Run from one loaded JSON document; ProfileError (file, reason) when it is none of the three."""
    kind = kind_of(data)
    if kind is None:
        raise ProfileError(source, "(top level)", "not a kvfabric report: expected a pytest --kv-json report, "
                           "a `kvfabric run --json` result or a `kvfabric sweep --json` report")
    if kind == "session":
        cases = [_case(r, label) for r in data.get("results") or ()]
        return Run(label, kind, data.get("created"), dict(data.get("environment") or {}),
                   dict(data.get("session") or {}), cases)
    if kind == "run":
        outcome = "passed" if not (data.get("integrity") or {}).get("errors") else "failed"
        case = {"case": f"{data['scenario']}[{data.get('model')}-{data['transport']}]", "scenario": data["scenario"],
                "model": data.get("model"), "transport": data["transport"], "pair": data.get("pair"),
                "outcome": outcome, "metrics": dict(data), "verdicts": [], "reason": None}
        return Run(label, kind, None, {}, {}, [_case(case, label)])
    sweep = dict(data)
    return Run(label, kind, data.get("created"), dict(data.get("environment") or {}), {}, [], sweep)


def _case(r: Mapping[str, Any], label: str) -> dict[str, Any]:
    c = dict(r)
    c.setdefault("case", c.get("nodeid", "?"))
    c["run"] = label
    c.setdefault("metrics", None)
    c.setdefault("verdicts", [])
    return c


def all_cases(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Every case of every run; with more than one run the label says which run it came from."""
    many = sum(1 for r in runs if r.cases) > 1
    out = []
    for run in runs:
        for c in run.cases:
            out.append({**c, "label": f"{run.label}: {c['case']}" if many else c["case"]})
    return out


def measured(cases: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Cases that ran and have figures."""
    return [c for c in cases if c.get("metrics") and c["metrics"].get("throughput_gbps") is not None]


def get(metrics: Mapping[str, Any] | None, path: str) -> float | None:
    """A number at a dotted path ('latency_us.p99'), None when absent (measure/metrics.lookup)."""
    try:
        return float(lookup(metrics, path))
    except (TypeError, ValueError):
        return None


def samples(case: Mapping[str, Any], path: str) -> list[float]:
    """Per-repeat values of one metric where the case was repeated (`--kv-repeat`), else [].

    Repeats may be recorded as a list of per-repeat metric dicts under `samples` or `repeats`
    (on the case or inside its metrics); whichever is present is read."""
    m = case.get("metrics") or {}
    for holder in (case, m):
        for key in ("samples", "repeats"):
            seq = holder.get(key) if isinstance(holder, Mapping) else None
            if isinstance(seq, Sequence) and seq and all(isinstance(s, Mapping) for s in seq):
                vals = [get(s.get("metrics", s), path) for s in seq]
                return [v for v in vals if v is not None]
    return []


def transports(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for c in cases:
        if c.get("transport"):
            seen[str(c["transport"])] = None
    return sorted(seen)


def failed_verdicts(case: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [v for v in case.get("verdicts") or () if not v.get("passed")]
