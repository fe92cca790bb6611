"""Does the baseline gate cry wolf, and does it catch a real regression?

Issue 18's targets: 0 false alarms in 10 identical baseline/current pairs at --kv-repeat 5, and
10 of 10 detections of a 40% cut of the link; plus the smallest cut this machine detects
reliably at N=5 and N=10 repeats.

Method. A "session" is what one `pytest --kv-repeat N` run does for a case: open a host pair,
start one pair of agents, run the case N times back to back (pytest_kvfabric.harness.case.run_case
does exactly this), keep each repeat's gated figures. The gate is the plugin's own code
(report.baseline.compare_samples with the default thresholds). For each of --pairs rounds:

- loopback: a baseline session and an identical current session (false alarms);
- netns (root): a namespace pair shaped to --rate-mbit (tbf), a baseline session and an
  identical current session (false alarms), then one session per --cuts on a pair shaped to
  rate x (1 - cut) (detection of an injected regression).

Baselines of several sessions (--sessions 1,3,5): pair i's baseline of k sessions is the "base"
sessions of rounds i, i-1, ..., i-k+1 (wrapping around to the last rounds for the first pairs),
judged by the two-level verdict (report/verdict.py, judge_sessions); k=1 is the one-session
verdict. Its sessions lie minutes apart, like k pytest runs recorded one after another.

Rounds are interleaved (every session of round i before any of round i+1), so a slow drift
of this shared host lands on baseline and current alike. Sessions record --repeat repeats;
the N=5 verdicts use each session's first 5, the N=10 verdicts all 10. A false alarm is a
gate failure (any metric decided "regressed") between identical sessions; a detection is a
gate failure with throughput "regressed" between a baseline and a cut session.

Two cases per session: `burst` (32 x 1 MiB, pacing none: throughput-bound) and `paced` (80 x
256 KiB in pairs every 5 ms under emulated pacing: latency, post lateness, exposed time);
cut sessions run `burst` only (the injected regression is a slower link).

    python benchmarks/bench_gate.py [--pairs 10] [--repeat 10] [--fabric loopback,netns]
                                    [--rate-mbit 400] [--cuts 40,25,15] [--sessions 1,3,5]
                                    [--budget-s 2400] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from pytest_kvfabric.report.baseline import compare_samples  # noqa: E402
from pytest_kvfabric.report.gate_metrics import figures, parse_thresholds  # noqa: E402

NETNS_PREFIX = "kvfg-"  # our own namespaces (the creator's pid tags them; cleaned in finally)
NETNS_INDEX = 211


def cases() -> dict[str, Any]:
    return {
        "burst": C.synthetic_scenario(nbytes=1 << 20, transfers=16, batch=8),
        "paced": C.synthetic_scenario(nbytes=128 << 10, transfers=60, batch=1, interval_us=5000, pacing="emulated"),
    }


def session(pair: Any, names: list[str], repeat: int) -> dict[str, list[dict[str, float]]]:
    """One pytest-like session: one pair of agents, each case `repeat` times back to back."""
    from pytest_kvfabric.run.runner import AgentPair

    scs = cases()
    out: dict[str, list[dict[str, float]]] = {}
    with AgentPair(pair, 120.0) as agents:
        for name in names:
            runs = []
            for _ in range(repeat):
                d = agents.run(scs[name]).to_dict()
                if d["integrity"].get("errors"):
                    raise RuntimeError(f"integrity errors: {d['integrity']}")
                runs.append(figures(d))
            out[name] = runs
    return out


def on_netns(rate_mbit: float, fn: Callable[[Any], Any]) -> Any:
    from pytest_kvfabric.fabric.netns import NetnsPair

    ns = NetnsPair.create(str(os.getpid()), NETNS_INDEX, rate_mbit=rate_mbit, prefix=NETNS_PREFIX)
    try:
        return fn(ns.pair)
    finally:
        ns.destroy()


def gate(base: list[dict[str, list[dict[str, float]]]], cur: dict[str, list[dict[str, float]]], n: int,
         thresholds: str | None = None) -> dict[str, Any]:
    """Verdicts of the gate (default thresholds, or --kv-max-regression text) on the first n
    repeats of every case both sides ran; `base` is the baseline's sessions (one or several)."""
    out: dict[str, Any] = {"regressed": [], "undecided": 0, "decided": 0, "tput_regressed": False, "tput": None}
    for case in sorted(set.intersection(*(set(b) for b in base)) & set(cur)):
        old = [b[case][:n] for b in base]
        for c in compare_samples(case, old, cur[case][:n], parse_thresholds(thresholds)):
            if c.regressed:
                out["regressed"].append(f"{case}:{c.key} {c.change_pct:+.0f}%")
                out["tput_regressed"] |= c.key == "throughput"
            if case == "burst" and c.key == "throughput":
                out["tput"] = c.status
            out["undecided"] += c.undecided
            out["decided"] += not c.undecided
    return out


