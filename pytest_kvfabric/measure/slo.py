"""SLO specs and checks (pure). A check returns a Verdict; a failure message comes from its fields.

Thresholds are read from a Result's dict form (result.to_dict()): the names below are the
user-facing SLO keys accepted in suites, `--kv-slo KEY=VALUE` and `@pytest.mark.kv_slo(...)`.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import ProfileError


def _get(metrics: Mapping[str, Any], path: str) -> Any:
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _worst_cpu(m: Mapping[str, Any], less_spin: bool) -> float | None:
    """The worst side's CPU per GB, less its busy-waiting (spin_s_per_gb, missing = 0) if asked."""
    values = []
    for side in ("sender", "receiver"):
        cpu = _get(m, f"cpu_s_per_gb.{side}")
        if cpu is not None:
            values.append(cpu - ((_get(m, f"spin_s_per_gb.{side}") or 0.0) if less_spin else 0.0))
    return max(values) if values else None


def _max_cpu(m: Mapping[str, Any]) -> float | None:
    return _worst_cpu(m, less_spin=False)


def _max_work_cpu(m: Mapping[str, Any]) -> float | None:
    return _worst_cpu(m, less_spin=True)


def _zero_copy(m: Mapping[str, Any]) -> bool | None:
    """True only if a side reported a zero-copy data path and no side reported copying."""
    sides = [_get(m, "data_path.sender"), _get(m, "data_path.receiver")]
    flags = [s.get("zero_copy") for s in sides if isinstance(s, Mapping) and s.get("zero_copy") is not None]
    if not flags:
        return None
    return all(flags)


def _zero_copy_reason(m: Mapping[str, Any]) -> str:
    for side in ("sender", "receiver"):
        dp = _get(m, f"data_path.{side}")
        if isinstance(dp, Mapping) and dp.get("zero_copy") is False:
            return f"{side}: {dp.get('description', 'data path copied')}"
    return "no side reported a zero-copy data path"


@dataclass(frozen=True)
class SloKey:
    key: str
    kind: str  # "max" (measured must be <=), "min" (>=), "bool" (must be True when required)
    unit: str
    metric: str  # human name of what is measured
    extract: Callable[[Mapping[str, Any]], Any]
    help: str


def _path(p: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda m: _get(m, p)


SLO_KEYS: dict[str, SloKey] = {
    k.key: k
    for k in (
        SloKey("p99_latency_us", "max", "µs", "latency p99", _path("latency_us.p99"),
               "p99 write latency, post to completion"),
        SloKey("p50_latency_us", "max", "µs", "latency p50", _path("latency_us.p50"),
               "median write latency, post to completion"),
        SloKey("min_throughput_gbps", "min", "Gb/s", "throughput", _path("throughput_gbps"),
               "decimal Gb/s over the transfer window"),
        SloKey("max_exposed_ms", "max", "ms", "exposed p99", _path("exposed_ms.p99"),
               "p99 transfer time after the emulated prefill end (what the network adds to TTFT)"),
        SloKey("max_exposed_fraction", "max", "", "exposed/prefill p99", _path("exposed_fraction.p99"),
               "p99 of exposed transfer time as a fraction of the request's prefill time"),
        SloKey("max_cpu_s_per_gb", "max", "s/GB", "CPU s/GB (worst side)", _max_cpu,
               "CPU seconds per decimal GB moved, worst of sender and receiver"),
        SloKey("max_work_cpu_s_per_gb", "max", "s/GB", "CPU s/GB without spin (worst side)", _max_work_cpu,
               "as max_cpu_s_per_gb, less the CPU each side spent busy-waiting (spin_s_per_gb): "
               "what moving and checking the bytes cost, steady under emulated pacing at any load"),
        SloKey("min_ttft_met_fraction", "min", "", "TTFT met fraction", _path("ttft_met_fraction"),
               "fraction of requests whose emulated TTFT is within ttft_budget_ms"),
        SloKey("max_post_lateness_us", "max", "µs", "post lateness p99", _path("post_lateness_us.p99"),
               "p99 of how late a write was posted after its layer was ready"),
        SloKey("max_retransmits", "max", "", "TCP retransmits", _path("retransmits"),
               "TCP segments retransmitted during the run"),
        SloKey("require_zero_copy", "bool", "", "zero-copy data path", _zero_copy,
               "the kernel/NIC must report a zero-copy data path on every side that reports one"),
    )
}
# Thresholds on time (latency, rate, CPU per byte): not judged inside an emulated VM (lab/env.py),
# where every instruction is 10-50x slower; integrity and zero-copy still are.
TIMING_KEYS = frozenset(SLO_KEYS) - {"require_zero_copy", "max_retransmits"}
# Parameters that are not thresholds themselves but shape one (ttft budget is used by the runner).
SLO_PARAMS = {"ttft_budget_ms": "emulated TTFT budget per request (ms), for min_ttft_met_fraction"}
VALID_KEYS = sorted([*SLO_KEYS, *SLO_PARAMS])


@dataclass(frozen=True)
class Verdict:
    key: str
    metric: str
    measured: Any
    threshold: Any
    passed: bool
    note: str = ""
    judged: bool = True  # False: measured and shown, but not held against the threshold (TCG)

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
    if spec is None or spec.kind == "bool":
        return "required"
    op = "<=" if spec.kind == "max" else ">="
    return f"{op} {_fmt(v.threshold)} {spec.unit}".rstrip()


def coerce(key: str, value: Any, source: str = "<slo>") -> Any:
    """Validate one SLO key/value (from YAML, CLI text or a marker); return the typed value."""
    if key in SLO_PARAMS:
        spec_kind = "max"
    elif key in SLO_KEYS:
        spec_kind = SLO_KEYS[key].kind
    else:
        raise ProfileError(source, key, f"unknown SLO key; valid: {', '.join(VALID_KEYS)}")
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


def parse_assignments(items: list[str], source: str = "--kv-slo") -> dict[str, Any]:
    """Parse repeated KEY=VALUE texts."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ProfileError(source, item, "expected KEY=VALUE")
        out[key.strip()] = coerce(key.strip(), value.strip(), source)
    return out


def check(slo: Mapping[str, Any], metrics: Mapping[str, Any], virtualized: str | None = None) -> list[Verdict]:
    """Check every threshold in `slo` against a result dict. Missing measurements fail.
    virtualized="tcg" (the lab under software emulation): timing thresholds are not judged."""
    verdicts: list[Verdict] = []
    for key, threshold in slo.items():
        spec = SLO_KEYS.get(key)
        if spec is None:
            continue  # parameters such as ttft_budget_ms
        measured = spec.extract(metrics)
        if virtualized == "tcg" and key in TIMING_KEYS:
            verdicts.append(Verdict(key, spec.metric, measured, threshold, True,
                                    "not judged: virtualized: tcg (timings not meaningful)", judged=False))
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
        verdicts.append(Verdict(key, spec.metric, measured, threshold, passed, note))
    return verdicts


def failure_table(verdicts: list[Verdict]) -> str:
    """The short table shown when an SLO is missed: metric, measured, threshold, verdict."""
    from tabulate import tabulate

    rows = [v.row for v in verdicts]
    text = tabulate(rows, headers=["metric", "measured", "threshold", "verdict"], tablefmt="simple")
    notes = [f"{v.metric}: {v.note}" for v in verdicts if not v.passed and v.note]
    return text + ("\n" + "\n".join(notes) if notes else "")
