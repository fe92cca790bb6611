"""Refit the timing terms the shipped GPU profiles share, on the validation table's "fit" sources.

This is how the values in profiles/gpus/*.yaml were obtained (one parameter set for every GPU:
the fit sources cover H100 and A100 only, too few rows to fit each GPU on its own). Terms with
a cited value (attention_efficiency, all-reduce/all-to-all efficiencies, scale-up domain) are
not fitted; decode_layer_overhead_us is held at 0 because the fit rows' decode points (one
model, one TP) cannot tell a per-step from a per-layer decode cost. Prints the fitted values
and every row's ratio; copy the values into the profiles by hand.
Usage: python benchmarks/fit_shipped_timing.py
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pytest_kvfabric.calibration import fit as F
from pytest_kvfabric.calibration.predict import predict
from pytest_kvfabric.calibration.table import load_table, shipped_table_path

FITTED = ("compute_efficiency", "gemm_half_gflop", "memory_efficiency", "step_overhead_us", "layer_overhead_us",
          "allreduce_latency_us", "decode_step_overhead_us")
START = dict(compute_efficiency=0.7, gemm_half_gflop=5.0, memory_efficiency=0.8, step_overhead_us=1000.0,
             layer_overhead_us=20.0, allreduce_latency_us=20.0, decode_step_overhead_us=500.0, decode_layer_overhead_us=0.0)


def main() -> int:
    t = load_table(shipped_table_path())
    gpus = {g: dataclasses.replace(t.gpu(g), **START) for g in {m.gpu for m in t.rows}}
    pred = lambda m, g: predict(m, t.model(m.model), g)  # noqa: E731
    values = F.fit([m for m in t.rows if t.split_of(m) == "fit"], gpus, pred, FITTED)
    for k, v in values.items():
        print(f"{k}: {v:.4g}")
    tuned = {k: F.with_params(g, list(values), list(values.values())) for k, g in gpus.items()}
    for split in ("fit", "holdout"):
        errs = [pred(m, tuned[m.gpu]) / m.measured - 1 for m in t.rows if t.split_of(m) == split]
        print(f"{split}: median |err| {np.median(np.abs(errs)) * 100:.1f}%, worst {max(errs, key=abs) * 100:+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
