"""Predict one published measurement from the emulator's timing (pure; no I/O).

A measurement row names a model, a GPU, a deployment (tp, ep, pp, dp_attention), dtypes, a batch
(sequences per step on one rank), ISL/OSL and a metric:
- ttft_ms: the batch's prompts prefilled together in one step (batch 1: the prompt alone);
- tpot_ms: one decode step of the batch at context ISL + OSL/2 (the run's mean context);
- e2e_ms: TTFT + (OSL - 1) decode steps at the mean context (the first token comes from prefill);
- prefill_tok_s_per_gpu: batch * ISL / that prefill step (every rank equally loaded).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..emulator import batching, timing
from ..core.profiles import GpuProfile, ModelProfile
from ..core.scenario import Deployment

METRICS = ("ttft_ms", "tpot_ms", "e2e_ms", "prefill_tok_s_per_gpu")


@dataclass(frozen=True)
class Measurement:
    id: str
    model: str
    gpu: str
    metric: str
    measured: float
    isl: int
    osl: int = 1
    batch: int = 1
    tp: int = 1
    ep: int = 1
    pp: int = 1
    dp_attention: bool = False
    weight_dtype: str | None = None
    kv_dtype: str | None = None
    scaleup_domain: int | None = None  # the system's scale-up domain when it differs from the GPU profile's
    kind: str = "point"  # "fleet_average": hours of a production fleet at varying load (not one configuration)
    source: str = ""
    url: str = ""
    framework: str = ""
    note: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def effective_model(model: ModelProfile, m: Measurement) -> ModelProfile:
    """The model as measured: the row's weight and KV dtypes override the profile's (fp16 = bf16)."""
    changes: dict[str, Any] = {}
    if m.weight_dtype:
        changes["weight_dtype"] = "bf16" if m.weight_dtype == "fp16" else m.weight_dtype
    if m.kv_dtype:
        changes["kv_dtype"] = m.kv_dtype
    return dataclasses.replace(model, **changes) if changes else model


def framework_key(m: Measurement, gpu: GpuProfile) -> str:
    """The profile's framework_step_overhead_us key for this row's framework ("vLLM" -> "vllm"),
    or "" when the profile lists none for it (the frameworks the step overheads were fitted on)."""
    words = m.framework.split()
    key = words[0].lower() if words else ""
    return key if key in gpu.framework_step_overhead_us else ""


def deployment(m: Measurement, gpu: GpuProfile | None = None) -> Deployment:
    return Deployment(tp=m.tp, ep=m.ep, pp=m.pp, dp_attention=m.dp_attention,
                      max_batch_tokens=m.batch * m.isl if m.batch > 1 else 0,
                      framework=framework_key(m, gpu) if gpu is not None else "")


def predict(m: Measurement, model: ModelProfile, gpu: GpuProfile) -> float:
    """The metric the emulator predicts for this row (same unit as `measured`)."""
    model = effective_model(model, m)
    if m.scaleup_domain:
        gpu = dataclasses.replace(gpu, scaleup_domain=m.scaleup_domain)
    dep = deployment(m, gpu)
    if m.metric in ("ttft_ms", "e2e_ms", "prefill_tok_s_per_gpu"):
        sched = batching.prefill_schedule(model, gpu, dep, [m.isl] * m.batch)
        prefill_ms = float(max(sched.start_ns + sched.prefill_ns)) / 1e6
        if m.metric == "ttft_ms":
            return prefill_ms
        if m.metric == "prefill_tok_s_per_gpu":
            return m.batch * m.isl / (prefill_ms / 1e3)
        step_ms = timing.decode_step_ns(model, gpu, dep, m.isl + m.osl // 2, batch=m.batch) / 1e6
        return prefill_ms + (m.osl - 1) * step_ms
    if m.metric == "tpot_ms":
        return timing.decode_step_ns(model, gpu, dep, m.isl + m.osl // 2, batch=m.batch) / 1e6
    raise ValueError(f"unknown metric {m.metric!r}; valid: {', '.join(METRICS)}")
