"""`kvfabric compare OLD.json [OLD2.json ...] NEW.json`: the baseline gate outside pytest.

Several OLD reports are the baseline's sessions (one pytest run each): the verdict then knows
the spread between sessions (report/verdict.py, judge_sessions); the last report is the run
under test.

Prints what changed in the environment (kernel, NIC driver/firmware, MTU, offloads, packages,
pair), then per case and gated metric: baseline median [95% CI], current median [95% CI], the
change with its interval, the allowed regression and the verdict.

Exit status: 0 no decided regression (undecided verdicts pass unless --undecided fail),
1 a regression beyond its threshold (or an undecided verdict with --undecided fail, or a missing
baseline case with --fail-on-missing), 2 usage error or unreadable report.
"""
from __future__ import annotations

import argparse
import json

from ..report import baseline, fpdiff, jsonreport
from ..report.gate_metrics import parse_thresholds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="gate a report against a baseline; exit 1 on a regression",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("old", nargs="+", help="baseline report(s) (JSON from --kv-json or --kv-save-baseline); "
                                          "several: one per session (record 5)")
    p.add_argument("new", help="report of the run under test")
    p.add_argument("--max-regression", action="append", default=[], metavar="PCT|METRIC=PCT,...",
                   help="allowed regression in percent: a number for every metric and/or METRIC=PCT items "
                        "(repeatable; the README lists metrics and defaults)")
    p.add_argument("--undecided", choices=baseline.UNDECIDED_POLICIES, default="pass",
                   help="an undecided verdict (noise wider than the threshold) passes (default) or fails")
    p.add_argument("--fail-on-missing", action="store_true",
                   help="also fail when a baseline case is missing from the new report")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    thresholds = parse_thresholds(args.max_regression, "--max-regression")  # bad value: exit 2
    olds, new = [jsonreport.read(p) for p in args.old], jsonreport.read(args.new)
    cmp = baseline.compare(olds, new, thresholds)
    diffs = fpdiff.diff(olds[-1], new)
    failed = cmp.failed(args.undecided) or bool(args.fail_on_missing and cmp.only_old)
    single = sorted({c.case for c in cmp.changes if min(c.judgement.n_base, c.judgement.n_cur) == 1})
    if args.json:
        out = {**baseline.to_json(cmp), "environment_changes": [
            {"what": d.what, "baseline": d.old if not isinstance(d.old, frozenset) else sorted(d.old),
             "current": d.new if not isinstance(d.new, frozenset) else sorted(d.new), "warning": d.warning}
            for d in diffs], "thresholds_pct": thresholds, "undecided": args.undecided,
            "single_sample_cases": single, "baseline_sessions": len(olds),
            "timings_judged": not fpdiff.ran_under_tcg(*olds, new), "exit": 1 if failed else 0}
        print(json.dumps(out, indent=2, default=str))
        return 1 if failed else 0
    print(fpdiff.render(diffs, tcg=fpdiff.ran_under_tcg(*olds, new)))
    print(baseline.sessions_line(olds))
    if single:
        print(f"WARNING: {len(single)} case(s) have a single sample on one side (no noise band of its own; "
              "record baselines with --kv-repeat 5): " + ", ".join(single))
    print(baseline.render(cmp))
    if cmp.undecided:
        print(f"{len(cmp.undecided)} undecided verdict(s) " + ("fail (--undecided fail)" if args.undecided == "fail"
                                                               else "pass (--undecided pass)"))
    return 1 if failed else 0
