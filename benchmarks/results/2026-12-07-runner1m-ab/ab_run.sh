#!/bin/bash
# The runner path at 1 MiB, receiver CPU/GB: 1b91a98 (the review A/B's base, a worktree at /tmp/base1b9
# with the compiled endpoint/_fast*.so copied in) vs main, interleaved base/head/head/base, quiet host.
PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/2026-12-07-runner1m-ab
run() { local side=$1 tag=$2; local d=/work/main; [ $side = base ] && d=/tmp/base1b9
  (cd $d && PYTHONPATH=$d timeout 400 $PY benchmarks/bench_tcp.py --rounds 1 --seconds 2 --runner-rounds 1 \
     --runner-mib 512 --no-same-buffer --fabric loopback --json) > $OUT/$side-bench_tcp-$tag.json 2>$OUT/$side-bench_tcp-$tag.err
  echo "$side $tag rc=$?"; }
for i in $(seq ${FROM:-1} ${TO:-6}); do run base a$i; run head a$i; run head b$i; run base b$i; done
