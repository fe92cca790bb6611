#!/bin/bash
# Interleaved A/B in one run: base = the commit before the iouring split (/tmp/iobase), head = main.
# Order base, head, head, base; PYTHONPATH selects the tree.
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/2026-12-07-iouring-split
run() { local side=$1 tag=$2; local d=/work/main; [ $side = base ] && d=/tmp/iobase
  (cd $d && PYTHONPATH=$d timeout 300 $PY benchmarks/bench_iouring.py --rounds 1 --seconds 1 --json) \
    > $OUT/$side-$tag.json 2>$OUT/$side-$tag.err; echo "$side $tag rc=$?"; }
run base a; run head a; run head b; run base b
