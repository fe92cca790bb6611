"""Percentiles and rates over a run's raw measurements (pure: arrays in, numbers out).

Units: times come in as monotonic ns on the PREFILL agent's clock and leave in the unit the
key names (_us, _ms, _s). Throughput is decimal: Gb/s = bits / 1e9 / s, GB/s = bytes / 1e9 / s.
Percentiles use linear interpolation between order statistics (numpy's default); with
fewer than 1000 samples p999 is close to max.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from .histogram import log_histogram

QUANTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def percentiles(values: Iterable[float] | np.ndarray, keys: Iterable[str] = ("p50", "p90", "p99", "p999", "max")) -> dict[str, float | None]:
    """{key: value} for keys among p50/p90/p99/p999/max/min/mean; None for every key when empty."""
    a = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {}
    for k in keys:
        if a.size == 0:
            out[k] = None
        elif k == "max":
            out[k] = float(a.max())
        elif k == "min":
            out[k] = float(a.min())
        elif k == "mean":
            out[k] = float(a.mean())
        else:
            out[k] = float(np.percentile(a, QUANTILES[k]))
    return out


def rate_gbps(nbytes: int, seconds: float) -> float | None:
    """Decimal gigabits per second, None for an empty window."""
    return nbytes * 8 / 1e9 / seconds if seconds > 0 else None


def rate_GBps(nbytes: int, seconds: float) -> float | None:  # noqa: N802 - unit spelled as in the JSON
    return nbytes / 1e9 / seconds if seconds > 0 else None


def cpu_s_per_gb(cpu_s: float | None, nbytes: int) -> float | None:
    if cpu_s is None or nbytes <= 0:
        return None
    return cpu_s / (nbytes / 1e9)


MAX_REQUEST_SAMPLES = 1000  # per-request exposed times kept in a report (evenly strided beyond)


def timeline_request(requests: np.ndarray) -> int | None:
    """The request whose timeline a report keeps: the last one with writes (it waited behind
    every earlier one, so it shows queueing when there is any). Both agents pick the same."""
    idx = np.flatnonzero(requests["count"] > 0)
    return int(idx[-1]) if len(idx) else None


def per_layer(layers: np.ndarray, values: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(layer ids, min or max of values per layer), ignoring values <= 0 (never happened)."""
    ids = np.unique(layers)
    out = np.zeros(len(ids), np.int64)
    pos = np.searchsorted(ids, layers)
    ok = values > 0
    if how == "max":
        np.maximum.at(out, pos[ok], values[ok])
    else:
        big = np.iinfo(np.int64).max
        out[:] = big
        np.minimum.at(out, pos[ok], values[ok])
        out[out == big] = 0
    return ids, out


def timeline(transfers: np.ndarray, requests: np.ndarray, m: Mapping[str, np.ndarray], req: int | None,
             placed_by_layer_ns: np.ndarray | None = None) -> dict[str, Any] | None:
    """One request's layers: when each was ready (emulated) against when its writes were posted
    and completed (ms since the request's prefill started, prefill clock). `placed_ms` (when the
    decode side placed the layer's last byte) only where both agents read one clock."""
    if req is None:
        return None
    start = int(m["req_start_ns"][req])
    if start <= 0:
        return None
    f, c = int(requests["first"][req]), int(requests["count"][req])
    rows = transfers[f:f + c]
    layers = rows["layer"].astype(np.int64)
    post = np.asarray(m["post_ns"][f:f + c], np.int64)
    done = np.asarray(m["done_ns"][f:f + c], np.int64)

    def rel(v: np.ndarray) -> list[float | None]:
        return [None if x <= 0 else round((int(x) - start) / 1e6, 4) for x in v]

    ids, ready = per_layer(layers, rows["ready_ns"].astype(np.int64) + start, "max")
    _, first_post = per_layer(layers, post, "min")
    _, last_post = per_layer(layers, post, "max")
    _, last_done = per_layer(layers, done, "max")
    nbytes = np.bincount(np.searchsorted(ids, layers), weights=rows["nbytes"].astype(np.float64), minlength=len(ids))
    out: dict[str, Any] = {
        "request": req,
        "arrival_ms": round((int(m["req_arrival_ns"][req]) - start) / 1e6, 4),
        "prefill_ms": round(int(requests["prefill_ns"][req]) / 1e6, 4),
        "done_ms": rel(np.asarray([m["req_done_ns"][req]]))[0],
        "layers": ids.tolist(),
        "bytes": nbytes.astype(np.int64).tolist(),
        "ready_ms": rel(ready),
        "first_post_ms": rel(first_post),
        "last_post_ms": rel(last_post),
        "last_done_ms": rel(last_done),
    }
    if placed_by_layer_ns is not None and len(placed_by_layer_ns) == len(ids):
        out["placed_ms"] = rel(np.asarray(placed_by_layer_ns, np.int64))
    return out


