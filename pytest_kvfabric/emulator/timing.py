"""Emulated GPU timing: a roofline with calibrated terms, per layer of one forward step on one rank.

A step processes T new tokens on a rank (one prompt chunk, several batched prompt chunks, or
one token of each of B decoding sequences). Per layer, on one rank:

  gemm(F, W)   = sum over its n GEMMs of max(F/n / (peak * e_gemm(F/n)),  W/n / (hbm * e_mem))
                 e_gemm(f) = compute_efficiency * f / (f + gemm_half_gflop * 1e9)
  attention    = max(A / (peak_bf16 * e_attn(k)), KV bytes / (hbm * e_mem))
                 A = 2 * heads_on_rank * (d_qk + d_v) * keys,  k = keys per query,
                 e_attn(k) = attention_efficiency * k / (k + attention_half_keys)
  elementwise  = ACT_PASSES * T * hidden * 2 B / (hbm * e_mem)      (norms, residuals, rotary)
  all-reduce   = allreduce_latency_us + S * traffic / (link * allreduce_efficiency),
                 S = T * hidden * 2 B; traffic = 2 (tp-1)/tp for a ring, 1 when the scale-up switch
                 reduces in the network (allreduce_in_switch: NVLink SHARP); two per layer under TP
                 (one per MoE layer with EP > 1)
  all-to-all   = dispatch + combine on MoE layers with EP > 1, each alltoall_latency_us
                 + tokens * copies * hidden * bytes / (link * alltoall_efficiency); dispatch in the
                 weights' dtype (fp8 with fp8 weights), combine in bf16; inside one scale-up domain
                 copies = topk (ep-1)/ep over the scale-up link, across domains copies = min(topk,
                 domains - 1) over the NIC (DeepEP forwards once per node, NVLink fans out)
  layer        = attention-projection gemm + attention + FFN gemm (dense, or routed + shared experts)
                 + elementwise + communication + layer_overhead_us (decode: decode_layer_overhead_us)
  step         = sum of its layers + step_overhead_us (decode: decode_step_overhead_us)
                 + framework_step_overhead_us[deployment.framework] (0 without a framework), charged
                 before layer 0

Parallelism: TP splits attention heads and FFN columns over `tp` ranks. With dp_attention each
of the `tp` ranks runs attention (and dense FFNs) on its own requests with whole weights, and
every rank is assumed equally loaded. MoE experts are spread over `ep` ranks (each expert
TP-split over tp/ep); a rank reads only its local experts that some token routes to (uniform
routing). PP: a rank runs its stage's layers; one request's stages run one after another.
Units: ns, bytes, FLOPs; TFLOPS, TB/s and GB/s decimal.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from ..core.profiles import GpuProfile, ModelProfile
from ..core.scenario import Deployment
from .kvlayout import kv_layout

ACT_BYTES = 2  # activations in bf16
ACT_PASSES = 6  # activation tensors read/written per layer outside GEMMs (norms, residuals, rotary)


def peak_flops(model: ModelProfile, gpu: GpuProfile) -> float:
    """Dense peak FLOP/s for the model's weight dtype.

    A GPU without that dtype (e.g. fp8 weights on an A100, fp4 on an H100) runs the
    matmuls at the next wider dtype it has: fp4 -> fp8 -> bf16."""
    for dtype in {"fp4": ("fp4", "fp8", "bf16"), "fp8": ("fp8", "bf16")}.get(model.weight_dtype, ("bf16",)):
        if gpu.tflops.get(dtype):
            return float(gpu.tflops[dtype]) * 1e12
    return float(gpu.tflops["bf16"]) * 1e12


def weight_bytes_per_param(model: ModelProfile) -> float:
    return {"fp4": 0.5, "fp8": 1.0, "fp32": 4.0}.get(model.weight_dtype, 2.0)


def attention_params(model: ModelProfile) -> int:
    h = model.hidden_size
    if model.attention == "mla" and model.mla is not None:
        m = model.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = h * m.q_lora_rank + m.q_lora_rank * model.heads * qk if m.q_lora_rank else h * model.heads * qk
        kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * model.heads * (m.qk_nope_head_dim + m.v_head_dim)
        return q + kv + model.heads * m.v_head_dim * h
    d = model.head_dim
    return h * model.heads * d + 2 * h * model.kv_heads * d + model.heads * d * h


def attention_dims(model: ModelProfile) -> tuple[int, int]:
    """(d_qk, d_v) per query head, for the quadratic term."""
    if model.attention == "mla" and model.mla is not None:
        return model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim, model.mla.v_head_dim
    return model.head_dim, model.head_dim


def is_moe_layer(model: ModelProfile, layer: int) -> bool:
    return model.moe is not None and layer >= model.moe.dense_layers


def experts_touched(model: ModelProfile, tokens: float) -> float:
    """Expected distinct routed experts hit by `tokens` tokens (uniform routing)."""
    if model.moe is None:
        return 0.0
    e, k = model.moe.experts, model.moe.active_experts
    return e * (1.0 - (1.0 - k / e) ** tokens)


# --------------------------------------------------------------------------- terms


def gemm_efficiency(gpu: GpuProfile, flops: np.ndarray | float) -> np.ndarray | float:
    """Achieved/peak FLOPS of one GEMM of `flops` (per rank): rises with size to compute_efficiency."""
    half = gpu.gemm_half_gflop * 1e9
    return gpu.compute_efficiency * flops / (flops + half) if half > 0 else gpu.compute_efficiency + 0 * flops


def attention_efficiency(gpu: GpuProfile, keys_per_query: np.ndarray | float) -> np.ndarray | float:
    """Achieved/peak FLOPS of a FlashAttention-class kernel: rises with the keys each query sees."""
    half = gpu.attention_half_keys
    k = np.maximum(keys_per_query, 1e-9)
    return gpu.attention_efficiency * k / (k + half) if half > 0 else gpu.attention_efficiency + 0 * k


def link_gb_per_s(gpu: GpuProfile, ranks: int) -> float:
    """Per-GPU bandwidth of a collective over `ranks`: scale-up inside one domain, else the NIC."""
    return gpu.scaleup_gb_per_s if ranks <= gpu.scaleup_domain else gpu.nic_gbps / 8.0


def allreduce_traffic(gpu: GpuProfile, ranks: int) -> float:
    """Bytes each GPU sends per byte all-reduced: 2(n-1)/n for a ring (reduce-scatter + all-gather);
    1 when the scale-up switch reduces in the network (NVLink SHARP: each GPU sends its buffer once
    and the switch multicasts the sum back), capped by the ring's figure (n = 2: both are 1)."""
    ring = 2.0 * (ranks - 1) / ranks
    if gpu.allreduce_in_switch and ranks <= gpu.scaleup_domain:
        return min(1.0, ring)
    return ring


