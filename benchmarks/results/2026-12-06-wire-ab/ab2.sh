#!/bin/bash
# Interleaved A/B in one run: base = 814a696 (/tmp/wirebase), head = wire branch (/work/wt/wire).
# Order per pair: base, head, head, base (then the next pair), so drift on the busy host cancels.
PY=/work/wt/wire/.venv/bin/python
run() { # side tag script args...
  local side=$1 tag=$2 script=$3; shift 3; local d=/work/wt/wire; [ $side = base ] && d=/tmp/wirebase
  local t0=$(date +%s)
  (cd $d && PYTHONPATH=$d timeout 600 $PY $script "$@" --json) > /tmp/wireab/$side-$(basename $script .py)-$tag.json 2>/tmp/wireab/$side-$(basename $script .py)-$tag.err
  echo "$side $script $tag rc=$? $(( $(date +%s) - t0 ))s $(date -u +%H:%M:%S)"
}
H="benchmarks/bench_hotpath.py --rounds 2 --runner-mib 512"
T="benchmarks/bench_tcp.py --rounds 2 --runner-rounds 1 --runner-mib 512 --seconds 1.0"
I="benchmarks/bench_iouring.py --rounds 1 --seconds 1.0"
for i in 3 4; do run head a$i $H; run base a$i $H; run base b$i $H; run head b$i $H; done
run head a2 $T; run base a2 $T; run base b2 $T; run head b2 $T
echo done
