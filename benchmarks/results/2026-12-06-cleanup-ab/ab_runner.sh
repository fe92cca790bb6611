#!/bin/bash
# bench_tcp again, 4 more runs per side (base,head,head,base x2), to power the runner rows (n=2 in ab_run.sh).
PY=/work/wt/cleanup/.venv/bin/python
run() { local side=$1 tag=$2; local d=/tmp/cleanhead; [ $side = base ] && d=/tmp/cleanbase
  (cd $d && PYTHONPATH=$d timeout 400 $PY benchmarks/bench_tcp.py --rounds 1 --runner-rounds 1 --runner-mib 512 --json) > /tmp/cleanab3/$side-bench_tcp-$tag.json 2>/tmp/cleanab3/$side-bench_tcp-$tag.err
  echo "$side $tag rc=$? $(date -u +%T)"; }
for i in 1 2; do run base a$i; run head a$i; run head b$i; run base b$i; done
echo done
