"""`kvfabric plan`: build a scenario's TransferPlan and print its summary (no I/O beyond stdout)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from tabulate import tabulate

from ..emulator.plan import build_plan, plan_summary
from ._scenario_args import add_scenario_args, scenario_from_args


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("plan", help="plan the KV transfers of a scenario and summarize them",
                              description="Plan every KV write of a prefill->decode scenario; print transfers, "
                              "bytes, sizes, per-layer ready times, prefill and decode-step times and the "
                              "bandwidth (decimal Gb/s) needed to hide the transfer behind prefill.")
    add_scenario_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    summary = plan_summary(build_plan(scenario), scenario)
    if args.json:
        print(json.dumps(summary))
        return 0
    rows = [
        ("model / gpu", f"{summary['model']} / {summary['gpu']}"),
        ("requests", summary["requests"]),
        ("transfers", f"{summary['transfers']:,}"),
        ("total_bytes", f"{summary['total_bytes']:,}"),
        ("prefill_ms (mean)", f"{summary['prefill_ms']:.3f}"),
        ("decode_step_ms (mean)", f"{summary['decode_step_ms']:.3f}"),
        ("required_gbps", f"{summary['required_gbps']:.2f}"),
        ("ranks prefill -> decode", f"{summary['src_ranks']} -> {summary['dst_ranks']}"),
        ("slot bytes prefill / decode", f"{summary['src_slot_bytes']:,} / {summary['dst_slot_bytes']:,}"),
    ]
    print(tabulate(rows, tablefmt="plain"))
    print()
    print(tabulate([(h["nbytes"], h["count"]) for h in summary["size_histogram"]], headers=["transfer bytes", "count"]))
    ready = summary["layer_ready_ms"]
    if ready:
        print()
        step = max(1, len(ready) // 8)
        shown = sorted(set(list(range(0, len(ready), step)) + [len(ready) - 1]))
        print(tabulate([(i, f"{ready[i]:.3f}") for i in shown], headers=["layer", "ready_ms (request 0)"]))
    return 0