def baseline_of(rounds: list[dict[str, Any]], i: int, k: int) -> list[dict[str, Any]]:
    """Pair i's baseline of k sessions: the "base" sessions of rounds i, i-1, ..., i-k+1 (wrapping
    around to the last rounds for the first pairs), each recorded minutes apart like a baseline
    recorded as k pytest runs; pair i's current sessions are round i's "same" and cut sessions."""
    return [rounds[(i - j) % len(rounds)]["base"] for j in range(k)]


def rows_from(raw: dict[str, list[dict[str, Any]]], cuts: list[float], repeat: int,
              threshold_sets: list[str | None] = [None], sessions: list[int] = [1]) -> list[dict[str, Any]]:  # noqa: B006
    """The verdict table from every round's sessions (also for rounds merged from several runs),
    for each baseline size in sessions and each threshold set (None: the defaults)."""
    rows = []
    for fabric, rounds in raw.items():
        for k, n, th in [(k, n, th) for k in sessions for n in sorted({min(5, repeat), repeat}) for th in threshold_sets]:
            if k > len(rounds):
                continue
            common = {"fabric": fabric, "sessions": k, "N": n, "thresholds": th or "defaults"}
            fa = [gate(baseline_of(rounds, i, k), r["same"], n, th) for i, r in enumerate(rounds)]
            alarms = [g for g in fa if g["regressed"]]
            undecided = sum(g["undecided"] for g in fa)
            total = sum(g["undecided"] + g["decided"] for g in fa)
            rows.append({**common, "test": "identical pairs", "pairs": len(fa),
                         "gate failed": len(alarms), "target": "0",
                         "detail": f"undecided {undecided}/{total} metric verdicts; alarms: "
                                   + ("; ".join(x for g in alarms for x in g["regressed"]) or "none")})
            for cut in cuts if fabric == "netns" else ():
                key = f"cut{cut:g}"
                have = [(i, r) for i, r in enumerate(rounds) if key in r]
                if not have:
                    continue
                det = [gate(baseline_of(rounds, i, k), r[key], n, th) for i, r in have]
                ratio = C.summary([_tput(r[key]["burst"][:n]) / _tput(r["base"]["burst"][:n]) for _, r in have])
                rows.append({**common, "test": f"rate cut {cut:g}%", "pairs": len(det),
                             "gate failed": sum(bool(g["tput_regressed"]) for g in det),
                             "target": "10 of 10" if cut >= 40 else "-",
                             "detail": f"measured throughput ratio median {ratio['median']:.3f}; burst throughput "
                                       + ", ".join(f"{v} {sum(g['tput'] == v for g in det)}"
                                                   for v in ("regressed", "undecided", "unchanged", "improved"))})
    return rows


