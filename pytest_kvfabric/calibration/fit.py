"""Fit a GPU profile's timing terms to measurements (pure): least squares on log(predicted/measured).

scipy.optimize.least_squares (trust-region reflective, bounded) does the search: bounded,
derivative-free through finite differences, and robust to the kinks of max(compute, memory),
which a hand-written Gauss-Newton or grid search handles worse. The result is the parameter
set; callers write it into a profile."""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.optimize import least_squares

from ..core.profiles import GpuProfile
from .predict import Measurement

# Parameter -> (lower, upper) bounds the fit may move it within.
FIT_BOUNDS: Mapping[str, tuple[float, float]] = {
    "compute_efficiency": (0.05, 1.0),
    "memory_efficiency": (0.3, 1.0),
    "gemm_half_gflop": (0.0, 200.0),
    "attention_efficiency": (0.05, 1.0),
    "attention_half_keys": (0.0, 20000.0),
    "step_overhead_us": (0.0, 20000.0),
    "layer_overhead_us": (0.0, 500.0),
    "decode_step_overhead_us": (0.0, 20000.0),
    "decode_layer_overhead_us": (0.0, 500.0),
    "allreduce_latency_us": (0.0, 200.0),
    "allreduce_efficiency": (0.1, 1.0),
    "alltoall_latency_us": (0.0, 500.0),
    "alltoall_efficiency": (0.05, 1.0),
}
DEFAULT_FIT = ("compute_efficiency", "gemm_half_gflop", "memory_efficiency", "step_overhead_us", "layer_overhead_us")

Predictor = Callable[[Measurement, GpuProfile], float]


def with_params(gpu: GpuProfile, names: Sequence[str], values: Sequence[float]) -> GpuProfile:
    return dataclasses.replace(gpu, **{n: float(v) for n, v in zip(names, values)})


def log_errors(rows: Sequence[Measurement], gpus: Mapping[str, GpuProfile], predict: Predictor) -> np.ndarray:
    """log(predicted / measured) per row (a throughput row's error has the opposite sign of a time's)."""
    return np.array([np.log(predict(m, gpus[m.gpu]) / m.measured) for m in rows])


def fit(
    rows: Sequence[Measurement], gpus: Mapping[str, GpuProfile], predict: Predictor,
    names: Sequence[str] = DEFAULT_FIT, shared: bool = True,
) -> dict[str, float]:
    """Parameters (the same for every GPU in `gpus` when shared) minimising the squared log errors.

    Starts from the first GPU's current values. Returns {name: value}."""
    names = list(names)
    unknown = [n for n in names if n not in FIT_BOUNDS]
    if unknown:
        raise ValueError(f"cannot fit {', '.join(unknown)}; valid: {', '.join(FIT_BOUNDS)}")
    first = next(iter(gpus.values()))
    lo = np.array([FIT_BOUNDS[n][0] for n in names])
    hi = np.array([FIT_BOUNDS[n][1] for n in names])
    x0 = np.clip(np.array([float(getattr(first, n)) for n in names]), lo, hi)
    scale = np.maximum(hi - lo, 1e-9)

    def residuals(z: np.ndarray) -> np.ndarray:
        x = lo + z * scale
        trial = {k: with_params(g, names, x) for k, g in gpus.items()}
        return log_errors(rows, trial, predict)

    res = least_squares(residuals, (x0 - lo) / scale, bounds=(0.0, 1.0), diff_step=1e-3, max_nfev=400)
    return {n: float(v) for n, v in zip(names, lo + res.x * scale)}
