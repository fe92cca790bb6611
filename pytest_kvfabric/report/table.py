"""Terminal summary table of every scenario run (tabulate)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

# With --kv-repeat N, figures are medians over the repeats with their 95% interval in brackets.
HEADERS = ["case", "pair", "GB/s", "p50 µs", "p99 µs", "exposed p99 ms", "CPU s/GB", "needs/carried Gb/s", "data path",
           "verdict"]


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


def row(result: Mapping[str, Any]) -> list[str]:
    m = result.get("metrics") or {}
    gbps = m.get("throughput_gbps")
    cpu = m.get("cpu_s_per_gb") or {}
    worst_cpu = max([v for v in (cpu.get("sender"), cpu.get("receiver")) if v is not None], default=None)
    return [
        result["case"],
        result.get("pair") or "-",
        _with_ci(result, "throughput_gbps", None if gbps is None else gbps / 8, scale=8),
        _with_ci(result, "latency_us.p50", (m.get("latency_us") or {}).get("p50")),
        _with_ci(result, "latency_us.p99", (m.get("latency_us") or {}).get("p99")),
        _with_ci(result, "exposed_ms.p99", (m.get("exposed_ms") or {}).get("p99")),
        _num(worst_cpu),
        capacity_label(result.get("capacity")),
        data_path_label(m) if m else (result.get("reason") or "")[:40],
        result["outcome"],
    ]


def render(results: Sequence[Mapping[str, Any]]) -> str:
    from tabulate import tabulate

    rows = [row(r) for r in sorted(results, key=lambda r: r["case"])]
    return tabulate(rows, headers=HEADERS, tablefmt="simple")
