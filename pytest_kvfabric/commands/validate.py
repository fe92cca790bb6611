"""`kvfabric validate`: the emulated timing against published measurements (predicted vs measured)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from tabulate import tabulate

from ..calibration.report import evaluate, summarize
from ..calibration.table import load_table, shipped_table_path


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("validate", help="compare the emulated timing with published measurements",
                              description="Predict every row of a measurement table (default: the shipped table of "
                              "published TTFT/TPOT/throughput figures) and print predicted vs measured, the ratio, "
                              "a GenZ-style pure roofline beside it, and a summary per split (fit / holdout).")
    p.add_argument("--table", metavar="PATH", help="measurement table YAML (default: the shipped published table)")
    p.add_argument("--profiles", metavar="DIR", action="extend", nargs="+", default=[],
                   help="extra profile directory, searched before the shipped profiles (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dirs = list(args.profiles or [])
    table = load_table(args.table or shipped_table_path(), dirs)
    results = evaluate(table.rows, lambda n: table.model(n, dirs), lambda n: table.gpu(n, dirs), table.split_of)
    summary = {"ours": summarize(results), "roofline": summarize(results, "roofline_err")}
    if args.json:
        print(json.dumps({"table": table.path, "rows": results, "summary": summary}))
        return 0
    print(tabulate([(r["id"], r["split"], r["metric"], f"{r['measured']:g}", f"{r['predicted']:.4g}",
                     f"{r['ratio']:.2f}", f"{r['roofline'] / r['measured']:.2f}") for r in results],
                   headers=["row", "split", "metric", "measured", "predicted", "ratio", "roofline ratio"]))
    print()
    rows = []
    for name, summ in summary.items():
        for split, s in summ.items():
            rows.append((name, split, s["rows"], f"{100 * s['median_abs_err']:.1f}%", f"{100 * s['worst_err']:+.1f}%",
                         f"{100 * s['within_25pct']:.0f}%"))
    print(tabulate(rows, headers=["model", "split", "rows", "median |err|", "worst", "within +-25%"]))
    return 0
