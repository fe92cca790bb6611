#!/bin/bash
# run_scenario at 1 MiB writes over loopback tcp, pacing none, 512 MiB, verify on: GB/s and CPU s/GB
# per side; base/head alternating processes (base head head base) x N, 2 runs per process.
PY=/work/wt/cleanup/.venv/bin/python
for i in $(seq ${N:-3}); do
  for side in base head head base; do
    d=/tmp/cleanhead; [ $side = base ] && d=/tmp/cleanbase
    (cd $d/benchmarks && PYTHONPATH=$d:$d/benchmarks timeout 300 $PY -c "
import _common as C
from pytest_kvfabric.run.runner import run_scenario
for _ in range(2):
    sc = C.synthetic_scenario(nbytes=1<<20, transfers=512, batch=8, pacing='none', transport='tcp', pool_bytes=64<<20, verify=True)
    d = run_scenario(sc, timeout_s=120).to_dict()
    print('$side', round(d['throughput_gbps']/8, 4), round(d['cpu_s_per_gb']['sender'], 4), round(d['cpu_s_per_gb']['receiver'], 4), flush=True)
")
  done
done
