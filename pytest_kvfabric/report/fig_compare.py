"""Comparison figures (pure): baseline against current per metric, and size sweeps."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from . import plotting as P
from .runs import get, measured, samples, transports

# (metric path, axis label, higher is better)
BASELINE_METRICS = (
    ("throughput_gbps", "throughput Gb/s", True),
    ("latency_us.p50", "write latency p50 µs", False),
    ("latency_us.p99", "write latency p99 µs", False),
    ("exposed_ms.p99", "exposed p99 ms", False),
)


def point(case: Mapping[str, Any], path: str) -> tuple[float | None, float | None, float | None]:
    """(value, low, high): the median of the repeats and their range where the case was repeated,
    else the one figure with no interval."""
    reps = samples(case, path)
    if len(reps) >= 2:
        return float(np.median(reps)), float(min(reps)), float(max(reps))
    v = get(case.get("metrics"), path)
    return v, None, None


def pairs(baseline: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any]]:
    """(baseline case, current case) for every case id measured in both."""
    old = {c["case"]: c for c in measured(baseline)}
    return [(old[c["case"]], c) for c in measured(current) if c["case"] in old]


def baseline(matched: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[Any]:
    """One panel per metric: per case the baseline (grey) and the current value (transport colour),
    each with its repeat range where repeats exist."""
    if not matched:
        return []
    names = transports([c for _, c in matched])
    figs = []
    for page, npages, chunk in P.pages(list(matched), P.MAX_ROWS):
        fig, axes = P.figure(1.2 + 0.3 * len(chunk), ncols=len(BASELINE_METRICS), width_in=13)
        y = np.arange(len(chunk))
        for ax, (path, label, higher) in zip(axes.flat, BASELINE_METRICS):
            for yy, (old, new) in zip(y, chunk):
                for case, dy, col, mk in ((old, -0.15, "#888", "D"), (new, 0.15, P.colour(new["transport"], names), "o")):
                    v, lo, hi = point(case, path)
                    if v is None:
                        continue
                    err = None if lo is None else [[v - lo], [hi - v]]
                    ax.errorbar([v], [yy + dy], xerr=err, fmt=mk, color=col, ms=4, capsize=2, lw=1)
            ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=8)
            ax.grid(axis="x", alpha=0.3)
            ax.tick_params(labelsize=7)
        axes[0, 0].set_yticks(y, [P.short(new["label"], 44) for _, new in chunk], fontsize=7)
        for ax in list(axes.flat)[1:]:
            ax.set_yticks(y, [""] * len(y))
        for ax in axes.flat:
            ax.invert_yaxis()
        fig.suptitle(P.page_title("Baseline (grey ◆) against current (●); bars: range of the repeats", page, npages),
                     fontsize=10)
        figs.append(fig)
    return figs


def sweep(sweep_report: Mapping[str, Any]) -> list[Any]:
    """Throughput and p50/p99 write latency against transfer size, one line per transport (and batch)."""
    pts = [p for p in sweep_report.get("points") or () if p.get("throughput_gbps") is not None]
    if not pts:
        return []
    names = sorted({str(p["transport"]) for p in pts})
    batches = sorted({int(p.get("batch") or 1) for p in pts})
    fig, axes = P.figure(3.8, ncols=2)
    styles = ("-", "-.", ":", (0, (5, 1)))
    for t in names:
        for bi, b in enumerate(batches):
            sel = sorted((p for p in pts if p["transport"] == t and int(p.get("batch") or 1) == b),
                         key=lambda p: p["size_bytes"])
            if not sel:
                continue
            x = np.array([p["size_bytes"] for p in sel], float)
            lab = t if len(batches) == 1 else f"{t} batch {b}"
            col = P.colour(t, names)
            axes[0, 0].plot(x, [p["throughput_gbps"] for p in sel], marker="o", ms=3, color=col,
                            ls=styles[bi % len(styles)], label=lab)
            for key, ls, mk in (("p50", "-", "o"), ("p99", "--", "^")):
                y = [get(p, f"latency_us.{key}") for p in sel]
                axes[0, 1].plot(x, [np.nan if v is None else v for v in y], ls=ls, marker=mk, ms=3, color=col,
                                label=f"{lab} {key}")
    for ax in axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("transfer size, bytes (log2)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        ax.xaxis.set_major_formatter(_size_formatter())
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("throughput Gb/s", fontsize=8)
    axes[0, 0].set_ylim(bottom=0)
    axes[0, 1].set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    from .fig_latency import human_us

    axes[0, 1].yaxis.set_major_formatter(FuncFormatter(lambda v, _p: human_us(v)))
    axes[0, 1].set_ylabel("write latency (p50 solid, p99 dashed)", fontsize=8)
    pair = sweep_report.get("pair") or ""
    fig.suptitle(f"Transfer-size sweep {pair}".strip(), fontsize=10)
    return [fig]


def _size_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: human_size(v))


def human_size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}B"
