"""branch/base ratios of every row's `ours` median (and of each raw contender's main metric)."""
import glob, json, statistics, sys
import os; O = os.environ.get("O", ".")
def load(kind, who):
    out = []
    for f in sorted(glob.glob(f"{O}/{kind}-*-{who}.json")):
        try:
            out.append(json.load(open(f)))
        except Exception as e:
            print("skip", f, e, file=sys.stderr)
    return out
for kind in ("tcp", "hot"):
    base, br = load(kind, "base"), load(kind, "branch")
    if not base or not br:
        print(kind, "missing runs", len(base), len(br)); continue
    print(f"## {kind}: {len(base)} base runs, {len(br)} branch runs")
    # raw contenders: per-contender list of round dicts; compare the median of each numeric key
    keys = sorted(set(base[0]["raw"]) & set(br[0]["raw"]))
    for k in keys:
        rounds_b = [r for d in base for r in d["raw"].get(k, []) if isinstance(r, dict) and "skipped" not in r]
        rounds_w = [r for d in br for r in d["raw"].get(k, []) if isinstance(r, dict) and "skipped" not in r]
        if not rounds_b or not rounds_w:
            continue
        for m in ("gbps_bytes", "us_per_row", "us_per_page", "cpu_sender", "cpu_receiver", "cpu_s_per_gb_sender", "cpu_s_per_gb_receiver"):
            vb = [r[m] for r in rounds_b if isinstance(r.get(m), (int, float))]
            vw = [r[m] for r in rounds_w if isinstance(r.get(m), (int, float))]
            if vb and vw:
                mb, mw = statistics.median(vb), statistics.median(vw)
                print(f"  {k:40s} {m:22s} base {mb:9.4f} (n={len(vb)})  branch {mw:9.4f} (n={len(vw)})  branch/base {mw/mb:6.3f}")

print("## rows: each run's own ratio (ours / in-run reference), base vs branch")
for kind in ("tcp", "hot"):
    base, br = load(kind, "base"), load(kind, "branch")
    if not base or not br:
        continue
    labels = [r["label"] for r in base[0]["rows"]]
    for lab in labels:
        pb = [r["paired_ratio"]["median"] for d in base for r in d["rows"] if r["label"] == lab and r["paired_ratio"].get("median") is not None]
        pw = [r["paired_ratio"]["median"] for d in br for r in d["rows"] if r["label"] == lab and r["paired_ratio"].get("median") is not None]
        if pb and pw:
            mb, mw = statistics.median(pb), statistics.median(pw)
            print(f"  {kind} {lab[:70]:70s} base {mb:7.3f} {['%.3f' % x for x in pb]}  branch {mw:7.3f} {['%.3f' % x for x in pw]}  branch/base {mw/mb:6.3f}")
