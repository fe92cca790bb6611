"""Ratios head/base of the interleaved A/B in this directory: median of every sample per side
(each run's `ours` values), ratio of medians, 90% bootstrap interval of that ratio (2000
resamples, seed 0). Usage: python summarize.py [DIR] > ab_summary.md (DIR: this directory)"""
from __future__ import annotations

import glob
import json
import os
import statistics
import sys

import numpy as np

HERE = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))


def samples(side: str, bench: str) -> tuple[dict[str, list[float]], dict[str, str], list[float]]:
    vals: dict[str, list[float]] = {}
    units: dict[str, str] = {}
    loads: list[float] = []
    for path in sorted(glob.glob(os.path.join(HERE, f"{side}-{bench}-*.json"))):
        with open(path) as f:
            doc = json.load(f)
        loads.append(doc["env"]["loadavg"][0])
        for row in doc["rows"]:
            vals.setdefault(row["label"], []).extend(row["ours"]["values"])
            units[row["label"]] = row["unit"]
    return vals, units, loads


def main() -> None:
    rng = np.random.default_rng(0)
    for bench in ("bench_hotpath", "bench_tcp"):
        base, units, lb = samples("base", bench)
        head, _, lh = samples("head", bench)
        if not base:
            continue
        print(f"**{bench}**: load average (1 min) at the runs' start {min(lb + lh):.1f}-{max(lb + lh):.1f}\n")
        print("| row | unit | base median (n) | head median (n) | head/base | 90% bootstrap CI |")
        print("|---|---|---|---|---|---|")
        for label, b in base.items():
            h = head.get(label)
            if not h:
                continue
            ratio = statistics.median(h) / statistics.median(b)
            bs = [np.median(rng.choice(h, len(h))) / np.median(rng.choice(b, len(b))) for _ in range(2000)]
            lo, hi = np.percentile(bs, [5, 95])
            print(f"| {label} | {units[label]} | {statistics.median(b):.4g} ({len(b)}) | "
                  f"{statistics.median(h):.4g} ({len(h)}) | {ratio:.2f} | [{lo:.2f}-{hi:.2f}] |")
        print()


if __name__ == "__main__":
    main()
