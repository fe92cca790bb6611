"""Terminal summary table of every scenario run (tabulate)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..measure.metrics import BUILTIN, Metric, MetricSet

# With --kv-repeat N, figures are medians over the repeats with their 95% interval in brackets.
# The metric columns are the metrics declared with a `column` (measure/metrics.py).


def headers(metrics: MetricSet | None = None) -> list[str]:
    return ["case", "pair", *(m.column for m in (metrics or BUILTIN).columns), "needs/carried Gb/s", "data path",
            "verdict"]


HEADERS = headers()


def _num(v: Any, fmt: str = ".3g") -> str:
    return "-" if v is None else format(float(v), fmt)


def data_path_label(metrics: Mapping[str, Any]) -> str:
    """Short form of what the kernel/NIC did: 'tcp copied', 'zerocopy 100% copied', 'devmem RX only'..."""
    dp = metrics.get("data_path") or {}
    sender = dp.get("sender") or {}
    receiver = dp.get("receiver") or {}
    name = sender.get("transport") or receiver.get("transport") or ""
    if sender.get("copied_fraction") is not None:
        return f"{name} {100 * float(sender['copied_fraction']):.0f}% copied"
    if receiver.get("device_placed_all") is not None:
        placed = "device-placed" if receiver["device_placed_all"] else "host bytes seen"
        tx = "" if sender.get("devmem_tx") else ", RX only"
        return f"{name} {placed}{tx}"
    zc = sender.get("zero_copy")
    if zc is None:
        return name
    return f"{name} {'zero-copy' if zc else 'copied'}"


def _with_ci(result: Mapping[str, Any], path: str, median: Any, scale: float = 1.0) -> str:
    """The median, and with repeats its 95% interval: '1.23 [1.1, 1.3]'."""
    reps = [r.get(path) for r in result.get("repeats") or () if r.get(path) is not None]
    if len(reps) < 2 or median is None:
        return _num(median)  # one run: the figure as it was
    from .repeats import spread

    _, lo, hi = spread([v / scale for v in reps])
    return f"{_num(median, '.4g')} [{_num(lo, '.4g')}, {_num(hi, '.4g')}]"


def capacity_label(cap: Mapping[str, Any] | None) -> str:
    """'34.5/20 SHORT' when the pair carried less than the paced scenario needs."""
    if not cap or cap.get("needed_gbps") is None:
        return "-"
    text = f"{_num(cap['needed_gbps'])}/{_num(cap.get('carried_gbps'))}"
    return text + (" SHORT" if cap.get("short") else "")


def _cell(result: Mapping[str, Any], metric: Metric) -> str:
    value = metric.figure(result.get("metrics") or {})
    median = None if value is None else value / metric.column_scale
    if metric.path is None:
        return _num(median)  # computed when read: no per-repeat figures to draw an interval from
    return _with_ci(result, metric.path, median, scale=metric.column_scale)


def row(result: Mapping[str, Any], metrics: MetricSet | None = None) -> list[str]:
    m = result.get("metrics") or {}
    return [
        result["case"],
        result.get("pair") or "-",
        *(_cell(result, metric) for metric in (metrics or BUILTIN).columns),
        capacity_label(result.get("capacity")),
        data_path_label(m) if m else (result.get("reason") or "")[:40],
        result["outcome"],
    ]


def render(results: Sequence[Mapping[str, Any]], metrics: MetricSet | None = None) -> str:
    from tabulate import tabulate

    ordered = sorted(results, key=lambda r: r["case"])
    out = tabulate([row(r, metrics) for r in ordered], headers=headers(metrics), tablefmt="simple")
    notes = [f"note: {r['case']}: {n}" for r in ordered for n in r.get("notes") or ()]
    return "\n".join([out, *notes])
