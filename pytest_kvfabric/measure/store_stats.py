"""A store run's figures (pure): fetch latency, bytes fetched vs computed, emulated TTFT with and
without the store, hit ratio per tier, disk throughput, and the store's page integrity.

Emulated TTFT per request (prefix and resume; the README's storage-tier section):
    with the store    = max(fetch, prefill of the uncached suffix) + exposed transfer to decode
    without the store = prefill of the whole prompt                + exposed transfer to decode
`fetch` is measured (lookup round trip + one-sided READs of every served page); the prefill
times are the emulator's; each exposed transfer is measured per request in its own run: the
store run's, and that of the same workload run without the store on the same agents just
before (its transfers paced by the whole prompt's prefill, with no store traffic beside them). A request
whose prefix was served only in part (a page missing) computes from its first missing page:
its suffix time is recomputed for what was really served (`suffix_ns_for`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..emulator.storeplan import StorePlan
from .stats import percentiles


def _ms(ns: np.ndarray) -> np.ndarray:
    return np.asarray(ns, dtype=np.float64) / 1e6


def summarize_store(sp: StorePlan, client: Mapping[str, Any], store: Mapping[str, Any],
                    exposed_ms: np.ndarray | None, suffix_ns_for: Callable[[int, int], int],
                    exposed_without_ms: np.ndarray | None = None) -> dict[str, Any]:
    """The `store` block of a Result. client: the client's took_ns/served arrays (per request);
    store: the server's counters; exposed_ms: per-request exposed transfer of the store run, and
    exposed_without_ms of the run without the store (None: not known; then the store run's serves)."""
    took = np.asarray(client["took_ns"], dtype=np.int64)
    served_pages = np.asarray(client["served"], dtype=np.int64)
    active = sp.req_count > 0
    c = store.get("counters", {})
    lookups = int(c.get("hits_dram", 0)) + int(c.get("hits_file", 0)) + int(c.get("misses", 0))
    f = store.get("file") or {}

    def ratio(n: int) -> float | None:
        return n / lookups if lookups else None

    def gbps(nbytes: int, s: float) -> float | None:
        return nbytes * 8 / s / 1e9 if s > 0 else None

    out: dict[str, Any] = {
        "mode": sp.mode,
        "page_bytes": sp.obj_bytes,
        "requests_with_store_traffic": int(active.sum()),
        "hit_ratio": {"dram": ratio(int(c.get("hits_dram", 0))), "file": ratio(int(c.get("hits_file", 0))),
                      "all": ratio(int(c.get("hits_dram", 0)) + int(c.get("hits_file", 0)))},
        "counters": dict(c),
        "disk": {"read_gbps": gbps(int(f.get("read_bytes", 0)), float(f.get("read_s", 0.0))),
                 "write_gbps": gbps(int(f.get("write_bytes", 0)), float(f.get("write_s", 0.0))),
                 "read_bytes": int(f.get("read_bytes", 0)), "write_bytes": int(f.get("write_bytes", 0)),
                 "io": f.get("path_kind")} if f else None,
        "lookup_us": {"p50": store.get("lookup_us_p50"), "p99": store.get("lookup_us_p99")},
    }
    if sp.mode == "offload":
        out["offload_ms"] = percentiles(_ms(took[active]), ("p50", "p99", "max"))
        out["bytes_offloaded"] = int(served_pages.sum()) * sp.obj_bytes
        return out
    served_tokens = np.minimum(served_pages * sp.page_tokens, sp.hit_tokens)
    suffix = np.array([sp.suffix_ns[r] if served_tokens[r] == sp.hit_tokens[r] else suffix_ns_for(r, int(served_tokens[r]))
                       for r in range(len(sp.isl))], dtype=np.int64)
    fetch_ms = np.where(active, _ms(took), 0.0)
    exposed = np.zeros(len(sp.isl)) if exposed_ms is None else np.asarray(exposed_ms, dtype=np.float64)
    with_ms = np.maximum(fetch_ms, _ms(suffix)) + exposed
    exposed_wo = exposed if exposed_without_ms is None else np.asarray(exposed_without_ms, dtype=np.float64)
    without_ms = _ms(sp.full_ns) + exposed_wo
    saved = without_ms - with_ms
    token_bytes = sp.obj_bytes / sp.page_tokens
    out.update({
        "fetch_ms": percentiles(_ms(took[active]), ("p50", "p99", "max")),
        "tokens_fetched": int(served_tokens.sum()),
        "tokens_computed": int((sp.isl - served_tokens).sum()),
        "bytes_fetched": int(served_pages.sum()) * sp.obj_bytes,
        "bytes_computed": int(round(float((sp.isl - served_tokens).sum()) * token_bytes)),
        "ttft_with_store_ms": percentiles(with_ms, ("p50", "p99")),
        "ttft_without_store_ms": percentiles(without_ms, ("p50", "p99")),
        "ttft_saved_ms": {**percentiles(saved, ("p50", "p99")), "mean": float(saved.mean()) if len(saved) else None},
        "ttft_saving_fraction": float(saved.sum() / without_ms.sum()) if without_ms.sum() > 0 else None,
        "fetch_bound_requests": int((active & (fetch_ms > _ms(suffix))).sum()),
        "exposed_known": exposed_ms is not None,
        "exposed_ms": percentiles(exposed, ("p50", "p99")),
        "exposed_without_store_ms": percentiles(exposed_wo, ("p50", "p99")) if exposed_without_ms is not None else None,
    })
    return out