def _tput(samples: list[dict[str, float]]) -> float:
    return sum(x["throughput_gbps"] for x in samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="baseline gate: false alarms and detection")
    ap.add_argument("--pairs", type=int, default=10, help="baseline/current pairs per fabric (rounds)")
    ap.add_argument("--repeat", type=int, default=10, help="repeats per session (N=5 uses the first 5)")
    ap.add_argument("--fabric", default="loopback,netns")
    ap.add_argument("--rate-mbit", type=float, default=400.0, help="netns link rate of the baseline (tbf)")
    ap.add_argument("--cuts", default="40,15", help="injected rate cuts in percent (netns)")
    ap.add_argument("--thresholds", default="defaults",
                    help="';'-separated threshold sets to judge the same data with (--kv-max-regression syntax; "
                         "'defaults' for the defaults)")
    ap.add_argument("--sessions", default="1,3,5",
                    help="baseline sizes to judge with, in sessions (comma list): pair i's baseline is the "
                         "base sessions of rounds i..i-k+1")
    ap.add_argument("--budget-s", type=float, default=1500.0, help="stop starting rounds after this many seconds")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="no runs: the table from the rounds of earlier --json outputs together")
    a = ap.parse_args(argv)
    if a.merge:
        return merge(a.merge, [float(c) for c in a.cuts.split(",") if c.strip()], a.repeat, _sets(a.thresholds),
                     _sizes(a.sessions))
    cuts = [float(c) for c in a.cuts.split(",") if c.strip()]
    fabrics = [f.strip() for f in a.fabric.split(",") if f.strip()]
    env = C.env_info()
    notes: list[str] = ["shared busy host (2 cores, other sessions running): figures vary run to run"]
    if "netns" in fabrics:
        from pytest_kvfabric.fabric.netns import netns_unavailable_reason

        reason = netns_unavailable_reason()
        if reason:
            notes.append(f"netns skipped: {reason}")
            fabrics.remove("netns")
    raw: dict[str, list[dict[str, Any]]] = {f: [] for f in fabrics}
    t0 = time.monotonic()
    for i in range(a.pairs):
        if time.monotonic() - t0 > a.budget_s:
            notes.append(f"budget of {a.budget_s:g} s spent after {i} round(s)")
            break
        for fabric in fabrics:
            rnd: dict[str, Any] = {}
            if fabric == "loopback":
                rnd["base"] = session(None, ["burst", "paced"], a.repeat)
                rnd["same"] = session(None, ["burst", "paced"], a.repeat)
            else:
                rnd["base"] = on_netns(a.rate_mbit, lambda p: session(p, ["burst", "paced"], a.repeat))
                rnd["same"] = on_netns(a.rate_mbit, lambda p: session(p, ["burst", "paced"], a.repeat))
                for cut in cuts:
                    rate = a.rate_mbit * (1 - cut / 100)
                    rnd[f"cut{cut:g}"] = on_netns(rate, lambda p: session(p, ["burst"], a.repeat))
            raw[fabric].append(rnd)
            C.log(f"round {i + 1}/{a.pairs} {fabric} done ({time.monotonic() - t0:.0f} s)")
    rows = rows_from(raw, cuts, a.repeat, _sets(a.thresholds), _sizes(a.sessions))
    env["loadavg_end"] = list(os.getloadavg())
    env["wall_s"] = round(time.monotonic() - t0)
    if a.json:
        json.dump({"benchmark": "bench_gate", "env": env, "rows": rows, "raw": raw, "notes": notes},
                  sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return 0
    from tabulate import tabulate

    print(f"# bench_gate  {env['date_utc']} UTC  kernel {env['kernel']}  {env['cpu']} x{env['ncpu']}  "
          f"load {env['loadavg'][0]:.2f} -> {env['loadavg_end'][0]:.2f}  git {env['git']['commit']}  "
          f"{env['wall_s']} s  repeats {a.repeat}  netns rate {a.rate_mbit:g} Mbit/s")
    print(tabulate([[r[k] for k in ROW_KEYS] for r in rows], headers=ROW_KEYS, tablefmt="github"))
    for n in notes:
        print(f"note: {n}")
    return 0


def _sets(text: str) -> list[str | None]:
    sets = [t.strip() for t in text.split(";") if t.strip()]
    for t in sets:
        if t != "defaults":
            parse_thresholds(t)  # a typo fails now, not after half an hour of runs
    return [None if t == "defaults" else t for t in sets] or [None]


def _sizes(text: str) -> list[int]:
    return sorted({int(k) for k in text.split(",") if k.strip()})


def merge(paths: list[str], cuts: list[float], repeat: int, threshold_sets: list[str | None],
          sessions: list[int] = [1]) -> int:  # noqa: B006 - read only
    from tabulate import tabulate

    raw: dict[str, list[dict[str, Any]]] = {}
    for p in paths:
        with open(p) as f:
            doc = json.load(f)
        print(f"# {p}: {doc['env']['date_utc']} UTC, {doc['env'].get('wall_s')} s, git {doc['env']['git']['commit']}, "
              f"load {doc['env']['loadavg'][0]:.2f} -> {doc['env']['loadavg_end'][0]:.2f}")
        for fabric, rounds in doc["raw"].items():
            raw.setdefault(fabric, []).extend(rounds)
    rows = rows_from(raw, cuts, repeat, threshold_sets, sessions)
    print(tabulate([[r[k] for k in ROW_KEYS] for r in rows], headers=ROW_KEYS, tablefmt="github"))
    return 0


ROW_KEYS = ("fabric", "sessions", "N", "thresholds", "test", "pairs", "gate failed", "target", "detail")


if __name__ == "__main__":
    raise SystemExit(main())
