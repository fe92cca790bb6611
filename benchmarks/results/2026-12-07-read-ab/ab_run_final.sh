#!/bin/bash
# The final rerun of ab_run.sh: head = h/read at its last hot-path change (the ack loop reading a
# frame at a time while reads are outstanding), outputs in final/. Interleaved A/B in one run on
# the SHARED BUSY host (2 cores, 4 helpers + coordinator working): base = e715073 (a worktree at
# /tmp/read_base with the compiled endpoint/_fast*.so copied in), head = /work/wt/read.
# PYTHONPATH selects the tree; order base, head, head, base per pair of runs.
PY=/work/wt/read/.venv/bin/python
HEAD=/work/wt/read
OUT=$HEAD/benchmarks/results/2026-12-07-read-ab/final
mkdir -p $OUT
run() { local side=$1 tag=$2 script=$3; shift 3; local d=$HEAD; [ $side = base ] && d=/tmp/read_base
  (cd $d && PYTHONPATH=$d timeout 400 $PY $script "$@" --json) > $OUT/$side-$(basename $script .py)-$tag.json \
    2>$OUT/$side-$(basename $script .py)-$tag.err; echo "$side $script $tag rc=$?"; }
H="benchmarks/bench_hotpath.py --rounds 2 --runner-mib 512"
T="benchmarks/bench_tcp.py --rounds 2 --runner-rounds 1 --runner-mib 512"
for i in 1 2 3; do run base a$i $H; run head a$i $H; run head b$i $H; run base b$i $H; done
for i in 1 2; do run base a$i $T; run head a$i $T; run head b$i $T; run base b$i $T; done
echo done