def strided(values: np.ndarray, limit: int = MAX_REQUEST_SAMPLES) -> dict[str, Any]:
    """Every `stride`-th value (stride 1 up to `limit` values), rounded to 1 µs when in ms."""
    stride = max(1, -(-len(values) // limit))
    return {"stride": stride, "values": [round(float(v), 3) for v in values[::stride]]}


def summarize(
    transfers: np.ndarray,
    requests: np.ndarray,
    m: Mapping[str, np.ndarray],
    pacing: str = "emulated",
    ttft_budget_ms: float | None = None,
) -> dict[str, Any]:
    """Figures of one run from the plan and the prefill agent's raw measurements.

    m: post_ns, done_ns (per plan row, 0 = never), req_arrival_ns, req_start_ns, req_done_ns
    (per request, 0 = not completed); all absolute monotonic ns on the prefill clock.
    Optional post_call_ns: duration of each post() call (ns).
    """
    post = np.asarray(m["post_ns"], np.int64)
    done = np.asarray(m["done_ns"], np.int64)
    nbytes = transfers["nbytes"].astype(np.int64)
    posted = post > 0
    completed = done > 0
    moved = int(nbytes[completed].sum())
    if completed.any():
        t_first = int(post[posted].min())
        t_last = int(done[completed].max())
        window_s = (t_last - t_first) / 1e9
    else:
        window_s = 0.0
    latency_us = (done[completed] - post[completed]) / 1e3

    arrival = np.asarray(m["req_arrival_ns"], np.int64)
    start = np.asarray(m["req_start_ns"], np.int64)
    rdone = np.asarray(m["req_done_ns"], np.int64)
    prefill_ns = requests["prefill_ns"].astype(np.int64)
    count = requests["count"].astype(np.int64)
    first = requests["first"].astype(np.int64)
    ok = (rdone > 0) & (count > 0)
    idx = np.flatnonzero(ok)
    prefill_end = start[idx] + prefill_ns[idx]
    exposed_ms = np.clip(rdone[idx] - prefill_end, 0, None) / 1e6
    # Exposed time relative to the request's own prefill (Splitwise reports the tail this way).
    with np.errstate(divide="ignore", invalid="ignore"):
        exposed_fraction = np.where(prefill_ns[idx] > 0, exposed_ms * 1e6 / prefill_ns[idx], np.nan)
    exposed_fraction = exposed_fraction[~np.isnan(exposed_fraction)]
    # First post of each request: rows of a request are contiguous [first, first+count).
    first_post = np.array(
        [int(post[f:f + c][post[f:f + c] > 0].min()) for f, c in zip(first[idx], count[idx])], np.int64
    ) if len(idx) else np.zeros(0, np.int64)
    transfer_ms = (rdone[idx] - first_post) / 1e6
    ttft_ms = (np.maximum(rdone[idx], prefill_end) - arrival[idx]) / 1e6
    tpot_ms = requests["decode_step_ns"][idx].astype(np.float64) / 1e6

    if pacing == "emulated" and posted.any():
        row_req = transfers["request"].astype(np.int64)
        ready_abs = start[row_req] + transfers["ready_ns"].astype(np.int64)
        lateness_us = (post[posted] - ready_abs[posted]) / 1e3
    else:
        lateness_us = np.zeros(0)  # pacing none has no ready times to be late against

    req = timeline_request(requests)
    ttft_met = None
    if ttft_budget_ms is not None and len(idx):
        ttft_met = float((ttft_ms <= float(ttft_budget_ms)).mean())

    return {
        "bytes": moved,
        "transfers": int(completed.sum()),
        "requests": int(len(requests)),
        "requests_completed": int(ok.sum() + ((rdone > 0) & (count == 0)).sum()),
        "duration_s": window_s,
        "throughput_gbps": rate_gbps(moved, window_s),
        "throughput_GBps": rate_GBps(moved, window_s),
        "latency_us": percentiles(latency_us),
        "exposed_ms": percentiles(exposed_ms, ("p50", "p99", "max")),
        "exposed_fraction": percentiles(exposed_fraction, ("p50", "p99", "max")),
        "transfer_ms": percentiles(transfer_ms, ("p50", "p99")),
        "ttft_ms": percentiles(ttft_ms, ("p50", "p99")),
        "tpot_ms": percentiles(tpot_ms, ("p50",)),
        "post_lateness_us": percentiles(lateness_us, ("p50", "p99", "max")),
        "post_call_us": percentiles(np.asarray(m.get("post_call_ns", ()), np.float64) / 1e3, ("p50", "p99", "max")),
        "ttft_met_fraction": ttft_met,
        # Compact distributions for plots (README: "JSON ... keys"): exact to a bucket / a request.
        "latency_hist_us": log_histogram(latency_us),
        "exposed_ms_requests": strided(exposed_ms),
        "timeline": timeline(transfers, requests, m, req, m.get("placed_by_layer_ns")),
    }
