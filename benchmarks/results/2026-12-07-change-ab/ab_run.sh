#!/bin/bash
# Interleaved A/B of this round's data plane (READ frames in the stream path, the common start time
# and admit_closed in endpoint/prefill.py): base = 7105bf4 (the commit before the whole change, a worktree at
# /tmp/base710 with the compiled endpoint/_fast*.so copied in), head = main. PYTHONPATH selects
# the tree; order base, head, head, base per pair of runs.
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/2026-12-07-change-ab
run() { local side=$1 tag=$2 script=$3; shift 3; local d=/work/main; [ $side = base ] && d=/tmp/base710
  (cd $d && PYTHONPATH=$d timeout 400 $PY $script "$@" --json) > $OUT/$side-$(basename $script .py)-$tag.json \
    2>$OUT/$side-$(basename $script .py)-$tag.err; echo "$side $script $tag rc=$?"; }
H="benchmarks/bench_hotpath.py --rounds 2 --runner-mib 512"
T="benchmarks/bench_tcp.py --rounds 2 --runner-rounds 1 --runner-mib 512"
for i in $(seq 1 ${PAIRS:-6}); do run base a$i $H; run head a$i $H; run head b$i $H; run base b$i $H; done
run base a1 $T; run head a1 $T; run head b1 $T; run base b1 $T
echo done
