#!/bin/bash
# Interleaved A/B in one run: base = 46ec240 (round start), head = main; base,head,head,base.
PY=/work/main/.venv/bin/python
run() { # side tag script args...
  local side=$1 tag=$2 script=$3; shift 3; local d=/work/main; [ $side = base ] && d=/tmp/base46
  (cd $d && PYTHONPATH=$d timeout 400 $PY $script "$@" --json) > /tmp/ab/$side-$(basename $script .py)-$tag.json 2>/tmp/ab/$side-$(basename $script .py)-$tag.err
  echo "$side $script $tag rc=$?"
}
H="benchmarks/bench_hotpath.py --rounds 2 --runner-mib 512"
T="benchmarks/bench_tcp.py --rounds 2 --runner-rounds 1 --runner-mib 512"
for i in 1 2; do run base a$i $H; run head a$i $H; run head b$i $H; run base b$i $H; done
run base a1 $T; run head a1 $T; run head b1 $T; run base b1 $T
echo done
