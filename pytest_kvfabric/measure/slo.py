"""SLO specs and checks (pure). A check returns a Verdict; a failure message comes from its fields.

Every SLO key is declared on its metric (measure/metrics.py: `slo=`), with the metric's name,
unit and direction; thresholds are read from a Result's dict form (result.to_dict()). The keys
are the user-facing ones accepted in suites, `--kv-slo KEY=VALUE` and `@pytest.mark.kv_slo(...)`.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ProfileError
from .metrics import BUILTIN, Metric, MetricSet, lookup

SLO_KEYS: dict[str, Metric] = BUILTIN.slo_keys
# Thresholds on time (latency, rate, CPU per byte): not judged inside an emulated VM (lab/env.py),
# where every instruction is 10-50x slower; integrity and zero-copy still are.
TIMING_KEYS = BUILTIN.timing_slo_keys
# Parameters that are not thresholds themselves but shape one (ttft budget is used by the runner).
SLO_PARAMS = {"ttft_budget_ms": "emulated TTFT budget per request (ms), for min_ttft_met_fraction"}
VALID_KEYS = sorted([*SLO_KEYS, *SLO_PARAMS])


def valid_keys(metrics: MetricSet | None = None) -> list[str]:
    return sorted([*(metrics or BUILTIN).slo_keys, *SLO_PARAMS])


def _zero_copy_reason(m: Mapping[str, Any]) -> str:
    for side in ("sender", "receiver"):
        dp = lookup(m, f"data_path.{side}")
        if isinstance(dp, Mapping) and dp.get("zero_copy") is False:
            return f"{side}: {dp.get('description', 'data path copied')}"
    return "no side reported a zero-copy data path"


@dataclass(frozen=True)
class Verdict:
    key: str
    metric: str
    measured: Any
    threshold: Any
    passed: bool
    note: str = ""
    judged: bool = True  # False: measured and shown, but not held against the threshold (TCG)
    kind: str = ""  # the metric's sense (max, min, bool) and unit, for the threshold column
    unit: str = ""

    @property
    def row(self) -> tuple[str, str, str, str]:
        verdict = "pass" if self.passed else "FAIL"
        return (self.metric, _fmt(self.measured), _fmt_threshold(self), verdict if self.judged else "not judged")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _fmt_threshold(v: Verdict) -> str:
    spec = SLO_KEYS.get(v.key)
    kind, unit = v.kind or (spec.kind if spec else "bool"), v.unit or (spec.unit if spec else "")
    if kind == "bool":
        return "required"
    op = "<=" if kind == "max" else ">="
    return f"{op} {_fmt(v.threshold)} {unit}".rstrip()


def coerce(key: str, value: Any, source: str = "<slo>", metrics: MetricSet | None = None) -> Any:
    """Validate one SLO key/value (from YAML, CLI text or a marker); return the typed value."""
    keys = (metrics or BUILTIN).slo_keys
    if key in SLO_PARAMS:
        spec_kind = "max"
    elif key in keys:
        spec_kind = keys[key].kind
    else:
        raise ProfileError(source, key, f"unknown SLO key; valid: {', '.join(valid_keys(metrics))}")
    if spec_kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ProfileError(source, key, f"expected true/false, got {value!r}")
    if isinstance(value, bool):
        raise ProfileError(source, key, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ProfileError(source, key, f"expected a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):  # inf would gate nothing (max) or fail everything (min)
        raise ProfileError(source, key, f"must be a finite number, got {value!r}")
    if number < 0:
        raise ProfileError(source, key, f"must be >= 0, got {value!r}")
    return number


def parse_assignments(items: list[str], source: str = "--kv-slo", metrics: MetricSet | None = None) -> dict[str, Any]:
    """Parse repeated KEY=VALUE texts."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ProfileError(source, item, "expected KEY=VALUE")
        out[key.strip()] = coerce(key.strip(), value.strip(), source, metrics)
    return out


def check(slo: Mapping[str, Any], metrics: Mapping[str, Any], virtualized: str | None = None,
          metric_set: MetricSet | None = None) -> list[Verdict]:
    """Check every threshold in `slo` against a result dict. Missing measurements fail.
    virtualized="tcg" (the lab under software emulation): timing thresholds are not judged."""
    keys = (metric_set or BUILTIN).slo_keys
    verdicts: list[Verdict] = []
    for key, threshold in slo.items():
        spec = keys.get(key)
        if spec is None:
            continue  # parameters such as ttft_budget_ms
        measured = spec.value(metrics)
        how = {"kind": spec.kind, "unit": spec.unit}
        if virtualized == "tcg" and spec.timing:
            verdicts.append(Verdict(key, spec.name, measured, threshold, True,
                                    "not judged: virtualized: tcg (timings not meaningful)", judged=False, **how))
            continue
        if spec.kind == "bool":
            if not threshold:
                continue
            passed = measured is True
            note = "" if passed else _zero_copy_reason(metrics)
        elif measured is None:
            passed, note = False, "not measured"
        elif spec.kind == "max":
            passed, note = float(measured) <= float(threshold), ""
        else:
            passed, note = float(measured) >= float(threshold), ""
        verdicts.append(Verdict(key, spec.name, measured, threshold, passed, note, **how))
    return verdicts


def failure_table(verdicts: list[Verdict]) -> str:
    """The short table shown when an SLO is missed: metric, measured, threshold, verdict."""
    from tabulate import tabulate

    rows = [v.row for v in verdicts]
    text = tabulate(rows, headers=["metric", "measured", "threshold", "verdict"], tablefmt="simple")
    notes = [f"{v.metric}: {v.note}" for v in verdicts if not v.passed and v.note]
    return text + ("\n" + "\n".join(notes) if notes else "")
