"""Benchmark: the agents' native per-write hot path against its Python twin.

Three interleaved comparisons, native vs python (the reference), per round:
  - prefill loop: run_prefill over 64 KiB rows with pacing none and an initiator that does
    no I/O (completes every posted write at the next poll): CPU µs per row of the loop's
    own bookkeeping (slot rule, stamping, batch building, completions);
  - page check: PageLedger verification of 64 KiB pages (C PageCheck vs ctypes memcmp):
    CPU µs per page, which includes the memcmp of the page itself;
  - product path: run_scenario at 64 KiB over loopback, pacing none, agent option
    hot_path=native|python: GB/s and each agent's CPU s/GB.
There is no target: the rows say what the native path buys (issue 3's 64 KiB target is
judged by bench_tcp.py, which runs the default, native, path).
Usage: python benchmarks/bench_hotpath.py [--rounds N] [--runner-mib N] [--json]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import _common as C
from pytest_kvfabric.emulator.plan import TRANSFER_DTYPE, build_plan
from pytest_kvfabric.endpoint import pattern, slotbook
from pytest_kvfabric.endpoint.prefill import PrefillOptions, run_prefill
from pytest_kvfabric.run.runner import run_scenario
from pytest_kvfabric.transports.base import COMPLETION_DTYPE

PAGE = 64 << 10
POOL = 64 << 20


class NullInitiator:
    """Completes everything posted at the next poll, without I/O: what the loop itself costs."""

    def __init__(self) -> None:
        self.q: list[np.ndarray] = []

    def post(self, batch: np.ndarray, timeout_s: float) -> None:
        self.q.append(batch["xfer"].copy())

    def poll(self, timeout_s: float) -> np.ndarray:
        if not self.q:
            return np.zeros(0, COMPLETION_DTYPE)
        xs = np.concatenate(self.q)
        self.q = []
        out = np.empty(len(xs), COMPLETION_DTYPE)
        out["xfer"], out["t_ns"] = xs, time.monotonic_ns()
        return out

    def outstanding(self) -> int:
        return sum(len(x) for x in self.q)


def prefill_loop(hot_path: str, rows_mib: int = 256) -> dict:
    sc = C.synthetic_scenario(nbytes=PAGE, transfers=(rows_mib << 20) // PAGE, batch=64, pacing="none",
                              pool_bytes=POOL)
    plan = build_plan(sc)
    keys = pattern.row_keys(1, plan.transfers)
    src = pattern.base_pattern(1, plan.src_region_bytes).copy()
    c0 = time.process_time()
    m = run_prefill(plan, NullInitiator(), src, keys, PrefillOptions(pacing="none", timeout_s=60, hot_path=hot_path))
    cpu = time.process_time() - c0
    assert m["hot_path"] == hot_path and m["requests_completed"] == len(plan.requests)
    return {"us_per_row": cpu / len(plan.transfers) * 1e6, "rows": len(plan.transfers)}


def page_check(hot_path: str, rounds_of_pool: int = 4) -> dict:
    nslots = POOL // PAGE
    n = rounds_of_pool * nslots
    t = np.zeros(n, TRANSFER_DTYPE)
    idx = np.arange(n)
    t["request"], t["block"] = idx // nslots, idx % nslots
    t["src_off"] = t["dst_off"] = (idx % nslots) * PAGE
    t["nbytes"] = PAGE
    keys = pattern.row_keys(3, t)
    base = pattern.base_pattern(3, POOL)
    dst = np.empty(POOL, np.uint8)
    led = pattern.PageLedger(t, keys, base, dst, PAGE, np.full(rounds_of_pool, nslots * PAGE, np.int64),
                             hot_path=hot_path)
    cpu = 0.0
    for q in range(rounds_of_pool):
        dst[:] = base
        for r in range(q * nslots, (q + 1) * nslots):  # the pages as the transport places them
            o = int(t["dst_off"][r])
            dst[o:o + 16], dst[o + PAGE - 8:o + PAGE] = keys[r, :16], keys[r, 16:]
            led.place(o, PAGE)
        c0 = time.process_time()
        led.verify_all()
        cpu += time.process_time() - c0
    assert led.error_count == 0 and led.pages_checked == n and led.hot_path == hot_path
    return {"us_per_page": cpu / n * 1e6, "pages": n}


def product_path(hot_path: str, mib: int) -> dict:
    sc = C.synthetic_scenario(nbytes=PAGE, transfers=(mib << 20) // PAGE, batch=64, pacing="none",
                              transport="tcp", pool_bytes=POOL, verify=True)
    d = run_scenario(sc, timeout_s=120, options={"hot_path": hot_path}).to_dict()
    assert d["data_path"]["sender"]["hot_path"] == hot_path == d["data_path"]["receiver"]["hot_path"]
    return {"gbps_bytes": d["throughput_gbps"] / 8, "cpu_sender": d["cpu_s_per_gb"]["sender"],
            "cpu_receiver": d["cpu_s_per_gb"]["receiver"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runner-mib", type=int, default=1024, help="bytes per product-path run, MiB")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if slotbook.NativeSlotBook is None:
        print("the native extension is not built (pip install -e . with a C compiler)", file=sys.stderr)
        return 2
    env = C.env_info()
    raw = {}
    for name, fn in (("loop", prefill_loop), ("check", page_check),
                     ("runner", lambda h: product_path(h, a.runner_mib))):
        got = C.interleave(a.rounds, {f"{name}-native": lambda fn=fn: fn("native"),
                                      f"{name}-python": lambda fn=fn: fn("python")}, C.log)
        raw.update(got)
    col = C.column
    rows = [
        C.ratio_row("prefill loop CPU per 64 KiB row (no I/O), native vs python", col(raw["loop-native"], "us_per_row"),
                    col(raw["loop-python"], "us_per_row"), unit="µs", target=None, ref_label="python"),
        C.ratio_row("page check CPU per 64 KiB page, native vs ctypes", col(raw["check-native"], "us_per_page"),
                    col(raw["check-python"], "us_per_page"), unit="µs", target=None, ref_label="python"),
        C.ratio_row("product path 64 KiB loopback, native vs python", col(raw["runner-native"], "gbps_bytes"),
                    col(raw["runner-python"], "gbps_bytes"), unit="GB/s", target=None, ref_label="python"),
        C.ratio_row("CPU sender, native vs python", col(raw["runner-native"], "cpu_sender"),
                    col(raw["runner-python"], "cpu_sender"), unit="CPU s/GB", target=None, ref_label="python"),
        C.ratio_row("CPU receiver, native vs python", col(raw["runner-native"], "cpu_receiver"),
                    col(raw["runner-python"], "cpu_receiver"), unit="CPU s/GB", target=None, ref_label="python"),
    ]
    C.emit("bench_hotpath", rows, raw, env, a.json,
           notes=[f"{a.rounds} interleaved rounds; product path moves {a.runner_mib} MiB per run"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
