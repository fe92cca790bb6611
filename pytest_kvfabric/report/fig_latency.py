"""Latency figures (pure: case records in, Figures out): write-latency CDFs per transport,
exposed transfer time per request, and one request's layer timeline."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from ..measure import histogram
from . import plotting as P
from .runs import get, measured, transports

PCTS = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))


def _groups(cases: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Cases of one scenario and model (and run, with several) side by side: transports compared."""
    many_runs = len({c["run"] for c in cases}) > 1
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for c in cases:
        key = f"{c.get('scenario') or c['case']} · {c.get('model') or '-'}"
        out[f"{c['run']}: {key}" if many_runs else key].append(c)
    return dict(sorted(out.items()))


def _cdf_line(ax: Any, cases: Sequence[Mapping[str, Any]], colour: str, label: str) -> bool:
    hist = histogram.merge(c["metrics"].get("latency_hist_us") for c in cases)
    if hist is not None and hist["counts"]:
        x, f = histogram.cdf(hist)
        ax.plot(x, f, color=colour, label=f"{label} (n={hist['n']:,})", lw=1.6)
        return True
    # Older reports keep percentiles only: draw them as points of the CDF.
    pts = [(get(c["metrics"], f"latency_us.{k}"), q) for c in cases for k, q in PCTS]
    pts = [(x, q) for x, q in pts if x is not None and x > 0]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=colour, label=f"{label} (percentiles only)", ms=4)
        return True
    return False


