"""Per-case bar figures (pure: case records in, Figures out): throughput grouped by model and
transport, CPU seconds per GB per side with busy-waiting apart from the work."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from . import plotting as P
from .runs import get, measured, transports


def _row_key(c: Mapping[str, Any], many_runs: bool) -> str:
    scen = str(c.get("scenario") or c["case"])
    return f"{c['run']}: {scen}" if many_runs else scen


def throughput(cases: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One figure per model (paged by MAX_ROWS scenarios): a bar per transport per scenario, Gb/s."""
    cs = measured(cases)
    if not cs:
        return []
    names = transports(cs)
    many_runs = len({c["run"] for c in cs}) > 1
    by_model: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for c in cs:
        by_model[str(c.get("model") or "-")].append(c)
    figs = []
    for model in sorted(by_model):
        rows = sorted({_row_key(c, many_runs) for c in by_model[model]})
        table = {(_row_key(c, many_runs), c["transport"]): get(c["metrics"], "throughput_gbps") for c in by_model[model]}
        present = [t for t in names if any((r, t) in table for r in rows)]
        for page, npages, chunk in P.pages(rows, max(1, P.MAX_ROWS // max(1, len(present)))):
            fig, axes = P.figure(0.9 + 0.28 * len(chunk) * max(1, len(present)))
            ax = axes[0, 0]
            h = 0.8 / len(present)
            y = np.arange(len(chunk))
            for i, t in enumerate(present):
                vals = [table.get((r, t)) for r in chunk]
                ys = y + (i - (len(present) - 1) / 2) * h
                ax.barh(ys, [v or 0 for v in vals], height=h, color=P.colour(t, names), label=t)
                for yy, v in zip(ys, vals):
                    if v is not None:
                        ax.text(v, yy, f" {v:.3g}", va="center", fontsize=7)
            ax.set_yticks(y, [P.short(r) for r in chunk], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("throughput, Gb/s (decimal; over the transfer window)")
            ax.set_title(P.page_title(f"Throughput per case: {model}", page, npages), fontsize=10)
            ax.legend(fontsize=8, loc="lower right")
            ax.grid(axis="x", alpha=0.3)
            figs.append(fig)
    return figs


SIDES = ("sender", "receiver")


def cpu(cases: Sequence[Mapping[str, Any]]) -> list[Any]:
    """CPU s/GB per case and side: the work solid, the busy-waiting (spin) hatched on top."""
    cs = [c for c in measured(cases) if any(get(c["metrics"], f"cpu_s_per_gb.{s}") is not None for s in SIDES)]
    if not cs:
        return []
    names = transports(cs)
    cs = sorted(cs, key=lambda c: (str(c.get("model")), str(c.get("scenario")), str(c["transport"]), c["run"]))
    figs = []
    for page, npages, chunk in P.pages(cs, P.MAX_ROWS):
        fig, axes = P.figure(1.0 + 0.42 * len(chunk))
        ax = axes[0, 0]
        y = np.arange(len(chunk))
        for j, side in enumerate(SIDES):
            ys = y + (j - 0.5) * 0.4
            total = np.array([get(c["metrics"], f"cpu_s_per_gb.{side}") or 0.0 for c in chunk])
            spin = np.array([get(c["metrics"], f"spin_s_per_gb.{side}") or 0.0 for c in chunk])
            spin = np.minimum(spin, total)
            cols = [P.colour(c["transport"], names) for c in chunk]
            ax.barh(ys, total - spin, height=0.38, color=cols, alpha=1.0 if side == "sender" else 0.6,
                    edgecolor="black", linewidth=0.3)
            ax.barh(ys, spin, left=total - spin, height=0.38, color="white", hatch="////", edgecolor="#888",
                    linewidth=0.3)
            for yy, t in zip(ys, total):
                ax.text(t, yy, f" {side[0].upper()} {t:.3g}", va="center", fontsize=6)
        ax.set_yticks(y, [P.short(str(c["label"]), 56) for c in chunk], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("CPU seconds per GB moved (S = sender, R = receiver, lighter; hatched = busy-waiting)")
        ax.set_title(P.page_title("CPU cost per side: work and spin apart", page, npages), fontsize=10)
        from matplotlib.patches import Patch

        handles = [Patch(color=P.colour(t, names), label=t) for t in names]
        handles.append(Patch(facecolor="white", hatch="////", edgecolor="#888", label="spin (busy-waiting)"))
        ax.legend(handles=handles, fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
        figs.append(fig)
    return figs
