#!/bin/bash
# More bench_tcp runs for the round A/B (head/base/base/head, then base/head/head/base).
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/2026-12-07-round-ab
run() { local side=$1 tag=$2; local d=/work/main; [ $side = base ] && d=/tmp/base1b9
  (cd $d && PYTHONPATH=$d timeout 400 $PY benchmarks/bench_tcp.py --rounds 2 --runner-rounds 1 --runner-mib 512 --json) \
    > $OUT/$side-bench_tcp-$tag.json 2>$OUT/$side-bench_tcp-$tag.err; echo "$side $tag rc=$?"; }
run head c1; run base c1; run base d1; run head d1; run base c2; run head c2; run head d2; run base d2
