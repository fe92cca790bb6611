#!/bin/bash
# Two more interleaved bench_iouring pairs (head/base/base/head, base/head/head/base).
PY=/work/wt/wire/.venv/bin/python
run() { local side=$1 tag=$2 script=$3; shift 3; local d=/work/wt/wire; [ $side = base ] && d=/tmp/wirebase
  local t0=$(date +%s)
  (cd $d && PYTHONPATH=$d timeout 600 $PY $script "$@" --json) > /tmp/wireab/$side-$(basename $script .py)-$tag.json 2>/tmp/wireab/$side-$(basename $script .py)-$tag.err
  echo "$side $script $tag rc=$? $(( $(date +%s) - t0 ))s $(date -u +%H:%M:%S)"; }
I="benchmarks/bench_iouring.py --rounds 1 --seconds 1.0"
run head a2 $I; run base a2 $I; run base b2 $I; run head b2 $I
run base a3 $I; run head a3 $I; run head b3 $I; run base b3 $I
echo done
