"""Summarise the interleaved A/B JSON: per row, 'ours' values of every round of every run per side."""
import glob, json, os, statistics, sys
d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/wireab"
for bench in ["bench_hotpath", "bench_tcp", "bench_iouring"]:
    side = {}
    loads = {}
    for s in ["base", "head"]:
        rows = {}
        for f in sorted(glob.glob(f"{d}/{s}-{bench}-*.json")):
            try:
                doc = json.load(open(f))
            except Exception:
                continue
            loads.setdefault(s, []).append(doc["env"]["loadavg"][0])
            for r in doc["rows"]:
                v = r.get("ours", {}).get("values") or []
                rows.setdefault((r["label"], r.get("unit", "")), []).extend(x for x in v if x is not None)
        side[s] = rows
    if not side.get("base") or not side.get("head"):
        continue
    print(f"\n**{bench}** (load average at start: base {', '.join(f'{x:.1f}' for x in loads.get('base', []))}; head {', '.join(f'{x:.1f}' for x in loads.get('head', []))})\n")
    print("| row | unit | base median [min-max] (n) | head median [min-max] (n) | head/base |")
    print("|---|---|---|---|---|")
    seen = set()
    for key in side["base"]:
        b, h = side["base"][key], side["head"].get(key, [])
        if not b or not h or (key[1], tuple(b)) in seen:  # same figure under another reference
            continue
        seen.add((key[1], tuple(b)))
        mb, mh = statistics.median(b), statistics.median(h)
        f = lambda v: f"{v:.4g}"
        print(f"| {key[0]} | {key[1]} | {f(mb)} [{f(min(b))}-{f(max(b))}] ({len(b)}) | {f(mh)} [{f(min(h))}-{f(max(h))}] ({len(h)}) | {mh/mb:.2f} |")
