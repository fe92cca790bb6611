"""Render the --json output of one or more benchmark runs as markdown tables (for BENCHMARKS.md).

    python benchmarks/to_markdown.py run1_tcp.json run2_tcp.json ...
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    return f"{x:.{nd}f}" if abs(x) < 1000 else f"{x:.0f}"


def render(doc: dict[str, Any]) -> str:
    env = doc["env"]
    git = env.get("git", {})
    head = (f"**{doc['benchmark']}**, {env['date_utc']} UTC, kernel {env['kernel']}, {env['cpu']} x{env['ncpu']}, "
            f"load {env['loadavg'][0]:.2f} -> {env.get('loadavg_end', [float('nan')])[0]:.2f}, "
            f"commit {git.get('commit', '?')}" + (f" + uncommitted {', '.join(git['modified'])}" if git.get("modified") else ""))
    lines = [head, "", "| comparison | unit | ours median [min-max] | reference median [min-max] | ratio of medians | per-round ratio: median [min-max] (verdict) | target | met | 90% CI of that median: verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        o, f, p = r["ours"], r["ref"], r["paired_ratio"]
        # verdict on the median of per-round ratios (recomputed: older JSON used the ratio of medians)
        v = p["median"] if p.get("n") else r["ratio"]
        if r["target"] is None or v is None or v != v:
            met = "-"
        else:
            ok = v >= r["target"] if r["target_op"] == ">=" else v <= r["target"]
            met = "yes" if ok else "**no**"
        tgt = "-" if r["target"] is None else f"{r['target_op']} {r['target']}"
        lines.append(
            f"| {r['label']} | {r['unit']} | {_f(o['median'])} [{_f(o['min'])}-{_f(o['max'])}] | "
            f"{r.get('ref_label') or ''} {_f(f['median'])} [{_f(f['min'])}-{_f(f['max'])}] | {_f(r['ratio'], 2)} | "
            f"{_f(p['median'], 2)} [{_f(p['min'], 2)}-{_f(p['max'], 2)}] | {tgt} | {met} | {C.decided_text(r, '**')} |")
    for n in doc.get("notes", []):
        lines.append(f"\n_{n}_")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    for path in argv:
        with open(path) as fh:
            print(render(json.load(fh)))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
