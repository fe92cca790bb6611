#!/bin/bash
PY=/work/main/.venv/bin/python
run() { local side=$1 tag=$2; local d=/work/main; [ $side = base ] && d=/tmp/base46
  (cd $d && PYTHONPATH=$d timeout 400 $PY benchmarks/bench_tcp.py --rounds 1 --runner-rounds 1 --runner-mib 512 --seconds 1.0 --json) > /tmp/ab/r2-$side-$tag.json 2>/tmp/ab/r2-$side-$tag.err; echo "$side $tag rc=$?"; }
for i in 1; do run base a$i; run head a$i; run head b$i; run base b$i; done; echo done
