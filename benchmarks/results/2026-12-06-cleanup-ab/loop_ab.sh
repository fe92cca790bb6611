#!/bin/bash
# Prefill loop only (bench_hotpath.prefill_loop, 16384 x 64 KiB rows, NullInitiator), base/head alternating
# processes (base head head base) x N; each process: 15 native runs + 3 python runs, median and min us_per_row.
PY=/work/wt/cleanup/.venv/bin/python
HEAD=${HEAD:-/tmp/cleanhead}  # head tree; the logged run used 67ec346's prefill.py (same code as a67bc7c)
for i in $(seq ${N:-4}); do
  for side in base head head base; do
    d=$HEAD; [ $side = base ] && d=/tmp/cleanbase
    (cd $d/benchmarks && PYTHONPATH=$d:$d/benchmarks $PY -c "
import statistics, bench_hotpath as B
for hp, n in (('native', 15), ('python', 3)):
    v=[B.prefill_loop(hp, 1024)['us_per_row'] for _ in range(n)]
    print('$side', hp, round(statistics.median(v),4), round(min(v),4), flush=True)
")
  done
done
