"""Benchmark: plan a 1,000,000-token DeepSeek-V3 request with 16-token pages.

Target (issue 2): under 1 s and under 500 MB peak memory. Each measurement runs in a fresh
subprocess so one does not warm up or inflate the other:
  - time: build_plan twice in one process; the first build pays the first touch of its
    memory (page faults), the second shows the steady cost; both are printed.
  - memory: tracemalloc peak of Python+numpy allocations during build_plan, and the
    process's max RSS (includes the interpreter and numpy, ~40 MB).
Usage: python benchmarks/bench_plan.py [--isl N] [--page-size N] [--prefill-tp N] [--decode-tp N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, tracemalloc
from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.core.scenario import Deployment, Distribution, Scenario, Workload
isl, page, ptp, dtp, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sc = Scenario(id="bench", model=load_model("deepseek-v3"), gpu=load_gpu("h800"),
              prefill=Deployment(tp=ptp, page_size=page), decode=Deployment(tp=dtp, page_size=page),
              workload=Workload(isl=Distribution.fixed(isl), requests=1))
out = {}
if mode == "time":
    times = []
    for _ in range(2):
        t0 = time.perf_counter(); plan = build_plan(sc); times.append(time.perf_counter() - t0)
        rows, nbytes = len(plan.transfers), plan.total_bytes
        del plan
    out = {"first_s": times[0], "second_s": times[1], "transfers": rows, "total_bytes": nbytes}
else:
    tracemalloc.start()
    plan = build_plan(sc)
    out = {"tracemalloc_peak_mb": tracemalloc.get_traced_memory()[1] / 1e6,
           "table_mb": plan.transfers.nbytes / 1e6}
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
print(json.dumps(out))
"""


def child(mode: str, args: argparse.Namespace) -> dict:
    argv = [sys.executable, "-c", CHILD, str(args.isl), str(args.page_size), str(args.prefill_tp), str(args.decode_tp), mode]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isl", type=int, default=1_000_000)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--prefill-tp", type=int, default=1)
    parser.add_argument("--decode-tp", type=int, default=1)
    args = parser.parse_args()
    timing = child("time", args)
    memory = child("memory", args)
    print(f"DeepSeek-V3, isl {args.isl:,}, page {args.page_size}, TP{args.prefill_tp} -> TP{args.decode_tp}")
    print(f"  transfers            {timing['transfers']:,}")
    print(f"  total bytes          {timing['total_bytes']:,}")
    print(f"  build_plan, first    {timing['first_s']:.3f} s (includes first-touch page faults)")
    print(f"  build_plan, second   {timing['second_s']:.3f} s")
    print(f"  tracemalloc peak     {memory['tracemalloc_peak_mb']:.0f} MB (table itself {memory['table_mb']:.0f} MB)")
    print(f"  max RSS              {memory['maxrss_mb']:.0f} MB (whole process)")
    ok = timing["second_s"] < 1.0 and memory["maxrss_mb"] < 500
    print(f"  target (<1 s, <500 MB): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