def _cdf_axes(ax: Any, title: str) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: human_us(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("write latency, µs (post → completion; log scale)", fontsize=8)
    ax.set_ylabel("fraction of writes ≤ x", fontsize=8)
    ax.set_title(P.short(title, 70), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    for q in (0.5, 0.99):
        ax.axhline(q, color="#999", lw=0.6, ls=":")


def human_us(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g} s"
    return f"{v / 1e3:g} ms" if v >= 1e3 else f"{v:g} µs"


def latency_cdf(cases: Sequence[Mapping[str, Any]]) -> list[Any]:
    """First all cases of a transport pooled, then per scenario and model with one line per transport."""
    cs = measured(cases)
    if not cs:
        return []
    names = transports(cs)
    fig, axes = P.figure(3.6)
    ax = axes[0, 0]
    drew = [t for t in names if _cdf_line(ax, [c for c in cs if c["transport"] == t], P.colour(t, names), t)]
    if not drew:
        return []
    _cdf_axes(ax, "Write latency CDF per transport, all cases pooled")
    ax.legend(fontsize=8, loc="lower right")
    figs = [fig]
    groups = list(_groups(cs).items())
    for page, npages, chunk in P.pages(groups, P.MAX_FACETS):
        nrows = -(-len(chunk) // 2)
        fig, axes = P.figure(2.6 * nrows, ncols=2, nrows=nrows)
        for ax, (title, gcs) in zip(axes.flat, chunk):
            for t in names:
                _cdf_line(ax, [c for c in gcs if c["transport"] == t], P.colour(t, names), t)
            _cdf_axes(ax, title)
            ax.legend(fontsize=7, loc="lower right")
        P.hide_unused(axes, len(chunk))
        fig.suptitle(P.page_title("Write latency CDF per scenario", page, npages), fontsize=10)
        figs.append(fig)
    return figs


def _slo(cases: Sequence[Mapping[str, Any]], key: str) -> float | None:
    for c in cases:
        for v in c.get("verdicts") or ():
            if v.get("key") == key and v.get("threshold") is not None:
                try:
                    return float(v["threshold"])
                except (TypeError, ValueError):
                    return None
    return None


def exposed(cases: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Exposed transfer time (what the network adds to TTFT) of each request, per transport,
    one panel per scenario and model; the max_exposed_ms SLO (a p99) as a dashed line."""
    from matplotlib.ticker import MaxNLocator

    cs = [c for c in measured(cases) if (c["metrics"].get("exposed_ms_requests") or {}).get("values")]
    if not cs:
        return []
    names = transports(cs)
    figs = []
    for page, npages, chunk in P.pages(list(_groups(cs).items()), P.MAX_FACETS):
        nrows = -(-len(chunk) // 2)
        fig, axes = P.figure(2.5 * nrows, ncols=2, nrows=nrows)
        for ax, (title, gcs) in zip(axes.flat, chunk):
            for c in gcs:
                er = c["metrics"]["exposed_ms_requests"]
                v = np.asarray(er["values"], float)
                x = np.arange(len(v)) * int(er.get("stride", 1))
                ax.plot(x, v, "o-", ms=3, lw=1, color=P.colour(c["transport"], names), label=c["transport"])
            slo = _slo(gcs, "max_exposed_ms")
            if slo is not None:
                ax.axhline(slo, color="#d62728", ls="--", lw=1, label=f"SLO p99 ≤ {slo:g} ms")
            ax.set_title(P.short(title, 70), fontsize=9)
            ax.set_xlabel("request (completed, in order)", fontsize=8)
            ax.set_ylabel("exposed ms", fontsize=8)
            ax.set_ylim(bottom=0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        P.hide_unused(axes, len(chunk))
        fig.suptitle(P.page_title("Exposed transfer time per request (after the emulated prefill end)", page, npages),
                     fontsize=10)
        figs.append(fig)
    return figs


def timeline_cases(cases: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Per transport, the case with a timeline whose p99 exposed time is largest (the one to explain);
    layer-by-layer cases first (a block-access case has one 'layer' per stage: nothing to see)."""
    best: dict[str, Mapping[str, Any]] = {}
    with_tl = [c for c in measured(cases) if (c["metrics"].get("timeline") or {}).get("layers")]
    layered = [c for c in with_tl if len(c["metrics"]["timeline"]["layers"]) > 1]
    for c in layered or with_tl:
        t = c["transport"]
        e = get(c["metrics"], "exposed_ms.p99") or 0.0
        if t not in best or e > (get(best[t]["metrics"], "exposed_ms.p99") or 0.0):
            best[t] = c
    return [best[t] for t in sorted(best)][:P.MAX_FACETS]


def _t(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values])


def timeline(cases: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One request per panel: each layer's ready time (emulated GPU) against when its writes were
    posted, placed at the decode side and acknowledged; the gap after the prefill end is exposed."""
    chosen = timeline_cases(cases)
    if not chosen:
        return []
    names = transports(chosen)
    nrows = -(-len(chosen) // 2)
    ncols = 1 if len(chosen) == 1 else 2
    fig, axes = P.figure(3.4 * nrows, ncols=ncols, nrows=nrows)
    for ax, c in zip(axes.flat, chosen):
        tl = c["metrics"]["timeline"]
        layers = np.asarray(tl["layers"])
        col = P.colour(c["transport"], names)
        ax.plot(layers, _t(tl["ready_ms"]), color="black", lw=1.2, label="layer ready (emulated)")
        fp, lp = _t(tl["first_post_ms"]), _t(tl["last_post_ms"])
        ax.vlines(layers, fp, lp, color=col, lw=2)
        ax.plot(layers, fp, "_", color=col, ms=6, label="writes posted (first–last)")
        if tl.get("placed_ms"):
            ax.plot(layers, _t(tl["placed_ms"]), ".", color="#2ca02c", ms=4, label="last byte placed (decode)")
        ax.plot(layers, _t(tl["last_done_ms"]), "x", color="#d62728", ms=3.5, label="last write acknowledged")
        ax.axhline(float(tl["prefill_ms"]), color="#555", ls="--", lw=0.9, label="emulated prefill end")
        if tl.get("done_ms") is not None:
            ax.axhline(float(tl["done_ms"]), color="#d62728", ls=":", lw=0.9, label="KV complete")
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("ms since the request's prefill started", fontsize=8)
        exposed_ms = max(0.0, float(tl["done_ms"] or 0) - float(tl["prefill_ms"])) if tl.get("done_ms") else None
        tail = "" if exposed_ms is None else f", exposed {exposed_ms:,.0f} ms" if exposed_ms >= 100 else \
            f", exposed {exposed_ms:.3g} ms"
        ax.set_title(P.short(f"{c['label']} · request {tl['request']}{tail}", 80), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left")
    P.hide_unused(axes, len(chosen))
    fig.suptitle("One request's timeline: the last request of the case with the largest exposed p99, per transport",
                 fontsize=10)
    return [fig]
