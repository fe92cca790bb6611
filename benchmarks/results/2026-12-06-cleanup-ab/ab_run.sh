#!/bin/bash
# Interleaved A/B in one run: base = 8c799d3 (layout commit), head = cleanup a67bc7c; base,head,head,base.
PY=/work/wt/cleanup/.venv/bin/python
run() { # side tag script args...
  local side=$1 tag=$2 script=$3; shift 3; local d=/tmp/cleanhead; [ $side = base ] && d=/tmp/cleanbase
  (cd $d && PYTHONPATH=$d timeout 400 $PY $script "$@" --json) > /tmp/cleanab2/$side-$(basename $script .py)-$tag.json 2>/tmp/cleanab2/$side-$(basename $script .py)-$tag.err
  echo "$side $script $tag rc=$? $(date -u +%T)"
}
H="benchmarks/bench_hotpath.py --rounds 2 --runner-mib 512"
T="benchmarks/bench_tcp.py --rounds 2 --runner-rounds 1 --runner-mib 512"
for i in 1 2; do run base a$i $H; run head a$i $H; run head b$i $H; run base b$i $H; done
run base a1 $T; run head a1 $T; run head b1 $T; run base b1 $T

for side in base head head base; do d=/tmp/cleanhead; [ $side = base ] && d=/tmp/cleanbase
  (cd $d && PYTHONPATH=$d timeout 400 $PY benchmarks/bench_plan.py) >> /tmp/cleanab2/plan-$side.txt 2>&1; echo "$side bench_plan rc=$? $(date -u +%T)"; done
echo plan-done
