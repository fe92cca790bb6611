"""Refit the timing terms the shipped GPU profiles share, on the validation table's "fit" sources.

This is how the values in profiles/gpus/*.yaml were obtained (one parameter set for every GPU:
the fit rows cover H100, A100 and L40S, too few to fit each GPU on its own). Two stages:
1. the GPU terms, on the fit rows of the baseline frameworks (TensorRT-LLM, NIM). Terms with
   a cited value (attention_efficiency, all-reduce/all-to-all efficiencies, scale-up domain) are
   not fitted; decode_layer_overhead_us is held at 0 because the fit rows' decode points (one
   model, one TP) cannot tell a per-step from a per-layer decode cost;
2. with those held, each framework in FRAMEWORKS its extra per-step host time
   (framework_step_overhead_us), on that framework's fit rows only.
Prints the fitted values and the fit/holdout errors; copy the values into the profiles by hand.
Usage: python benchmarks/fit_shipped_timing.py
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize_scalar

from pytest_kvfabric.calibration import fit as F
from pytest_kvfabric.calibration.predict import predict
from pytest_kvfabric.calibration.table import load_table, shipped_table_path

FITTED = ("compute_efficiency", "gemm_half_gflop", "memory_efficiency", "step_overhead_us", "layer_overhead_us",
          "allreduce_latency_us", "decode_step_overhead_us")
START = dict(compute_efficiency=0.7, gemm_half_gflop=5.0, memory_efficiency=0.8, step_overhead_us=1000.0,
             layer_overhead_us=20.0, allreduce_latency_us=20.0, decode_step_overhead_us=500.0, decode_layer_overhead_us=0.0)
FRAMEWORKS = ("vllm",)  # frameworks with their own per-step overhead (first word of a row's `framework`, lower case)
OVERHEAD_BOUNDS_US = (0.0, 20000.0)


def framework_of(m) -> str:
    words = m.framework.split()
    return words[0].lower() if words else ""


def main() -> int:
    t = load_table(shipped_table_path())
    pred = lambda m, g: predict(m, t.model(m.model), g)  # noqa: E731
    fit_rows = [m for m in t.rows if t.split_of(m) == "fit"]
    base_rows = [m for m in fit_rows if framework_of(m) not in FRAMEWORKS]
    gpus = {g: dataclasses.replace(t.gpu(g), **START, framework_step_overhead_us={k: 0.0 for k in FRAMEWORKS})
            for g in {m.gpu for m in t.rows}}
    values = F.fit(base_rows, gpus, pred, FITTED)
    for k, v in values.items():
        print(f"{k}: {v:.4g}")
    tuned = {k: F.with_params(g, list(values), list(values.values())) for k, g in gpus.items()}
    overheads: dict[str, float] = {}
    for fw in FRAMEWORKS:
        rows = [m for m in fit_rows if framework_of(m) == fw]
        if not rows:
            print(f"framework_step_overhead_us.{fw}: no fit rows, left at 0")
            continue

        def loss(us: float, fw: str = fw, rows: list = rows) -> float:
            trial = {k: dataclasses.replace(g, framework_step_overhead_us={**g.framework_step_overhead_us, fw: us})
                     for k, g in tuned.items()}
            return float(sum(np.log(pred(m, trial[m.gpu]) / m.measured) ** 2 for m in rows))

        overheads[fw] = float(minimize_scalar(loss, bounds=OVERHEAD_BOUNDS_US, method="bounded").x)
        print(f"framework_step_overhead_us.{fw}: {overheads[fw]:.4g}  (on {len(rows)} fit rows: {', '.join(m.id for m in rows)})")
    tuned = {k: dataclasses.replace(g, framework_step_overhead_us={**g.framework_step_overhead_us, **overheads})
             for k, g in tuned.items()}
    for split in ("fit", "holdout"):
        errs = [pred(m, tuned[m.gpu]) / m.measured - 1 for m in t.rows if t.split_of(m) == split]
        print(f"{split}: median |err| {np.median(np.abs(errs)) * 100:.1f}%, worst {max(errs, key=abs) * 100:+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
