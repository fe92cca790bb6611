"""Hypothesis properties of the timing terms, over generated GPU parameters, model shapes and loads.

The terms must hold these for any parameter values, not only the shipped ones: time grows with
the prompt and with the tokens in a step, TP never slows the per-rank work (communication
aside), the GEMM curve tends to its peak, EP = 1 is the no-EP model, and continuous batching
never lets a request's last layer be ready before its prompt could be computed alone."""
from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.emulator import timing
from pytest_kvfabric.emulator.batching import prefill_schedule
from pytest_kvfabric.emulator.kvlayout import valid_tp
from pytest_kvfabric.core.profiles import GpuProfile, ModelProfile, Moe
from pytest_kvfabric.core.scenario import Deployment

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
REL = 1e-9  # float slack for sums of the same terms in another order


@st.composite
def gpus(draw) -> GpuProfile:
    f = st.floats
    return GpuProfile(
        id="g", name="g", tflops={"bf16": draw(f(10, 2000))}, hbm_capacity_gb=80,
        hbm_tb_per_s=draw(f(0.5, 8)), scaleup_gb_per_s=draw(f(50, 900)), nic_gbps=draw(f(25, 800)),
        compute_efficiency=draw(f(0.05, 1)), memory_efficiency=draw(f(0.3, 1)), gemm_half_gflop=draw(f(0, 50)),
        attention_efficiency=draw(f(0.05, 1)), attention_half_keys=draw(f(0, 4096)),
        step_overhead_us=draw(f(0, 2000)), layer_overhead_us=draw(f(0, 200)),
        decode_step_overhead_us=draw(f(0, 2000)), decode_layer_overhead_us=draw(f(0, 200)),
        allreduce_latency_us=draw(f(0, 100)), allreduce_efficiency=draw(f(0.1, 1)),
        alltoall_latency_us=draw(f(0, 100)), alltoall_efficiency=draw(f(0.05, 1)),
        scaleup_domain=draw(st.sampled_from([2, 4, 8, 72])), allreduce_in_switch=draw(st.booleans()),
    )


@st.composite
def models(draw, moe: bool | None = None) -> ModelProfile:
    heads = draw(st.sampled_from([8, 16, 32]))
    kv_heads = draw(st.sampled_from([h for h in (1, 2, 4, 8) if heads % h == 0]))
    head_dim = draw(st.sampled_from([64, 128]))
    hidden = heads * head_dim
    use_moe = draw(st.booleans()) if moe is None else moe
    spec = Moe(experts=draw(st.sampled_from([8, 16, 64])), active_experts=draw(st.integers(1, 8)),
               shared_experts=draw(st.integers(0, 1)), expert_ffn_size=draw(st.sampled_from([256, 1024])),
               dense_layers=draw(st.integers(0, 1))) if use_moe else None
    return ModelProfile(id="m", name="m", attention="gqa", layers=draw(st.integers(2, 6)), hidden_size=hidden,
                        heads=heads, kv_heads=kv_heads, head_dim=head_dim, ffn_size=draw(st.sampled_from([1024, 4096])),
                        vocab_size=draw(st.sampled_from([1000, 32000])), moe=spec)


@SETTINGS
@given(gpus(), models(), st.integers(1, 8192), st.integers(1, 8192))
def test_prefill_grows_with_the_prompt(gpu, model, a, b):
    lo, hi = sorted((a, b))
    dep = Deployment()
    assert timing.prefill_ns(model, gpu, dep, lo) <= timing.prefill_ns(model, gpu, dep, hi) * (1 + REL)


@SETTINGS
@given(gpus(), models(), st.integers(1, 4096), st.integers(1, 256), st.integers(1, 256))
def test_decode_step_grows_with_context_and_batch(gpu, model, ctx, a, b):
    lo, hi = sorted((a, b))
    dep = Deployment()
    assert timing.decode_step_ns(model, gpu, dep, ctx, lo) <= timing.decode_step_ns(model, gpu, dep, ctx, hi) * (1 + REL)
    assert timing.decode_step_ns(model, gpu, dep, ctx, lo) <= timing.decode_step_ns(model, gpu, dep, ctx + 100, lo) * (1 + REL)


@SETTINGS
@given(gpus(), models(), st.integers(1, 4096), st.integers(1, 4096))
def test_a_step_grows_with_its_tokens(gpu, model, a, b):
    lo, hi = sorted((a, b))
    dep = Deployment()

    def step(t: int) -> float:
        return float(timing.step_layer_ns(model, gpu, dep, t, timing.chunk_keys(model, 0, t),
                                          t + timing.held_tokens(model, t)).sum())
    assert step(lo) <= step(hi) * (1 + REL)


