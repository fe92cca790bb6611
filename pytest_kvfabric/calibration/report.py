"""Predicted vs measured for every row of a table, and the summary `kvfabric validate` prints (pure)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..emulator.timing import roofline_gpu
from ..core.profiles import GpuProfile, ModelProfile
from .predict import Measurement, predict
from .table import FLEET_AVERAGE

WITHIN = 0.25  # the "within +-25%" share the summary reports


def evaluate(
    rows: Sequence[Measurement], model_of: Callable[[str], ModelProfile], gpu_of: Callable[[str], GpuProfile],
    split_of: Callable[[Measurement], str] = lambda m: "fit",
) -> list[dict[str, Any]]:
    """One dict per row: predicted, ratio = predicted/measured, err = ratio - 1, and the same for
    a GenZ-style pure roofline of the same GPU (every efficiency 1, no overheads)."""
    out = []
    for m in rows:
        model, gpu = model_of(m.model), gpu_of(m.gpu)
        ours = predict(m, model, gpu)
        roof = predict(m, model, roofline_gpu(gpu))
        out.append({
            "id": m.id, "source": m.source, "split": split_of(m), "model": m.model, "gpu": m.gpu,
            "metric": m.metric, "measured": m.measured, "predicted": ours, "ratio": ours / m.measured,
            "err": ours / m.measured - 1.0, "roofline": roof, "roofline_err": roof / m.measured - 1.0, "url": m.url,
        })
    return out


def summarize(results: Sequence[Mapping[str, Any]], key: str = "err") -> dict[str, Any]:
    """Per split and overall: rows, median |error|, worst error (signed), share within +-25%.

    "all" covers the point measurements (fit and holdout); fleet averages stay in their own group."""
    out: dict[str, Any] = {}
    splits = sorted({r["split"] for r in results}) + ["all"]
    for s in splits:
        errs = np.array([r[key] for r in results if r["split"] == s or (s == "all" and r["split"] != FLEET_AVERAGE)],
                        dtype=float)
        if len(errs) == 0:
            continue
        worst = float(errs[np.argmax(np.abs(errs))])
        out[s] = {"rows": int(len(errs)), "median_abs_err": float(np.median(np.abs(errs))),
                  "worst_err": worst, "within_25pct": float(np.mean(np.abs(errs) <= WITHIN))}
    return out
