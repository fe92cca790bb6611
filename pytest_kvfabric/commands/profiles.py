"""`kvfabric profiles`: list the model and GPU profiles that resolve (user dirs first)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tabulate import tabulate

from ..core.profiles import GpuProfile, ModelProfile, list_gpus, list_models


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("profiles", help="list model and GPU profiles",
                              description="List the model and GPU profiles: user directories "
                              "(--profiles) first, then the shipped ones.")
    p.add_argument("--profiles", metavar="DIR", action="extend", nargs="+", default=[],
                   help="extra profile directory, searched before the shipped profiles (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(func=run)


def moe_summary(m: ModelProfile) -> str:
    if m.moe is None:
        return "dense"
    text = f"{m.moe.experts} experts, top-{m.moe.active_experts}"
    if m.moe.shared_experts:
        text += f" + {m.moe.shared_experts} shared"
    if m.moe.dense_layers:
        text += f", first {m.moe.dense_layers} dense"
    return text


def _attention(m: ModelProfile) -> str:
    text = m.attention
    if m.sliding_window is not None:
        text += f" (+{len(m.sliding_window.layers)} SWA {m.sliding_window.window})"
    return text


def _kv(m: ModelProfile) -> str:
    if m.mla is not None:
        return f"latent {m.mla.kv_lora_rank}+{m.mla.qk_rope_head_dim}"
    return str(m.kv_heads)


def _tf(g: GpuProfile, dtype: str) -> str:
    value = g.tflops.get(dtype)
    return "-" if value is None else f"{value:g}"


def run(args: argparse.Namespace) -> int:
    models = list_models(args.profiles)
    gpus = list_gpus(args.profiles)
    if args.json:
        payload = {"models": [dict(m.to_dict(), path=m.path) for m in models],
                   "gpus": [dict(g.to_dict(), path=g.path) for g in gpus]}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return 0
    model_rows = [[m.id, ", ".join(m.aliases), _attention(m), m.layers, _kv(m), m.head_dim,
                   moe_summary(m), m.source.split(" ")[0]] for m in models]  # first URL keeps it narrow
    gpu_rows = [[g.id, _tf(g, "bf16"), _tf(g, "fp8"), _tf(g, "fp4"), f"{g.hbm_capacity_gb:g}",
                 f"{g.hbm_tb_per_s:g}", f"{g.scaleup_gb_per_s:g}", f"{g.nic_gbps:g}"] for g in gpus]
    out = ["Models", tabulate(model_rows, headers=["id", "aliases", "attention", "layers", "kv heads",
                                                    "head_dim", "MoE", "source"]),
           "", "GPUs (dense peak)",
           tabulate(gpu_rows, headers=["id", "bf16 TFLOPS", "fp8 TFLOPS", "fp4 TFLOPS", "HBM GB",
                                       "HBM TB/s", "scale-up GB/s", "NIC Gb/s"])]
    sys.stdout.write("\n".join(out) + "\n")
    return 0
