"""Timing roofline: structure tests and comparisons with published measurements.

The comparisons use the shipped GPU profile defaults (compute_efficiency 0.5,
memory_efficiency 0.8) and the model profiles' own weight dtype; nothing is tuned per test.
Each states the ratio predicted/published we got and the tolerance we assert, and why.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pytest_kvfabric.emulator import timing
from pytest_kvfabric.profiles import GpuProfile, ModelProfile, SlidingWindow, load_gpu, load_model
from pytest_kvfabric.scenario import Deployment


def toy(**kw) -> ModelProfile:
    base = dict(id="toy", name="toy", attention="gqa", layers=4, hidden_size=1024, heads=8, kv_heads=8,
                head_dim=128, ffn_size=4096, vocab_size=32000)
    base.update(kw)
    return ModelProfile(**base)


GPU = GpuProfile(id="g", name="g", tflops={"bf16": 100.0}, hbm_capacity_gb=80, hbm_tb_per_s=1.0,
                 scaleup_gb_per_s=100.0, nic_gbps=100.0)


def test_layer_ready_is_cumulative_and_monotone():
    ready = timing.layer_ready_ns(toy(), GPU, Deployment(), 2048)
    assert ready.shape == (1, 4)
    assert np.all(np.diff(ready.ravel()) > 0)
    assert timing.prefill_ns(toy(), GPU, Deployment(), 2048) == ready[-1, -1]


def test_chunked_prefill_shapes_and_cost():
    m = toy()
    ready = timing.layer_ready_ns(m, GPU, Deployment(chunk_tokens=512), 2000)
    assert ready.shape == (4, 4)  # 512, 512, 512, 464
    assert np.all(np.diff(ready.ravel()) > 0)
    whole = timing.prefill_ns(m, GPU, Deployment(), 2000)
    # chunks re-read the weights and attend to all earlier tokens: never cheaper than one pass
    assert ready[-1, -1] >= whole * 0.999


def test_prefill_compute_bound_matches_hand_roofline():
    m = toy()
    t = 8192
    per_layer_params = (1024 * 8 * 128) * 2 + 2 * 1024 * 8 * 128 + 3 * 1024 * 4096
    flops = 2 * per_layer_params * t + 2 * 8 * 256 * (t * (t + 1) / 2)
    times = timing.layer_times_ns(m, GPU, Deployment(), 0, t, allreduce=False)
    assert times[0] == pytest.approx(flops / (100e12 * 0.5) * 1e9, rel=1e-9)
    assert times[-1] > times[0]  # the LM head is charged to the last layer


def test_tp_divides_and_allreduce_adds():
    m = toy()
    one = timing.prefill_ns(m, GPU, Deployment(tp=1), 4096)
    four_no_ar = timing.prefill_ns(m, GPU, Deployment(tp=4), 4096, allreduce=False)
    four = timing.prefill_ns(m, GPU, Deployment(tp=4), 4096)
    assert four_no_ar == pytest.approx(one / 4)
    assert four > four_no_ar


def test_sliding_window_bounds_attention():
    full = toy(layers=2)
    sw = toy(layers=2, sliding_window=SlidingWindow(window=128, layers=(0,)))
    a = timing.layer_times_ns(full, GPU, Deployment(), 0, 32768, allreduce=False)
    b = timing.layer_times_ns(sw, GPU, Deployment(), 0, 32768, allreduce=False)
    assert b[0] < a[0] / 2 and b[1] == pytest.approx(a[1])


def test_fp8_weights_fall_back_to_bf16_peak_without_fp8():
    m8 = toy(weight_dtype="fp8")
    assert timing.peak_flops(m8, GPU) == 100e12
    gpu8 = dataclasses.replace(GPU, tflops={"bf16": 100.0, "fp8": 200.0})
    assert timing.peak_flops(m8, gpu8) == 200e12


def test_decode_step_memory_bound_weights_plus_kv():
    m = toy()
    step = timing.decode_step_ns(m, GPU, Deployment(), 0)
    params = 4 * ((1024 * 8 * 128) * 2 + 2 * 1024 * 8 * 128 + 3 * 1024 * 4096) + 1024 * 32000
    assert step == pytest.approx(params * 2 / (1e12 * 0.8) * 1e9, rel=1e-9)
    assert timing.decode_step_ns(m, GPU, Deployment(), 10_000) > step
    assert timing.decode_step_ns(m, GPU, Deployment(tp=2), 0) == pytest.approx(step / 2)


def test_decode_moe_reads_only_touched_experts():
    m = load_model("deepseek-v3")
    g = load_gpu("h100")
    one = timing.decode_step_ns(m, g, Deployment(), 1000, batch=1)
    many = timing.decode_step_ns(m, g, Deployment(), 1000, batch=256)
    assert many > 5 * one  # a big batch touches nearly every routed expert


# ---- Published measurements -------------------------------------------------------------

# NVIDIA Technical Blog, "Low Latency Inference Chapter 2: Blackwell is Coming. NVIDIA GH200
# NVL32 with NVLink Switch Gives Signs of Big Leap in Time to First Token Performance"
# https://developer.nvidia.com/blog/low-latency-inference-chapter-2-blackwell-is-coming-nvidia-gh200-nvl32-with-nvlink-switch-gives-signs-of-big-leap-in-time-to-first-token-performance
# TTFT on 32 GH200 (Hopper: H100/H200 compute, HBM3e): Llama 3.1 70B, ISL 32,768: 472 ms;
# Llama 3.1 405B, ISL 32,768: ~1.6 s; ISL 122,880: 7.5 s. Modelled as TP32 on the h200
# profile, bf16 weights (the profiles' dtype; the post does not restate the precision).
# Achieved predicted/published: 1.57, 1.94, 1.94. Tolerance 2x: we charge the TP all-reduce
# fully (TensorRT-LLM overlaps it and may run fp8), so we are pessimistic, not optimistic.
@pytest.mark.parametrize(
    "model_id, isl, published_ms",
    [("llama3-70b", 32_768, 472.0), ("llama3.1-405b", 32_768, 1600.0), ("llama3.1-405b", 122_880, 7500.0)],
)
def test_prefill_vs_nvidia_gh200_nvl32_ttft(model_id, isl, published_ms):
    predicted_ms = timing.prefill_ns(load_model(model_id), load_gpu("h200"), Deployment(tp=32), isl) / 1e6
    ratio = predicted_ms / published_ms
    assert 1.0 <= ratio <= 2.0, ratio


# DeepSeek, "Day 6: One More Thing, DeepSeek-V3/R1 Inference System Overview"
# https://github.com/deepseek-ai/open-infra-index/blob/main/202502OpenSourceWeek/day_6_one_more_thing_deepseekV3R1_inference_system_overview.md
# Each H800 node (8 GPUs) prefills ~73.7k input tokens/s including 56.3% on-disk KV cache
# hits, so ~73.7k * 0.437 / 8 = 4.03k computed tokens/s per GPU. We model one GPU's prefill
# of a ~5k-token prompt (their mean KV length is 4,989) with fp8 weights at TP1.
# Achieved predicted/published throughput: ~2.9x. Tolerance 3.5x: expert-parallel all-to-all
# (EP32), load imbalance across experts and the fleet's day-long averaging are not modelled.
def test_prefill_vs_deepseek_inference_overview():
    m = load_model("deepseek-v3")
    isl = 4989
    seconds = timing.prefill_ns(m, load_gpu("h800"), Deployment(tp=1), isl) / 1e9
    predicted_tok_s = isl / seconds
    published_tok_s = 73_700 * (1 - 0.563) / 8
    ratio = predicted_tok_s / published_tok_s
    assert 1.0 <= ratio <= 3.5, ratio


# NVIDIA Technical Blog, "Low Latency Inference Chapter 1: Up to 1.9x Higher Llama 3.1
# Performance with Medusa on NVIDIA HGX H200 with NVLink Switch"
# https://developer.nvidia.com/blog/low-latency-inference-chapter-1-up-to-1-9x-higher-llama-3-1-performance-with-medusa-on-nvidia-hgx-h200-with-nvlink-switch/
# Batch 1 on 8 H200 (TP8): with Medusa 268 tok/s/user (70B, "over 1.5x") and 108 tok/s/user
# (405B, "1.9x"); so without speculative decoding ~268/1.5 and ~108/1.9 tok/s/user, i.e.
# TPOT ~5.6 ms and ~17.6 ms. Achieved predicted/published TPOT (bf16 profile weights): 0.81
# and 1.50. Tolerance 2x either way: the blog's weight precision is not restated (fp8 would
# halve our figure), and batch-1 decode also pays per-layer all-reduce latency and kernel
# launches that a bandwidth roofline leaves out.
@pytest.mark.parametrize("model_id, published_ms", [("llama3-70b", 1000 / (268 / 1.5)), ("llama3.1-405b", 1000 / (108 / 1.9))])
def test_decode_vs_nvidia_hgx_h200_batch1(model_id, published_ms):
    predicted_ms = timing.decode_step_ns(load_model(model_id), load_gpu("h200"), Deployment(tp=8), 1024) / 1e6
    ratio = predicted_ms / published_ms
    assert 0.5 <= ratio <= 2.0, ratio
