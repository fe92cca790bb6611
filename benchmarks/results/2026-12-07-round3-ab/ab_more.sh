#!/bin/bash
# More bench_hotpath pairs for the same A/B (same trees): order head, base, base, head.
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/2026-12-07-round3-ab
run() { local side=$1 tag=$2; local d=/work/main; [ $side = base ] && d=/tmp/base6a8
  (cd $d && PYTHONPATH=$d timeout 400 $PY benchmarks/bench_hotpath.py --rounds 2 --runner-mib 512 --json) > $OUT/$side-bench_hotpath-$tag.json 2>$OUT/$side-bench_hotpath-$tag.err; echo "$side $tag rc=$?"; }
for i in $(seq ${FROM:-7} ${TO:-18}); do run head c$i; run base c$i; run base d$i; run head d$i; done
