"""`kvfabric calibrate`: fit a GPU profile's timing terms to a few measurements from one real node."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from ..calibration.fit import DEFAULT_FIT, FIT_BOUNDS, fit, with_params
from ..calibration.predict import predict
from ..calibration.report import evaluate, summarize
from ..calibration.table import load_table
from ..errors import ProfileError
from ..core.profiles import load_gpu


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("calibrate", help="fit a GPU profile's timing terms to your measurements",
                              description="Fit the GPU profile's efficiency and overhead terms to measured TTFT / "
                              "TPOT / end-to-end rows (YAML: a 'rows' list as in the validation table; gpu, url, "
                              "source, framework and note may be left out) and write the calibrated profile. "
                              "Prints the errors before and after.")
    p.add_argument("--gpu", required=True, help="GPU profile id, alias, or path to start from")
    p.add_argument("--measurements", required=True, metavar="FILE", help="YAML file of measured rows")
    p.add_argument("-o", "--output", required=True, metavar="OUT.yaml", help="calibrated GPU profile to write")
    p.add_argument("--params", help=f"comma-separated terms to fit (default: {', '.join(DEFAULT_FIT)}, plus "
                   "allreduce_latency_us with TP rows and the decode overheads with decode rows); "
                   f"valid: {', '.join(FIT_BOUNDS)}")
    p.add_argument("--profiles", metavar="DIR", action="extend", nargs="+", default=[],
                   help="extra profile directory, searched before the shipped profiles (repeatable)")
    p.set_defaults(func=run)


def _params(args: argparse.Namespace, rows: Any) -> list[str]:
    if args.params:
        names = [n.strip() for n in args.params.split(",") if n.strip()]
        bad = [n for n in names if n not in FIT_BOUNDS]
        if bad:
            raise ProfileError("<cli>", "--params", f"cannot fit {', '.join(bad)}; valid: {', '.join(FIT_BOUNDS)}")
        return names
    names = list(DEFAULT_FIT)
    if any(m.tp > 1 for m in rows):
        names.append("allreduce_latency_us")
    if any(m.metric in ("tpot_ms", "e2e_ms") for m in rows):
        names += ["decode_step_overhead_us", "decode_layer_overhead_us"]
    return names


def _show(title: str, results: list[dict[str, Any]]) -> None:
    s = summarize(results)["all"]
    print(f"{title}: median |err| {100 * s['median_abs_err']:.1f}%, worst {100 * s['worst_err']:+.1f}%, "
          f"within +-25% {100 * s['within_25pct']:.0f}%")


def run(args: argparse.Namespace) -> int:
    dirs = list(args.profiles or [])
    gpu = load_gpu(args.gpu, dirs)
    table = load_table(args.measurements, dirs, default_gpu=gpu.id)
    rows = [m for m in table.rows if m.gpu in (gpu.id, *gpu.aliases) or m.gpu == args.gpu]
    if len(rows) != len(table.rows):
        raise ProfileError(args.measurements, "rows", f"every row must be measured on {gpu.id} (got other GPUs)")
    names = _params(args, rows)
    if len(rows) < len(names):
        raise ProfileError(args.measurements, "rows", f"{len(rows)} measurement(s) cannot fit {len(names)} parameters "
                           f"({', '.join(names)}); add rows or pass fewer --params")
    model_of = lambda n: table.model(n, dirs)  # noqa: E731
    before = evaluate(rows, model_of, lambda n: gpu)
    values = fit(rows, {gpu.id: gpu}, lambda m, g: predict(m, model_of(m.model), g), names)
    tuned = with_params(gpu, names, list(values.values()))
    after = evaluate(rows, model_of, lambda n: tuned)
    print(tabulate([(b["id"], b["metric"], f"{b['measured']:g}", f"{b['predicted']:.4g}", f"{a['predicted']:.4g}")
                    for b, a in zip(before, after)], headers=["row", "metric", "measured", "before", "after"]))
    print()
    _show("before", before)
    _show("after ", after)
    print(tabulate([(n, f"{getattr(gpu, n):g}", f"{v:.4g}") for n, v in values.items()], headers=["term", "was", "fitted"]))
    out = tuned.to_dict()
    out["source"] = f"{gpu.source} | timing terms calibrated by kvfabric calibrate on {Path(args.measurements).name} ({len(rows)} rows)"
    rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}
    Path(args.output).write_text(yaml.safe_dump(rounded, sort_keys=False), encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0



