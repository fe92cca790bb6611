"""`kvfabric compare OLD.json NEW.json [--max-regression PCT]`: the CI gate outside pytest."""
from __future__ import annotations

import argparse

from ..report import baseline, jsonreport


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two JSON reports; exit 1 on a regression")
    p.add_argument("old", help="baseline report (JSON from --kv-json or --kv-save-baseline)")
    p.add_argument("new", help="report of the run under test")
    p.add_argument("--max-regression", type=float, default=5.0, metavar="PCT",
                   help="allowed throughput/latency regression in percent (default 5)")
    p.add_argument("--fail-on-missing", action="store_true",
                   help="also fail when a baseline case is missing from the new report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_regression < 0:
        from ..errors import ProfileError

        raise ProfileError("<cli>", "--max-regression", "must be >= 0")
    old, new = jsonreport.read(args.old), jsonreport.read(args.new)
    cmp = baseline.compare(old, new, args.max_regression)
    print(baseline.render(cmp, args.max_regression))
    from ..report import envdiff

    for line in envdiff.changes(old.get("environment"), new.get("environment")):
        print(f"environment changed: {line}")
    if cmp.regressions or (args.fail_on_missing and cmp.only_old):
        return 1
    return 0
