"""Roofline timing: per-layer prefill time, when each layer's KV is ready, decode step time.

Per layer and chunk of T new tokens after T0 earlier ones (chunked prefill: a chunk attends
to every earlier token):
  flops = 2 * active params of the layer * T  +  attention 2 * heads * (d_qk + d_v) * keys
          (keys = sum over the chunk's queries of the keys each sees: causal, or the window)
  bytes = weights touched + activations + KV written and read
  time  = max(flops / (peak * compute_eff), bytes / (hbm * mem_eff)) / tp
          + optional TP all-reduce: 2 per layer of T * hidden * 2 B, ring factor 2(tp-1)/tp,
            over the scale-up bandwidth (not overlapped).
The LM head is charged once, to the last layer. PP stages run one after another per chunk
(a single request does not pipeline), so PP does not change one request's prefill time.
Units: ns, bytes, FLOPs; GPU TFLOPS and TB/s are decimal.
"""
from __future__ import annotations

import numpy as np

from ..profiles import GpuProfile, ModelProfile
from ..scenario import Deployment
from .kvlayout import kv_layout

ACT_BYTES = 2  # activations in bf16
ACT_PASSES = 6  # activation tensors read/written per layer (norms, attention in/out, FFN in/out)


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


def ffn_params(model: ModelProfile, layer: int, experts_touched: float | None = None) -> tuple[float, float]:
    """(active params, params whose weights are read) of one layer's FFN (gated: 3 matrices).

    experts_touched: routed experts whose weights are read (None = the active ones)."""
    h = model.hidden_size
    if not is_moe_layer(model, layer):
        p = 3 * h * model.ffn_size
        return p, p
    moe = model.moe
    per_expert = 3 * h * moe.expert_ffn_size
    router = h * moe.experts
    active = (moe.active_experts + moe.shared_experts) * per_expert + router
    touched = moe.active_experts if experts_touched is None else experts_touched
    return active, (touched + moe.shared_experts) * per_expert + router


def experts_touched(model: ModelProfile, tokens: float) -> float:
    """Expected distinct routed experts hit by `tokens` tokens (uniform routing)."""
    if model.moe is None:
        return 0.0
    e, k = model.moe.experts, model.moe.active_experts
    return e * (1.0 - (1.0 - k / e) ** tokens)


def _tri(n: float) -> float:
    return n * (n + 1) / 2.0


def _layer_keys(model: ModelProfile, layer: int, t0: int, t: int) -> float:
    """Sum over the chunk's queries (positions t0+1 .. t0+t) of the keys each attends to:
    causal sees p keys, a sliding layer min(p, window). Closed form, no per-token arrays."""
    lo, hi = t0, t0 + t
    sw = model.sliding_window
    if sw and layer in sw.layers:
        w = sw.window
        a, b = min(lo, w), min(hi, w)
        return _tri(b) - _tri(a) + (hi - max(lo, w)) * w * (hi > w)
    return _tri(hi) - _tri(lo)


def chunk_bounds(isl: int, chunk_tokens: int) -> list[tuple[int, int]]:
    if isl <= 0:
        return [(0, 0)]
    c = chunk_tokens if chunk_tokens and chunk_tokens > 0 else isl
    return [(s, min(isl, s + c)) for s in range(0, isl, c)]


def layer_times_ns(
    model: ModelProfile, gpu: GpuProfile, deployment: Deployment, t0: int, t: int, allreduce: bool = True
) -> np.ndarray:
    """Prefill time of each layer for a chunk of t tokens after t0 earlier ones, per TP rank."""
    tp = deployment.tp
    layout = kv_layout(model, deployment)
    peak = peak_flops(model, gpu) * gpu.compute_efficiency
    bw = gpu.hbm_tb_per_s * 1e12 * gpu.memory_efficiency
    wbytes = weight_bytes_per_param(model)
    attn_p = attention_params(model)
    d_qk, d_v = attention_dims(model)
    kv_tok = layout.bytes_per_token_per_layer
    touched = experts_touched(model, t)
    out = np.empty(model.layers, dtype=np.float64)
    for layer in range(model.layers):
        ffn_active, ffn_read = ffn_params(model, layer, touched)
        flops = 2.0 * (attn_p + ffn_active) * t
        keys = _layer_keys(model, layer, t0, t)
        flops += 2.0 * model.heads * (d_qk + d_v) * keys
        nbytes = (attn_p + ffn_read) * wbytes
        nbytes += ACT_PASSES * t * model.hidden_size * ACT_BYTES
        nbytes += kv_tok[layer] * (t + layout.tokens_held(layer, t0 + t))  # write new, read all
        if layer == model.layers - 1:  # LM head, once (only the last token's logits are needed)
            flops += 2.0 * model.hidden_size * model.vocab_size
            nbytes += model.hidden_size * model.vocab_size * wbytes
        seconds = max(flops / peak, nbytes / bw) / tp
        if allreduce and tp > 1:
            seconds += 2 * t * model.hidden_size * ACT_BYTES * 2 * (tp - 1) / tp / (gpu.scaleup_gb_per_s * 1e9)
        out[layer] = seconds * 1e9
    return out


def layer_ready_ns(
    model: ModelProfile, gpu: GpuProfile, deployment: Deployment, isl: int, allreduce: bool = True
) -> np.ndarray:
    """[chunks, layers] cumulative ns from request start at which each layer of each chunk has its KV."""
    per_chunk = [layer_times_ns(model, gpu, deployment, a, b - a, allreduce) for a, b in chunk_bounds(isl, deployment.chunk_tokens)]
    times = np.stack(per_chunk)
    return np.cumsum(times.ravel()).reshape(times.shape)


def prefill_ns(model: ModelProfile, gpu: GpuProfile, deployment: Deployment, isl: int, allreduce: bool = True) -> float:
    """Whole prompt's prefill time (last layer of the last chunk)."""
    return float(layer_ready_ns(model, gpu, deployment, isl, allreduce)[-1, -1])


def decode_step_ns(
    model: ModelProfile, gpu: GpuProfile, deployment: Deployment, context_len: int, batch: int = 1
) -> float:
    """One decode step (TPOT) for `batch` sequences of `context_len` tokens, per TP rank.

    Memory bound: all dense weights, the routed experts the batch touches, and every
    sequence's KV are read once; compute bound at large batch (2 * active params per token)."""
    layout = kv_layout(model, deployment, side="decode")
    wbytes = weight_bytes_per_param(model)
    attn_p = attention_params(model)
    touched = experts_touched(model, batch)
    read_params = 0.0
    active_params = 0.0
    for layer in range(model.layers):
        active, read = ffn_params(model, layer, touched)
        read_params += attn_p + read
        active_params += attn_p + active
    head = model.hidden_size * model.vocab_size
    read_params += head
    active_params += head
    kv_bytes = batch * sum(
        layout.bytes_per_token_per_layer[l] * layout.tokens_held(l, context_len) for l in range(model.layers)
    )
    # KV bytes read per rank: each rank reads its share (MLA latent: the full copy on every rank).
    kv_rank = kv_bytes * layout.copies / deployment.tp if not layout.dp_attention else kv_bytes / deployment.tp
    nbytes = read_params * wbytes / deployment.tp + kv_rank
    bw = gpu.hbm_tb_per_s * 1e12 * gpu.memory_efficiency
    flops = 2.0 * active_params * batch / deployment.tp
    d_qk, d_v = attention_dims(model)
    flops += 2.0 * model.heads * (d_qk + d_v) * context_len * batch / deployment.tp
    peak = peak_flops(model, gpu) * gpu.compute_efficiency
    return max(nbytes / bw, flops / peak) * 1e9
