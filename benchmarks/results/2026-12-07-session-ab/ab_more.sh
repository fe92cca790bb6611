PY=/work/main/.venv/bin/python
OUT=/work/main/benchmarks/results/2026-12-07-session-ab
run() { local side=$1 tag=$2; local d=/work/main; [ $side = base ] && d=/tmp/base814
  (cd $d && PYTHONPATH=$d timeout 400 $PY benchmarks/bench_hotpath.py --rounds 2 --runner-mib 512 --json) > $OUT/$side-bench_hotpath-$tag.json 2>$OUT/$side-bench_hotpath-$tag.err; echo "$side $tag rc=$?"; }
# run twice: for i in 3..10, then for i in 11..20
for i in 11 12 13 14 15 16 17 18 19 20; do run head c$i; run base c$i; run base d$i; run head d$i; done