@SETTINGS
@given(gpus(), models(), st.integers(1, 4096), st.data())
def test_tp_never_slows_the_per_rank_work_when_communication_is_free(gpu, model, isl, data):
    free = dataclasses.replace(gpu, allreduce_latency_us=0.0, scaleup_gb_per_s=1e12, nic_gbps=1e13,
                               alltoall_latency_us=0.0)
    tps = [t for t in valid_tp(model) if t <= 16]
    a, b = sorted(data.draw(st.lists(st.sampled_from(tps), min_size=2, max_size=2)))
    assert timing.prefill_ns(model, free, Deployment(tp=b), isl) <= timing.prefill_ns(model, free, Deployment(tp=a), isl) * (1 + REL)


@SETTINGS
@given(gpus(), st.floats(1e3, 1e9), st.integers(1, 128), st.integers(1, 128))
def test_allreduce_grows_with_bytes_and_ranks(gpu, nbytes, a, b):
    gpu = dataclasses.replace(gpu, nic_gbps=min(gpu.nic_gbps, gpu.scaleup_gb_per_s * 8))  # the NIC is the slower link
    lo, hi = sorted((a, b))
    assert timing.allreduce_ns(gpu, nbytes, lo) <= timing.allreduce_ns(gpu, nbytes, hi) * (1 + REL)
    assert timing.allreduce_ns(gpu, nbytes, hi) <= timing.allreduce_ns(gpu, nbytes * 2, hi) * (1 + REL)


@SETTINGS
@given(gpus(), st.floats(1, 1e12), st.floats(1, 1e12))
def test_gemm_efficiency_rises_to_its_peak_and_never_above(gpu, a, b):
    lo, hi = sorted((a, b))
    peak = gpu.compute_efficiency
    assert timing.gemm_efficiency(gpu, lo) <= timing.gemm_efficiency(gpu, hi) * (1 + REL) <= peak * (1 + REL)
    # large-GEMM limit: a GEMM 1e6 times the half-efficiency size runs at the peak to 1e-6
    huge = max(gpu.gemm_half_gflop, 1e-3) * 1e9 * 1e6
    assert abs(timing.gemm_efficiency(gpu, huge) - peak) <= 1e-6 * peak


@SETTINGS
@given(gpus(), models(moe=True), st.integers(1, 2048), st.data())
def test_ep1_is_the_no_ep_model(gpu, model, isl, data):
    tp = data.draw(st.sampled_from([t for t in valid_tp(model) if t <= 16]))
    dep = Deployment(tp=tp, ep=1)
    base = timing.layer_ready_ns(model, gpu, dep, isl)
    # with ep = 1 no all-to-all runs, so its parameters cannot matter
    other = dataclasses.replace(gpu, alltoall_latency_us=gpu.alltoall_latency_us + 500, alltoall_efficiency=0.05)
    assert np.array_equal(timing.layer_ready_ns(model, other, dep, isl), base)
    assert timing.alltoall_ns(gpu, 4096.0, 100.0, 2, 1, tp) == 0.0
    # and a dense model ignores ep altogether
    dense = dataclasses.replace(model, moe=None)
    ep = data.draw(st.sampled_from([e for e in range(1, tp + 1) if tp % e == 0]))
    assert np.array_equal(timing.layer_ready_ns(dense, gpu, Deployment(tp=tp, ep=ep), isl),
                          timing.layer_ready_ns(dense, gpu, Deployment(tp=tp), isl))


@SETTINGS
@given(gpus(), models(), st.lists(st.integers(1, 3000), min_size=1, max_size=6), st.integers(16, 4096))
def test_batching_never_readies_a_request_before_its_own_compute(gpu, model, isl, budget):
    dep = Deployment(max_batch_tokens=budget)
    sched = prefill_schedule(model, gpu, dep, np.array(isl))
    for r, n in enumerate(isl):
        ready = sched.ready_ns[r]
        alone = timing.prefill_ns(model, gpu, Deployment(), n)
        assert float(ready[-1, -1]) >= alone * (1 - REL), (r, n)
        assert np.all(np.diff(ready.ravel()) >= 0)  # layers and chunks in order
        assert int(sched.chunk_ends[r][-1]) == n
    assert np.all(np.diff(sched.start_ns) >= 0)
