"""Timing terms, each on its own: structure, limits, monotonicity; batching; HBM fit.

How the shipped profiles compare with published measurements is `kvfabric validate` and
benchmarks/bench_validate.py (results in BENCHMARKS.md), not a unit test: these tests pin the
formulas, which hold for any parameter values."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pytest_kvfabric.emulator import timing
from pytest_kvfabric.emulator.batching import prefill_schedule
from pytest_kvfabric.core.profiles import GpuProfile, Moe, ModelProfile, SlidingWindow, load_gpu, load_model
from pytest_kvfabric.core.scenario import Deployment


def toy(**kw) -> ModelProfile:
    base = dict(id="toy", name="toy", attention="gqa", layers=4, hidden_size=1024, heads=8, kv_heads=8,
                head_dim=128, ffn_size=4096, vocab_size=32000)
    base.update(kw)
    return ModelProfile(**base)


def toy_moe(**kw) -> ModelProfile:
    return toy(moe=Moe(experts=8, active_experts=2, shared_experts=0, expert_ffn_size=1024, dense_layers=1), **kw)


GPU = GpuProfile(id="g", name="g", tflops={"bf16": 100.0}, hbm_capacity_gb=80, hbm_tb_per_s=1.0,
                 scaleup_gb_per_s=100.0, nic_gbps=100.0)
ROOF = timing.roofline_gpu(GPU)


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


def test_roofline_prefill_matches_hand_computation():
    m = toy()
    t = 8192
    attn_p = (1024 * 8 * 128) * 2 + 2 * 1024 * 8 * 128
    ffn_p = 3 * 1024 * 4096
    flops = 2 * (attn_p + ffn_p) * t + 2 * 8 * 256 * (t * (t + 1) / 2)
    elementwise = timing.ACT_PASSES * t * 1024 * timing.ACT_BYTES / 1e12
    times = timing.chunk_layer_ns(m, ROOF, Deployment(), 0, t)
    assert times[0] == pytest.approx((flops / 100e12 + elementwise) * 1e9, rel=1e-9)
    assert times[-1] > times[0]  # the LM head is charged to the last layer


def test_gemm_efficiency_rises_to_the_peak():
    g = dataclasses.replace(GPU, compute_efficiency=0.7, gemm_half_gflop=2.0)
    sizes = np.logspace(6, 16, 50)
    eff = timing.gemm_efficiency(g, sizes)
    assert np.all(np.diff(eff) > 0)
    assert eff[-1] == pytest.approx(0.7, rel=1e-5)  # large-GEMM limit = the profile's peak
    assert timing.gemm_efficiency(g, 2e9) == pytest.approx(0.35)
    assert timing.gemm_efficiency(dataclasses.replace(g, gemm_half_gflop=0.0), 1e6) == pytest.approx(0.7)


def test_small_gemms_make_high_tp_slower_per_token():
    g = dataclasses.replace(GPU, compute_efficiency=0.7, gemm_half_gflop=5.0)
    m = toy(hidden_size=4096, heads=32, kv_heads=8, ffn_size=14336, layers=2)
    one = timing.prefill_ns(m, g, Deployment(tp=1), 512)
    eight = timing.prefill_ns(m, g, Deployment(tp=8), 512)
    assert eight > one / 8 * 1.5  # far from linear scaling: each rank's GEMMs are small


def test_attention_efficiency_is_separate_from_gemms():
    m = toy()
    slow_attn = dataclasses.replace(ROOF, attention_efficiency=0.25)
    slow_gemm = dataclasses.replace(ROOF, compute_efficiency=0.25)
    base = timing.prefill_ns(m, ROOF, Deployment(), 32768)
    # at 32K tokens attention dominates: its efficiency matters far more than the GEMMs'
    assert timing.prefill_ns(m, slow_attn, Deployment(), 32768) > timing.prefill_ns(m, slow_gemm, Deployment(), 32768) > base
    half = dataclasses.replace(ROOF, attention_half_keys=1000.0)
    short, long_ = (timing.attention_efficiency(half, k) for k in (100.0, 100_000.0))
    assert short < long_ <= 1.0


def test_overhead_floor_dominates_at_tiny_isl():
    g = dataclasses.replace(GPU, hbm_tb_per_s=100.0, step_overhead_us=500.0, layer_overhead_us=20.0)
    floor_ns = (500 + 4 * 20) * 1e3
    tiny = timing.prefill_ns(toy(), g, Deployment(), 1)
    assert floor_ns <= tiny < floor_ns * 1.2
    assert timing.prefill_ns(toy(), g, Deployment(), 8) < floor_ns * 1.2  # still the floor
    d = dataclasses.replace(GPU, decode_step_overhead_us=300.0, decode_layer_overhead_us=10.0)
    assert timing.decode_step_ns(toy(), d, Deployment(), 16) - timing.decode_step_ns(toy(), GPU, Deployment(), 16) == pytest.approx(340e3)


def test_allreduce_latency_plus_size_over_bandwidth_twice_per_layer():
    g = dataclasses.replace(GPU, allreduce_latency_us=10.0, allreduce_efficiency=0.5)
    assert timing.allreduce_ns(g, 1e6, 1) == 0.0
    assert timing.allreduce_ns(g, 1e6, 4) == pytest.approx(10e3 + 1e6 * 2 * 3 / 4 / 50e9 * 1e9)
    m = toy()
    with_ar = timing.chunk_layer_ns(m, g, Deployment(tp=4), 0, 256)
    no_lat = timing.chunk_layer_ns(m, dataclasses.replace(g, allreduce_latency_us=0.0), Deployment(tp=4), 0, 256)
    assert np.allclose(with_ar - no_lat, 2 * 10e3)
    # beyond the scale-up domain the collective crosses the NIC (12.5 GB/s here): slower
    wide = dataclasses.replace(g, scaleup_domain=2)
    assert timing.allreduce_ns(wide, 1e6, 4) > timing.allreduce_ns(g, 1e6, 4)


def test_in_switch_allreduce_sends_each_byte_once_inside_the_domain_only():
    ring = dataclasses.replace(GPU, allreduce_efficiency=1.0)
    sharp = dataclasses.replace(ring, allreduce_in_switch=True)
    # 2 ranks: the ring already sends each byte once; NVLink SHARP changes nothing
    assert timing.allreduce_ns(sharp, 1e6, 2) == pytest.approx(timing.allreduce_ns(ring, 1e6, 2))
    # 8 ranks: 1x instead of 2*7/8 = 1.75x of the bytes over the 100 GB/s link
    assert timing.allreduce_ns(sharp, 1e6, 8) == pytest.approx(1e6 / 100e9 * 1e9)
    assert timing.allreduce_ns(ring, 1e6, 8) == pytest.approx(1.75 * 1e6 / 100e9 * 1e9)
    # beyond the switch's domain the NIC carries a ring: no in-network reduction
    narrow = dataclasses.replace(sharp, scaleup_domain=4)
    assert timing.allreduce_ns(narrow, 1e6, 8) == pytest.approx(timing.allreduce_ns(dataclasses.replace(ring, scaleup_domain=4), 1e6, 8))


def test_in_switch_flag_loads_from_profiles():
    assert load_gpu("h100").allreduce_in_switch and not load_gpu("a100").allreduce_in_switch
    assert not load_gpu("mi300x").allreduce_in_switch


def test_ep1_reproduces_no_ep_and_dense_models_ignore_ep():
    m = toy_moe()
    assert timing.prefill_ns(m, GPU, Deployment(tp=4, ep=1), 1024) == timing.prefill_ns(m, GPU, Deployment(tp=4), 1024)
    dense = toy()
    assert timing.prefill_ns(dense, GPU, Deployment(tp=4, ep=4), 1024) == timing.prefill_ns(dense, GPU, Deployment(tp=4), 1024)


def test_ep_pays_dispatch_and_combine_on_moe_layers():
    m = toy_moe()
    g = dataclasses.replace(GPU, alltoall_latency_us=50.0)
    a = timing.chunk_layer_ns(m, g, Deployment(tp=4, ep=4, dp_attention=True), 0, 512)
    b = timing.chunk_layer_ns(m, dataclasses.replace(g, alltoall_latency_us=0.0), Deployment(tp=4, ep=4, dp_attention=True), 0, 512)
    assert a[0] == pytest.approx(b[0])  # layer 0 is dense: no all-to-all
    assert np.allclose((a - b)[1:], 2 * 50e3)  # dispatch + combine per MoE layer
    # across scale-up domains a token crosses the NIC once per remote domain, at most topk times
    two = dataclasses.replace(g, scaleup_domain=2)
    assert timing.alltoall_ns(two, 1000.0, 100, 2, 4, 4) == pytest.approx(50e3 + 100 * 1 * 1000 / 12.5e9 * 1e9)
    assert timing.alltoall_ns(g, 1000.0, 100, 2, 4, 4) == pytest.approx(50e3 + 100 * 2 * 0.75 * 1000 / 100e9 * 1e9)


def test_expert_weights_spread_over_ep_ranks():
    m = toy_moe()
    # batch-1 decode is memory bound: EP=TP reads as many expert bytes per rank as TP-split experts
    ep = timing.decode_step_ns(m, ROOF, Deployment(tp=4, ep=4), 128)
    tp = timing.decode_step_ns(m, ROOF, Deployment(tp=4), 128)
    assert ep == pytest.approx(tp, rel=0.02)


def test_decode_step_grows_with_batch_but_sublinearly():
    m = load_model("llama3.1-8b")
    g = load_gpu("h100")
    steps = [timing.decode_step_ns(m, g, Deployment(), 1024, batch=b) for b in (1, 8, 64, 256)]
    assert all(b > a for a, b in zip(steps, steps[1:]))
    assert steps[1] < 2 * steps[0]  # weights are read once for the whole batch


def test_decode_moe_reads_only_touched_experts():
    m = load_model("deepseek-v3")
    g = timing.roofline_gpu(load_gpu("h100"))
    one = timing.decode_step_ns(m, g, Deployment(), 1000, batch=1)
    many = timing.decode_step_ns(m, g, Deployment(), 1000, batch=256)
    assert many > 5 * one  # a big batch touches nearly every routed expert


def test_sliding_window_bounds_attention():
    full = toy(layers=2)
    sw = toy(layers=2, sliding_window=SlidingWindow(window=128, layers=(0,)))
    a = timing.chunk_layer_ns(full, ROOF, Deployment(), 0, 32768)
    b = timing.chunk_layer_ns(sw, ROOF, Deployment(), 0, 32768)
    assert b[0] < a[0] / 2 and b[1] == pytest.approx(a[1])


def test_fp8_weights_fall_back_to_bf16_peak_without_fp8():
    m8 = toy(weight_dtype="fp8")
    assert timing.peak_flops(m8, GPU) == 100e12
    gpu8 = dataclasses.replace(GPU, tflops={"bf16": 100.0, "fp8": 200.0})
    assert timing.peak_flops(m8, gpu8) == 200e12


# ---- continuous batching ------------------------------------------------------------------


def test_batched_prefill_shares_steps():
    m = toy()
    alone = prefill_schedule(m, GPU, Deployment(), [512, 512])
    assert alone.overlap_ns.tolist() == [0.0, 0.0]
    assert alone.start_ns[1] == pytest.approx(alone.prefill_ns[0])
    both = prefill_schedule(m, GPU, Deployment(max_batch_tokens=1024), [512, 512])
    assert both.start_ns.tolist() == [0.0, 0.0]  # one step holds both prompts
    assert np.array_equal(both.ready_ns[0], both.ready_ns[1])
    assert both.overlap_ns[0] == pytest.approx(both.prefill_ns[0])
    # one batched step is faster than two sequential ones (weights read once), slower than one alone
    assert alone.prefill_ns[0] < both.prefill_ns[0] < alone.start_ns[1] + alone.prefill_ns[1]


def test_batched_prefill_splits_a_request_over_steps():
    m = toy()
    s = prefill_schedule(m, GPU, Deployment(max_batch_tokens=768), [512, 512])
    assert s.chunk_ends[0].tolist() == [512] and s.chunk_ends[1].tolist() == [256, 512]
    assert s.start_ns[1] == 0.0  # request 1 joined the first step
    assert s.ready_ns[1][0, -1] == pytest.approx(s.ready_ns[0][0, -1])
    assert s.ready_ns[1][1, -1] > s.ready_ns[1][0, -1]
    # the pacer frees the GPU for request 1 at start_0 + prefill_0 - overlap_0 = its start
    assert s.prefill_ns[0] - s.overlap_ns[0] == pytest.approx(s.start_ns[1])


def test_budget_at_least_the_prompt_matches_prefill_alone():
    m = toy()
    s = prefill_schedule(m, GPU, Deployment(max_batch_tokens=4096), [1000])
    assert s.prefill_ns[0] == pytest.approx(timing.prefill_ns(m, GPU, Deployment(), 1000))


def test_plan_with_batching_keeps_every_row_ready_by_its_request_prefill():
    from pytest_kvfabric.emulator.plan import build_plan, plan_summary
    from pytest_kvfabric.core.scenario import Arrival, Distribution, Scenario, Workload

    wl = Workload(isl=Distribution.fixed(300), osl=Distribution.fixed(8), requests=4, arrival=Arrival(kind="closed", concurrency=4))
    base = Scenario(id="b", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), workload=wl, pool_bytes=64 << 20)
    batched = base.replace(prefill=Deployment(max_batch_tokens=1000))
    plain, plan = build_plan(base), build_plan(batched)
    assert plain.requests["overlap_ns"].tolist() == [0, 0, 0, 0]
    # 1000-token steps: requests 0-2 and a third of request 3 share the first step
    assert (plan.requests["overlap_ns"][:3] > 0).all() and plan.requests["overlap_ns"][3] == 0
    for r in plan.requests:
        rows = plan.transfers[r["first"]: r["first"] + r["count"]]
        assert int(rows["ready_ns"].max()) == int(r["prefill_ns"])
    assert plan.total_bytes == plain.total_bytes  # batching changes when, not what
    # batching shortens the GPU's busy span, so the bandwidth needed to keep up rises
    assert plan_summary(plan, batched)["required_gbps"] > plan_summary(plain, base)["required_gbps"]


@pytest.mark.parametrize("model_id, tp, ep, dp", [("llama3.1-8b", 1, 1, False), ("llama3-70b", 8, 1, False),
                                                  ("deepseek-v3", 8, 8, True), ("mixtral-8x7b", 2, 2, False)])
def test_prefill_and_decode_grow_with_length_and_batch(model_id, tp, ep, dp):
    m, g = load_model(model_id), load_gpu("h100")
    dep = Deployment(tp=tp, ep=ep, dp_attention=dp)
    prefill = [timing.prefill_ns(m, g, dep, n) for n in (1, 64, 512, 4096, 32768)]
    assert all(b > a for a, b in zip(prefill, prefill[1:]))
    decode = [timing.decode_step_ns(m, g, dep, n) for n in (1, 1024, 65536)]
    assert all(b > a for a, b in zip(decode, decode[1:]))
    batch = [timing.decode_step_ns(m, g, dep, 1024, batch=b) for b in (1, 4, 64)]
    assert all(b > a for a, b in zip(batch, batch[1:]))


def test_hbm_fit_names_the_side_and_both_figures():
    from pytest_kvfabric.emulator.memory import hbm_fit_problem, weight_bytes_per_rank
    from pytest_kvfabric.core.scenario import Arrival, Distribution, Scenario, Workload

    m = load_model("deepseek-v3")
    wl = Workload(isl=Distribution.fixed(4096), osl=Distribution.fixed(1024), requests=1)
    ok = Scenario(id="s", model=m, gpu=load_gpu("h200"), prefill=Deployment(tp=8), decode=Deployment(tp=8), workload=wl)
    assert hbm_fit_problem(ok) is None
    assert weight_bytes_per_rank(m, Deployment(tp=8)) == pytest.approx(weight_bytes_per_rank(m, Deployment()) / 8, rel=0.01)
    field, reason = hbm_fit_problem(ok.replace(gpu=load_gpu("h100")))
    assert field == "prefill.tp" and "GB of weights" in reason and "h100's 80 GB of HBM" in reason
    # the decode side holds concurrency * (ISL + OSL) tokens of KV
    crowded = ok.replace(workload=dataclasses.replace(wl, isl=Distribution.fixed(131072), arrival=Arrival(kind="closed", concurrency=64)))
    field, reason = hbm_fit_problem(crowded)
    assert field == "decode.tp" and "GB of KV" in reason
