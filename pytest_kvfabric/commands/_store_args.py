"""`kvfabric run`'s storage-tier flags: one place turns them into the scenario's StoreSpec and
the store's rows of the result table."""
from __future__ import annotations

import argparse
from typing import Any

from ..core.store_spec import MAX_STORE_MIB, STORE_MODES, StoreSpec, parse_store
from ._scenario_args import float_in


def add_store_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("storage tier (a store agent beside the pair; needs a transport with one-sided READ)")
    g.add_argument("--store", choices=STORE_MODES,
                   help="prefix: prefill fetches cached prefixes; resume: decode fetches returning sessions' KV; "
                        "offload: decode writes finished sessions' KV to the store")
    g.add_argument("--store-hit-ratio", type=float_in(0, 1), default=0.75, metavar="F",
                   help="fraction of each prompt found in the store (prefix, resume; default 0.75)")
    g.add_argument("--store-reuse", type=float_in(0, 1), default=1.0, metavar="F",
                   help="fraction of requests that find anything in the store (default 1)")
    g.add_argument("--store-dram-mib", type=float_in(1, MAX_STORE_MIB), default=StoreSpec.dram_mib, metavar="MIB",
                   help=f"the store's DRAM tier (default {StoreSpec.dram_mib:g} MiB)")
    g.add_argument("--store-file-mib", type=float_in(0, MAX_STORE_MIB), default=0.0, metavar="MIB",
                   help="the store's file tier on local disk (default 0: none)")
    g.add_argument("--store-dir", metavar="DIR", help="directory of the file tier's file (default: the temp dir)")


def store_from_args(args: argparse.Namespace) -> StoreSpec | None:
    if not getattr(args, "store", None):
        for flag in ("store_file_mib", "store_dir"):
            if getattr(args, flag, None):
                from ..errors import ProfileError

                raise ProfileError("<cli>", "--" + flag.replace("_", "-"), "given without --store")
        return None
    return parse_store({"mode": args.store, "hit_ratio": args.store_hit_ratio, "reuse": args.store_reuse,
                        "dram_mib": args.store_dram_mib, "file_mib": args.store_file_mib,
                        **({"file_dir": args.store_dir} if args.store_dir else {})}, "<cli>", "--store")


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    return (f"{v:.4g}" if isinstance(v, float) else str(v)) + unit


def store_rows(s: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The store block's rows in `kvfabric run`'s table (none without a store)."""
    if not s:
        return []
    where = s.get("placement") or {}
    rows = [("store", f"{s['mode']}: store on {where.get('store', '-')}, client on {where.get('client', '-')}, "
                      f"pages of {s['page_bytes']:,} B"),
            ("store integrity", f"{s['integrity']['pages_checked']} store pages checked, {s['integrity']['errors']} errors")]
    hr = s.get("hit_ratio") or {}
    if hr.get("all") is not None:
        rows.append(("store hit ratio", f"all {_fmt(hr['all'])}  dram {_fmt(hr['dram'])}  file {_fmt(hr['file'])}"))
    if s.get("fetch_ms"):
        f = s["fetch_ms"]
        rows += [
            ("store fetch ms", f"p50 {_fmt(f['p50'])}  p99 {_fmt(f['p99'])}  max {_fmt(f['max'])}"),
            ("KV fetched / computed", f"{s['tokens_fetched']} / {s['tokens_computed']} tokens, "
                                      f"{s['bytes_fetched']:,} / {s['bytes_computed']:,} B"),
            ("exposed to decode ms", f"with store {_pcts(s.get('exposed_ms') or {})}  |  without "
                                     f"{_pcts(s.get('exposed_without_store_ms') or {})}"),
            ("TTFT without store ms", _pcts(s["ttft_without_store_ms"]) + "  (whole prefill + exposed, run without the store)"),
            ("TTFT with store ms", _pcts(s["ttft_with_store_ms"]) + "  (max(fetch, suffix prefill) + exposed)"),
            ("TTFT saved by hits ms", f"{_pcts(s['ttft_saved_ms'])}  mean {_fmt(s['ttft_saved_ms'].get('mean'))}"
                                      f"  ({_fmt(s['ttft_saving_fraction'])} of TTFT)"),
        ]
    if s.get("offload_ms"):
        rows.append(("store offload ms", _pcts(s["offload_ms"]) + f"  ({s['bytes_offloaded']:,} B written)"))
    d = s.get("disk")
    if d:
        rows.append(("store disk Gb/s", f"read {_fmt(d['read_gbps'])}  write {_fmt(d['write_gbps'])}  ({d['io']})"))
    return rows


def _pcts(p: dict[str, Any]) -> str:
    return f"p50 {_fmt(p.get('p50'))}  p99 {_fmt(p.get('p99'))}"
