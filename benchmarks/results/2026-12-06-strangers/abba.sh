#!/bin/bash
set -u
B=${B:?worktree of the base commit}; W=${W:?worktree of the branch}; O=${O:-.}
i=0
for who in base branch branch base; do
  i=$((i+1))
  if [ $who = base ]; then D=$B; else D=$W; fi
  (cd $D && timeout 900 .venv/bin/python benchmarks/bench_hotpath.py --rounds 3 --runner-mib 512 --json > $O/hot-$i-$who.json 2> $O/hot-$i-$who.err)
  (cd $D && timeout 900 .venv/bin/python benchmarks/bench_tcp.py --rounds 3 --runner-rounds 3 --runner-mib 1024 --json > $O/tcp-$i-$who.json 2> $O/tcp-$i-$who.err)
done
echo done > $O/DONE
