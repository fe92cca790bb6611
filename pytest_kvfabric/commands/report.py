"""`kvfabric report RUN.json [MORE.json ...] --html OUT.html [--png DIR] [--baseline OLD.json]`:
one self-contained HTML page (figures embedded) from recorded JSON, no live run needed."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="build a self-contained HTML report (and PNG figures) from recorded JSON",
                       description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", metavar="RUN.json",
                   help="pytest --kv-json reports, `kvfabric run --json` results, `kvfabric sweep --json` reports")
    p.add_argument("--html", required=True, metavar="OUT.html", help="where to write the page")
    p.add_argument("--png", metavar="DIR", help="also write every figure as a PNG file here")
    p.add_argument("--baseline", metavar="OLD.json", help="a baseline report: adds baseline-against-current figures")
    p.add_argument("--title", default="pytest-kvfabric report", help="page title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import htmlfile

    runs = [htmlfile.load(p, lab) for p, lab in zip(args.inputs, htmlfile.labels(args.inputs))]
    base = [htmlfile.load(args.baseline)] if args.baseline else []
    figures = htmlfile.write(args.html, runs, base, args.png, args.title)
    sys.stdout.write(f"kvfabric: report written to {args.html} ({len(figures)} figure(s))\n")
    if args.png:
        sys.stdout.write(f"kvfabric: {len(figures)} PNG file(s) written to {args.png}\n")
    return 0
