"""Per-framework step overhead: a deployment's `framework` adds the GPU profile's figure per step."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.calibration.predict import Measurement, framework_key, predict
from pytest_kvfabric.calibration.table import load_table, shipped_table_path
from pytest_kvfabric.emulator import timing
from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.profiles import GpuProfile, load_gpu, load_model
from pytest_kvfabric.core.scenario import Deployment

MODEL = load_model("llama3.1-8b")


def gpu_with(us: float) -> GpuProfile:
    return dataclasses.replace(load_gpu("h100"), framework_step_overhead_us={"vllm": us})


@given(us=st.floats(min_value=0.0, max_value=50_000.0), isl=st.integers(min_value=1, max_value=8192),
       batch=st.integers(min_value=1, max_value=64))
@settings(max_examples=25, deadline=None)
def test_framework_adds_its_overhead_once_per_prefill_and_decode_step(us, isl, batch):
    gpu = gpu_with(us)
    base, fw = Deployment(), Deployment(framework="vllm")
    d_prefill = timing.prefill_ns(MODEL, gpu, fw, isl) - timing.prefill_ns(MODEL, gpu, base, isl)
    d_decode = (timing.decode_step_ns(MODEL, gpu, fw, isl, batch=batch)
                - timing.decode_step_ns(MODEL, gpu, base, isl, batch=batch))
    assert d_prefill == pytest.approx(us * 1e3, rel=1e-9, abs=1e-3)
    assert d_decode == pytest.approx(us * 1e3, rel=1e-9, abs=1e-3)


def test_no_framework_is_todays_timing_even_with_a_table():
    plain = dataclasses.replace(load_gpu("h100"), framework_step_overhead_us={})
    assert timing.decode_step_ns(MODEL, gpu_with(1595.0), Deployment(), 1000) == timing.decode_step_ns(MODEL, plain, Deployment(), 1000)


def test_unknown_framework_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'sglang'.*'h100'.*valid: vllm"):
        timing.decode_step_ns(MODEL, gpu_with(100.0), Deployment(framework="sglang"), 100)


def test_framework_name_is_case_insensitive_and_roofline_drops_it():
    gpu = gpu_with(2000.0)
    assert timing.framework_overhead_us(gpu, "vLLM") == 2000.0
    assert timing.framework_overhead_us(timing.roofline_gpu(gpu), "vllm") == 0.0


def test_profile_mapping_loads_validates_and_round_trips():
    d = load_gpu("h100").to_dict()
    d["framework_step_overhead_us"] = {"vLLM": 1200, "my-engine": 0}
    g = GpuProfile.from_dict(d)
    assert g.framework_step_overhead_us == {"vllm": 1200.0, "my-engine": 0.0}
    assert GpuProfile.from_dict(g.to_dict()).framework_step_overhead_us == g.framework_step_overhead_us
    for bad in ({"vllm": -1}, {"bad name": 10}, {"vllm": "fast"}):
        with pytest.raises(ProfileError, match="framework_step_overhead_us"):
            GpuProfile.from_dict({**d, "framework_step_overhead_us": bad})


def test_shipped_profiles_share_the_fitted_vllm_overhead():
    values = {load_gpu(g).framework_step_overhead_us.get("vllm") for g in ("h100", "h200", "a100", "l40s", "b200")}
    assert len(values) == 1 and next(iter(values)) > 0


def test_predictor_applies_the_overhead_only_to_rows_of_that_framework():
    gpu = gpu_with(1000.0)
    row = dict(id="r", model="llama3.1-8b", gpu="h100", metric="tpot_ms", measured=1.0, isl=100, osl=10)
    vllm, trt = Measurement(**row, framework="vLLM"), Measurement(**row, framework="TensorRT-LLM 0.5")
    assert framework_key(vllm, gpu) == "vllm" and framework_key(trt, gpu) == ""
    assert predict(vllm, MODEL, gpu) - predict(trt, MODEL, gpu) == pytest.approx(1.0)


def test_vllm_overhead_is_fitted_on_sources_other_than_the_held_out_vllm_page():
    t = load_table(shipped_table_path())
    vllm = [m for m in t.rows if framework_key(m, t.gpu(m.gpu)) == "vllm"]
    fit_sources = {m.source for m in vllm if t.split_of(m) == "fit"}
    held_sources = {m.source for m in vllm if t.split_of(m) == "holdout"}
    assert fit_sources and held_sources and not fit_sources & held_sources


def test_suite_deployment_takes_a_framework_and_rejects_a_bad_name():
    from pytest_kvfabric.harness.suites import parse_suite
    suite = parse_suite("suite: x\nscenarios: [{id: a, prefill: {tp: 1}, decode: {tp: 1, framework: vllm}}]", "ok.yaml")
    sc = suite.scenarios[0].build(MODEL, load_gpu("h100"), "tcp")
    assert (sc.prefill.framework, sc.decode.framework) == ("", "vllm")
    with pytest.raises(ProfileError, match="framework"):
        parse_suite("suite: x\nscenarios: [{id: a, decode: {framework: 'two words'}}]", "bad.yaml")