def allreduce_ns(gpu: GpuProfile, nbytes: float, ranks: int) -> float:
    """All-reduce of `nbytes` over `ranks` GPUs: latency + traffic * size / bus bandwidth."""
    if ranks <= 1:
        return 0.0
    bw = link_gb_per_s(gpu, ranks) * 1e9 * gpu.allreduce_efficiency
    return gpu.allreduce_latency_us * 1e3 + nbytes * allreduce_traffic(gpu, ranks) / bw * 1e9


def alltoall_ns(gpu: GpuProfile, token_bytes: float, tokens: float, topk: int, ep: int, ranks: int) -> float:
    """One all-to-all (dispatch or combine) of `tokens` tokens of `token_bytes` each, routed to
    `topk` experts spread over `ep` ranks. Inside one scale-up domain a token goes once to each
    of its experts' ranks ((ep-1)/ep of them remote); across domains (DeepEP's internode
    kernels) it crosses the NIC once per remote domain, at most topk, and NVLink fans it out."""
    if ep <= 1:
        return 0.0
    if ranks <= gpu.scaleup_domain:
        copies = topk * (ep - 1) / ep
    else:
        copies = min(topk, -(-ranks // gpu.scaleup_domain) - 1)
    bw = link_gb_per_s(gpu, ranks) * 1e9 * gpu.alltoall_efficiency
    return gpu.alltoall_latency_us * 1e3 + tokens * copies * token_bytes / bw * 1e9


def roofline_gpu(gpu: GpuProfile) -> GpuProfile:
    """The same GPU as a GenZ-style pure roofline: every efficiency 1, no size curves, no overheads."""
    return dataclasses.replace(
        gpu, compute_efficiency=1.0, memory_efficiency=1.0, gemm_half_gflop=0.0, attention_efficiency=1.0,
        attention_half_keys=0.0, step_overhead_us=0.0, layer_overhead_us=0.0, decode_step_overhead_us=0.0,
        decode_layer_overhead_us=0.0, allreduce_latency_us=0.0,
        allreduce_efficiency=1.0, alltoall_latency_us=0.0, alltoall_efficiency=1.0,
        framework_step_overhead_us={k: 0.0 for k in gpu.framework_step_overhead_us})


# --------------------------------------------------------------------------- one step


@dataclass(frozen=True)
class _Shape:
    """What a model and deployment fix for every step (cached)."""

    attn_p: float  # attention projection params per layer (whole model)
    d_qk: int
    d_v: int
    moe: np.ndarray  # bool per layer
    sliding: np.ndarray  # bool per layer
    kv_rank_bytes: np.ndarray  # KV bytes per token per layer held by one rank


@functools.lru_cache(maxsize=64)
def _shape(model: ModelProfile, deployment: Deployment) -> _Shape:
    layout = kv_layout(model, deployment, side=None)
    d_qk, d_v = attention_dims(model)
    return _Shape(
        attn_p=float(attention_params(model)), d_qk=d_qk, d_v=d_v,
        moe=np.array([is_moe_layer(model, l) for l in range(model.layers)], dtype=bool),
        sliding=np.array(layout.sliding, dtype=bool),
        kv_rank_bytes=np.array(layout.bytes_per_rank_per_token_per_layer, dtype=np.float64),
    )


def _gemm_ns(gpu: GpuProfile, peak: float, bw: float, flops: np.ndarray | float, wbytes: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """n equal GEMMs sharing `flops` and `wbytes`: each the max of its compute and weight-read time."""
    n = np.maximum(n, 1.0)
    f = np.asarray(flops, dtype=np.float64) / n
    compute = np.where(f > 0, f / (peak * np.maximum(gemm_efficiency(gpu, f), 1e-12)), 0.0)
    return n * np.maximum(compute, np.asarray(wbytes, dtype=np.float64) / n / bw) * 1e9


def framework_overhead_us(gpu: GpuProfile, framework: str) -> float:
    """Extra host time per forward step of `framework` on this GPU profile (0 for "").

    The step overheads were fitted on TensorRT-LLM/NIM; a framework that spends more CPU time per
    step (vLLM: Python scheduling, input preparation, sampling) adds its own fitted figure."""
    if not framework:
        return 0.0
    table = gpu.framework_step_overhead_us
    key = framework.lower()
    if key not in table:
        valid = ", ".join(sorted(table)) or "none"
        raise ValueError(f"deployment framework {framework!r}: GPU profile {gpu.id!r} has no "
                         f"framework_step_overhead_us entry for it; valid: {valid}")
    return float(table[key])


def step_layer_ns(
    model: ModelProfile, gpu: GpuProfile, deployment: Deployment, tokens: float, keys: np.ndarray,
    kv_tokens: np.ndarray, seqs: int = 1, decode: bool = False,
) -> np.ndarray:
    """Per-layer ns of one step on one rank (step overhead charged to layer 0).

    tokens: new tokens on this rank; keys[layer]: sum over those queries of the keys each
    attends to; kv_tokens[layer]: KV tokens read or written; seqs: sequences (LM-head rows);
    decode: a decode step pays the decode overheads (engines replay decode steps as CUDA graphs)."""
    s = _shape(model, deployment)
    tp, ep, dp = deployment.tp, max(1, deployment.ep), deployment.dp_attention
    split = 1 if dp else tp  # ranks sharing one token's attention and dense FFN
    t = float(tokens)
    t_global = t * tp if dp else t  # tokens routed to the MoE layers per step, all ranks
    h = model.hidden_size
    peak = peak_flops(model, gpu)
    bw = gpu.hbm_tb_per_s * 1e12 * gpu.memory_efficiency
    wb = weight_bytes_per_param(model)

    attn_gemms = 4 if model.attention == "mla" else 2
    out = _gemm_ns(gpu, peak, bw, 2 * s.attn_p / split * t, s.attn_p / split * wb, attn_gemms) * np.ones(model.layers)
    a_flops = 2.0 * model.heads / split * (s.d_qk + s.d_v) * np.asarray(keys, dtype=np.float64)
    a_eff = attention_efficiency(gpu, np.asarray(keys, dtype=np.float64) / max(t, 1.0))
    a_bytes = s.kv_rank_bytes * np.asarray(kv_tokens, dtype=np.float64)
    bf16 = float(gpu.tflops["bf16"]) * 1e12
    out += np.maximum(a_flops / (bf16 * np.maximum(a_eff, 1e-12)), a_bytes / bw) * 1e9

    dense = _gemm_ns(gpu, peak, bw, 2 * 3 * h * model.ffn_size / split * t, 3 * h * model.ffn_size / split * wb, 2)
    ffn = np.full(model.layers, float(dense))
    comm = np.zeros(model.layers)
    ar = allreduce_ns(gpu, t * h * ACT_BYTES, tp) if not dp else 0.0
    comm[:] = 2 * ar
    if model.moe is not None and s.moe.any():
        moe = model.moe
        pe = 3.0 * h * moe.expert_ffn_size
        moe_tp = max(1, tp // ep)
        local = moe.experts / ep
        touched = local * (1.0 - (1.0 - moe.active_experts / moe.experts) ** t_global)
        routed = _gemm_ns(gpu, peak, bw, 2 * t_global * moe.active_experts * pe / tp,
                          touched * pe / moe_tp * wb, 2 * max(touched, 1.0))
        shared = _gemm_ns(gpu, peak, bw, 2 * (moe.shared_experts * pe + h * moe.experts) / split * t,
                          (moe.shared_experts * pe + h * moe.experts) / split * wb, 2)
        ffn[s.moe] = float(routed + shared)
        if ep > 1:
            t_local = t_global / tp
            k = moe.active_experts
            comm[s.moe] = ((0 if dp else ar) + alltoall_ns(gpu, h * min(wb, ACT_BYTES), t_local, k, ep, tp)
                           + alltoall_ns(gpu, h * ACT_BYTES, t_local, k, ep, tp))
    out += ffn + comm
    layer_us, step_us = ((gpu.decode_layer_overhead_us, gpu.decode_step_overhead_us) if decode
                         else (gpu.layer_overhead_us, gpu.step_overhead_us))
    step_us += framework_overhead_us(gpu, deployment.framework)
    out += ACT_PASSES * t * h * ACT_BYTES / bw * 1e9 + layer_us * 1e3
    lm_split = 1 if dp else tp
    out[-1] += float(_gemm_ns(gpu, peak, bw, 2 * h * model.vocab_size / lm_split * seqs, h * model.vocab_size / lm_split * wb, 1))
    out[0] += step_us * 1e3
    return out


# --------------------------------------------------------------------------- prefill and decode


def _tri(n: np.ndarray | float) -> np.ndarray | float:
    return n * (n + 1) / 2.0


def chunk_keys(model: ModelProfile, t0: int, t: int) -> np.ndarray:
    """Per layer: sum over the chunk's queries (positions t0+1 .. t0+t) of the keys each attends
    to (causal: p keys; a sliding layer min(p, window)). Closed form, no per-token arrays."""
    lo, hi = t0, t0 + t
    full = _tri(hi) - _tri(lo)
    out = np.full(model.layers, float(full))
    sw = model.sliding_window
    if sw:
        w = sw.window
        a, b = min(lo, w), min(hi, w)
        out[list(sw.layers)] = _tri(b) - _tri(a) + (hi - max(lo, w)) * w * (hi > w)
    return out


def held_tokens(model: ModelProfile, n: int) -> np.ndarray:
    """Per layer: KV tokens a layer holds for a request of n tokens (sliding layers: the window)."""
    out = np.full(model.layers, float(n))
    sw = model.sliding_window
    if sw:
        out[list(sw.layers)] = min(n, sw.window)
    return out


def chunk_bounds(isl: int, chunk_tokens: int) -> list[tuple[int, int]]:
    if isl <= 0:
        return [(0, 0)]
    c = chunk_tokens if chunk_tokens and chunk_tokens > 0 else isl
    return [(s, min(isl, s + c)) for s in range(0, isl, c)]


def chunk_layer_ns(model: ModelProfile, gpu: GpuProfile, deployment: Deployment, t0: int, t: int) -> np.ndarray:
    """Per-layer ns of one prefill step holding one request's chunk of t tokens after t0 earlier ones."""
    return step_layer_ns(model, gpu, deployment, t, chunk_keys(model, t0, t),
                         t + held_tokens(model, t0 + t), seqs=1)


def layer_ready_ns(model: ModelProfile, gpu: GpuProfile, deployment: Deployment, isl: int) -> np.ndarray:
    """[chunks, layers] cumulative ns from request start at which each layer of each chunk has its KV
    (the request prefilled alone, chunk by chunk)."""
    per_chunk = [chunk_layer_ns(model, gpu, deployment, a, b - a) for a, b in chunk_bounds(isl, deployment.chunk_tokens)]
    times = np.stack(per_chunk)
    return np.cumsum(times.ravel()).reshape(times.shape)


def prefill_ns(model: ModelProfile, gpu: GpuProfile, deployment: Deployment, isl: int) -> float:
    """Whole prompt's prefill time, alone on the GPU (last layer of the last chunk)."""
    return float(layer_ready_ns(model, gpu, deployment, isl)[-1, -1])


def decode_step_ns(
    model: ModelProfile, gpu: GpuProfile, deployment: Deployment, context_len: int, batch: int = 1
) -> float:
    """One decode step (TPOT) for `batch` sequences of `context_len` tokens on each rank: one new
    token per sequence, every weight the step touches and every sequence's KV read once."""
    b = max(1, int(batch))
    held = held_tokens(model, context_len)
    return float(step_layer_ns(model, gpu, deployment, b, b * held, b * held, seqs=b, decode=True).sum())
