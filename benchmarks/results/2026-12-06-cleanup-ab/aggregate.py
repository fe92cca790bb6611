import json, glob, statistics, sys
d = sys.argv[1]
for bench in ("bench_hotpath", "bench_tcp"):
    rows = {}
    for side in ("base", "head"):
        for f in sorted(glob.glob(f"{d}/{side}-{bench}-*.json")):
            try: doc = json.load(open(f))
            except Exception as e: print("bad", f, e); continue
            for r in doc["rows"]:
                v = (r.get("ours") or {}).get("values") or []
                rows.setdefault(r["label"], {"unit": r.get("unit"), "base": [], "head": []})[side] += v
    print(f"\n{bench}\n| row | unit | base median (n) | head median (n) | head/base |\n|---|---|---|---|---|")
    for label, x in rows.items():
        if not x["base"] or not x["head"]: continue
        b, h = statistics.median(x["base"]), statistics.median(x["head"])
        print(f"| {label} | {x['unit']} | {b:.4g} ({len(x['base'])}) | {h:.4g} ({len(x['head'])}) | {h/b:.2f} |")
