"""What does fan-in cost? N prefill instances into one decode instance against one sender.

Issue 23's incast penalty, measured the way the product reports it (run/flows.py,
measure/flowstats.py): each round runs a fan-in scenario (P prefill instances, one decode
instance, every page verified) and, right after on the same hosts, its reference: the same
requests sent by ONE sender agent that emulates the same P prefill GPUs' timelines (same
arrivals, same layer ready times, same total load). Per round and shape, the paired figures are
the decode instance's exposed p99 (and p50) with P senders and with one; the ratio of the two is
the incast penalty as a ratio (1 = no penalty). Jain's index over the flows and the throughput
ratio are context. Rounds interleave the shapes, so host drift lands on all of them.

On --fabric netns (root) the instances share a bridge and --rate-mbit shapes the decode side's
port: fan-in meets in that one queue, which is what the penalty is about. On loopback the
senders share `lo` and the CPUs, and the penalty is mostly CPU contention.

    python benchmarks/bench_incast.py [--fabric local|netns] [--rate-mbit 2000] [--rounds 5]
                                      [--shapes 2x1,4x1] [--pacing emulated|none] [--json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from pytest_kvfabric.core.profiles import load_gpu, load_model  # noqa: E402
from pytest_kvfabric.core.scenario import Topology  # noqa: E402
from pytest_kvfabric.fabric.base import PairRequest  # noqa: E402
from pytest_kvfabric.fabric.select import open_layout  # noqa: E402
from pytest_kvfabric.harness.resolve import resolve  # noqa: E402
from pytest_kvfabric.run.flows import FlowRunner  # noqa: E402


def scenario(P: int, pacing: str, requests: int) -> Any:
    fields = {"workload": {"isl": 128, "osl": 64, "requests": requests,
                           "arrival": {"kind": "poisson", "rate_per_s": 20}},
              "prefill": {"tp": 2}, "decode": {"tp": 2}, "pool_mib": 32, "seed": 7, "pacing": pacing,
              "topology": {"prefill": P, "decode": 1}}
    return resolve(fields, id=f"incast-{P}p1d", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"),
                   transport="tcp")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fabric", default="local", choices=("local", "netns"))
    ap.add_argument("--rate-mbit", type=float, default=None, help="netns: shape the links (decode side's port too)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", default="2x1,4x1", help="PxD fan-in shapes (D must be 1)")
    ap.add_argument("--pacing", default="emulated", choices=("emulated", "none"))
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",") if s]
    env = C.env_info()
    opts = {"rate_mbit": args.rate_mbit} if args.rate_mbit else {}
    layouts, closers = {}, []
    try:
        for P, D in shapes:
            layout, close = open_layout(args.fabric, PairRequest(worker=0, rails=1, topology=(P, D),
                                                                 netns_options=opts, netns_prefix="kvfbi"))
            layouts[(P, D)] = layout
            closers.append(close)
        raw: dict[str, list[dict[str, Any]]] = {f"{P}x{D}": [] for P, D in shapes}
        for rnd in range(args.rounds):
            for P, D in shapes:
                sc = scenario(P, args.pacing, args.requests).replace(topology=Topology(P, D))
                with FlowRunner(layouts[(P, D)], timeout_s=180) as runner:
                    res = runner.run(sc)
                (inc,) = res.incast
                row = {"round": rnd, "exposed_p99_ms": inc["exposed_p99_ms"],
                       "reference_exposed_p99_ms": inc["reference_exposed_p99_ms"],
                       "exposed_p50_ms": inc["exposed_p50_ms"], "reference_exposed_p50_ms": inc["reference_exposed_p50_ms"],
                       "throughput_gbps": inc["throughput_gbps"],
                       "reference_throughput_gbps": inc["reference_throughput_gbps"],
                       "fairness_jain": res.fairness_jain, "retransmits": res.retransmits,
                       "pages_checked": res.integrity["pages_checked"], "errors": res.integrity["errors"]}
                raw[f"{P}x{D}"].append(row)
                C.log(f"round {rnd} {P}x{D}: exposed p99 {row['exposed_p99_ms']:.1f} ms vs one sender "
                      f"{row['reference_exposed_p99_ms']:.1f} ms, fairness {row['fairness_jain']}")
    finally:
        for close in closers:
            close()
    rows = []
    for key, runs in raw.items():
        col = lambda k: C.column(runs, k)  # noqa: E731
        rows.append(C.ratio_row(f"{key} exposed p99, {key.split('x')[0]} senders vs one", col("exposed_p99_ms"),
                                col("reference_exposed_p99_ms"), unit="ms", target=None, higher_is_better=False,
                                ref_label="one sender"))
        rows.append(C.ratio_row(f"{key} exposed p50, senders vs one", col("exposed_p50_ms"),
                                col("reference_exposed_p50_ms"), unit="ms", target=None, higher_is_better=False,
                                ref_label="one sender"))
        rows.append(C.ratio_row(f"{key} throughput, senders vs one", col("throughput_gbps"),
                                col("reference_throughput_gbps"), unit="Gb/s", target=None, ref_label="one sender"))
    notes = [f"fabric {args.fabric}" + (f", links shaped to {args.rate_mbit:g} Mbit/s" if args.rate_mbit else ""),
             f"pacing {args.pacing}; llama3.1-8b, TP2 -> TP2, {args.requests} requests of 128 tokens, Poisson 20/s",
             "fairness (Jain) per shape: " + "; ".join(
                 f"{k} {C.summary(C.column(v, 'fairness_jain'))['median']:.3f}" for k, v in raw.items()),
             "pages verified: " + ", ".join(f"{k} {sum(r['pages_checked'] for r in v)} (errors "
                                           f"{sum(r['errors'] for r in v)})" for k, v in raw.items())]
    C.emit("bench_incast", rows, raw, env, args.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
