"""The terminal summary's storage-tier section: one row per case that ran a store (pure)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

HEADERS = ["case", "mode", "hit dram/file", "fetch|offload p50/p99 ms", "TTFT p50 ms without -> with store",
           "TTFT saved", "store pages verified"]


def _n(v: Any, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def store_rows(results: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        s = (r.get("metrics") or {}).get("store")
        if not s:
            continue
        hr = s.get("hit_ratio") or {}
        lat = s.get("fetch_ms") or s.get("offload_ms") or {}
        without, with_ = s.get("ttft_without_store_ms") or {}, s.get("ttft_with_store_ms") or {}
        ttft = f"{_n(without.get('p50'), '.4g')} -> {_n(with_.get('p50'), '.4g')}" if with_ else "-"
        frac = s.get("ttft_saving_fraction")
        integ = s.get("integrity") or {}
        rows.append([r.get("case", "?"), s.get("mode", "?"), f"{_n(hr.get('dram'))}/{_n(hr.get('file'))}",
                     f"{_n(lat.get('p50'))}/{_n(lat.get('p99'))}", ttft,
                     "-" if frac is None else f"{frac:.1%}",
                     f"{integ.get('pages_checked', 0)} ({integ.get('errors', 0)} errors)"])
    return rows


def render(results: Sequence[Mapping[str, Any]]) -> str | None:
    """The section's text, or None when no case ran a store."""
    rows = store_rows(results)
    if not rows:
        return None
    from tabulate import tabulate

    return tabulate(sorted(rows), headers=HEADERS, tablefmt="simple")
