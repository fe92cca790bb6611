"""An interleaved A/B's summary: the head/base ratio of each row's median over every run of each
side (files `{base,head}-{bench_hotpath,bench_tcp}-*.json` in DIR, as the ab_run.sh scripts under
benchmarks/results/ write them), with a 90% bootstrap interval.

    python3 benchmarks/ab_summarize.py DIR
"""
import glob
import json
import os
import sys

import numpy as np

os.chdir(sys.argv[1] if len(sys.argv) > 1 else ".")
rng = np.random.default_rng(0)
for script in ("bench_hotpath", "bench_tcp"):
    vals = {}
    for side in ("base", "head"):
        for f in sorted(glob.glob(f"{side}-{script}-*.json")):
            try:
                d = json.load(open(f))
            except ValueError:
                continue
            for r in d["rows"]:
                for who in ("ours", "ref"):
                    if r.get(who) and r[who].get("median") is not None:
                        vals.setdefault((r["label"], who, r["unit"]), {}).setdefault(side, []).append(r[who]["median"])
    print(f"## {script}")
    for (label, who, unit), sides in vals.items():
        b, h = np.array(sides.get("base", [])), np.array(sides.get("head", []))
        if len(b) < 2 or len(h) < 2:
            continue
        boot = [np.median(rng.choice(h, h.size)) / np.median(rng.choice(b, b.size)) for _ in range(4000)]
        lo, hi = np.percentile(boot, [5, 95])
        print(f"| {label} [{who}] | {unit} | {np.median(b):.4g} | {np.median(h):.4g} | {np.median(h)/np.median(b):.3f} [{lo:.2f}-{hi:.2f}] | {len(b)}/{len(h)} |")
