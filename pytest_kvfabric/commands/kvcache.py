"""`kvfabric kvcache`: the KV-cache layout of a model (bytes per token, layer, page, request, rank)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from tabulate import tabulate

from ..emulator.kvlayout import kv_layout
from ..core.profiles import KV_DTYPE_BITS, load_model
from ..core.scenario import Deployment
from ._scenario_args import add_profile_args, positive_int


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("kvcache", help="KV-cache bytes per token, layer, page, request and rank",
                              description="Print a model's KV-cache layout (decimal units; B = bytes).")
    p.add_argument("--model", required=True, help="model profile id, alias, or path to a YAML profile")
    p.add_argument("--kv-dtype", choices=sorted(KV_DTYPE_BITS), help="KV dtype (default: the model's)")
    p.add_argument("--tp", type=positive_int, default=1)
    p.add_argument("--pp", type=positive_int, default=1)
    p.add_argument("--page-size", type=positive_int, default=16, help="tokens per page")
    p.add_argument("--isl", type=positive_int, default=1024, help="request length in tokens")
    p.add_argument("--dp-attention", action="store_true", help="data-parallel attention (MLA latent not replicated)")
    add_profile_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _per_layer(values: tuple[int, ...]) -> str:
    runs: list[list[int]] = []
    for v in values:
        if runs and runs[-1][0] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    return ", ".join(f"{n} x {v:,}" for v, n in runs) if len(runs) <= 4 else f"{len(values)} layers, {min(values):,}..{max(values):,}"


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model, list(args.profiles or []))
    dep = Deployment(tp=args.tp, pp=args.pp, page_size=args.page_size, kv_dtype=args.kv_dtype, dp_attention=args.dp_attention)
    layout = kv_layout(model, dep, source="<cli>", side=None)
    data = layout.to_dict(args.isl)
    if args.json:
        print(json.dumps(data))
        return 0
    sliding = sum(layout.sliding)
    rows = [
        ("model", f"{model.id} ({model.attention}, {model.layers} layers)"),
        ("kv_dtype", layout.kv_dtype),
        ("bytes_per_token", f"{layout.bytes_per_token:,}"),
        ("bytes_per_token_per_layer", _per_layer(layout.bytes_per_token_per_layer)),
        (f"bytes_per_page ({layout.page_size} tokens)", f"{layout.bytes_per_page:,}"),
        (f"bytes_per_request (isl {args.isl})", f"{data['bytes_per_request']:,}"),
        ("paged_bytes_per_request", f"{data['paged_bytes_per_request']:,}"),
        (f"bytes_per_rank_per_token (tp {layout.tp}, pp {layout.pp})", f"{layout.bytes_per_rank_per_token:,}"),
        ("kv heads per rank / copies", f"{layout.heads_per_rank} / {layout.copies}"),
    ]
    if sliding:
        rows.append(("sliding-window layers", f"{sliding} (window {layout.window} tokens)"))
    print(tabulate(rows, tablefmt="plain"))
    return 0
