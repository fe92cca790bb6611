"""Benchmark: emulated timing vs published measurements, ours beside a GenZ-style pure roofline.

Every row of the shipped validation table (validation/published.yaml) is predicted twice on the
same profile: with the calibrated terms, and as a pure roofline (every efficiency 1, no size
curves, no overheads). Prints per row predicted/measured for both, then per split (fit =
sources the shipped parameters were fitted on; holdout = the others) the median |error|, the
worst error and the share within +-25% ("all" = fit + holdout; a row of kind fleet_average, a
production fleet's average over hours of varying load, is reported on its own), and whether the
issue's targets hold over the point measurements:
  held-out: every row within +-25% and median |error| <= 12%; all rows: none worse than +-35%.
No timing is taken: the figures are arithmetic, identical on any host.
Usage: python benchmarks/bench_validate.py [--table PATH] [--json]
"""
from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from pytest_kvfabric.calibration.report import evaluate, summarize
from pytest_kvfabric.calibration.table import FLEET_AVERAGE, load_table, shipped_table_path


def targets(summary: dict, results: list[dict]) -> dict[str, bool]:
    """The issue's targets over the point measurements (fleet averages are reported on their own)."""
    held = [r for r in results if r["split"] == "holdout"]
    points = [r for r in results if r["split"] != FLEET_AVERAGE]
    return {
        "holdout_all_within_25pct": all(abs(r["err"]) <= 0.25 for r in held),
        "holdout_median_le_12pct": summary.get("holdout", {}).get("median_abs_err", 1.0) <= 0.12,
        "all_within_35pct": all(abs(r["err"]) <= 0.35 for r in points),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", help="validation table (default: the shipped one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = load_table(args.table or shipped_table_path())
    results = evaluate(table.rows, table.model, table.gpu, table.split_of)
    ours, roof = summarize(results), summarize(results, "roofline_err")
    if args.json:
        print(json.dumps({"rows": results, "ours": ours, "roofline": roof, "targets": targets(ours, results)}))
        return 0
    print(tabulate([(r["id"], r["split"], r["metric"], f"{r['measured']:g}", f"{r['predicted']:.4g}",
                     f"{r['err'] * 100:+.0f}%", f"{r['roofline']:.4g}", f"{r['roofline_err'] * 100:+.0f}%") for r in results],
                   headers=["row", "split", "metric", "measured", "ours", "ours err", "roofline", "roofline err"]))
    print()
    rows = []
    for split in ("fit", "holdout", "all", FLEET_AVERAGE):
        o, f = ours.get(split), roof.get(split)
        if o is None:
            continue
        rows.append((split, o["rows"], f"{o['median_abs_err'] * 100:.1f}%", f"{o['worst_err'] * 100:+.0f}%",
                     f"{o['within_25pct'] * 100:.0f}%", f"{f['median_abs_err'] * 100:.1f}%", f"{f['worst_err'] * 100:+.0f}%",
                     f"{f['within_25pct'] * 100:.0f}%", f"{f['median_abs_err'] / max(o['median_abs_err'], 1e-9):.1f}x"))
    print(tabulate(rows, headers=["split", "rows", "ours median |err|", "ours worst", "ours within 25%",
                                  "roofline median |err|", "roofline worst", "roofline within 25%",
                                  "roofline/ours median"]))
    print()
    for name, ok in targets(ours, results).items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
