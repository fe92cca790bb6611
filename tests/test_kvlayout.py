from __future__ import annotations

import dataclasses

import pytest

from pytest_kvfabric.emulator.kvlayout import kv_layout, split_stages, valid_tp
from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.profiles import ModelProfile, MlaDims, SlidingWindow, load_model
from pytest_kvfabric.core.scenario import Deployment


def gqa(**kw) -> ModelProfile:
    base = dict(id="toy", name="toy", attention="gqa", layers=4, hidden_size=256, heads=8, kv_heads=4,
                head_dim=32, ffn_size=512, vocab_size=1000)
    base.update(kw)
    return ModelProfile(**base)


# Published cross-checks (REFERENCE.md): arXiv 2505.09343 "Insights into DeepSeek-V3", Table 1
# (KB = 1000 B) for bf16; the scaling book's applied-inference chapter (2*8*128*80) for int8/fp8.
@pytest.mark.parametrize(
    "model_id, kv_dtype, expected",
    [
        ("deepseek-v3", "bf16", 70_272),
        ("qwen2.5-72b", "bf16", 327_680),
        ("llama3.1-405b", "bf16", 516_096),
        ("llama3-70b", "fp8", 163_840),
    ],
)
def test_published_bytes_per_token(model_id, kv_dtype, expected):
    layout = kv_layout(load_model(model_id), Deployment(kv_dtype=kv_dtype))
    assert layout.bytes_per_token == expected
    assert sum(layout.bytes_per_token_per_layer) == expected


def test_dtype_sizes_scale_including_fp4_half_byte():
    m = load_model("llama3.1-8b")
    bf16 = kv_layout(m, Deployment(kv_dtype="bf16")).bytes_per_token
    assert bf16 == 2 * 32 * 8 * 128 * 2
    assert kv_layout(m, Deployment(kv_dtype="fp8")).bytes_per_token * 2 == bf16
    assert kv_layout(m, Deployment(kv_dtype="fp4")).bytes_per_token * 4 == bf16
    assert kv_layout(m, Deployment(kv_dtype="fp32")).bytes_per_token == 2 * bf16


def test_page_and_request_bytes():
    m = gqa()
    lay = kv_layout(m, Deployment(page_size=16))
    per_tok = 4 * 2 * 4 * 32 * 2
    assert lay.bytes_per_token == per_tok
    assert lay.bytes_per_page == 16 * per_tok
    assert lay.bytes_per_request(100) == 100 * per_tok
    assert lay.paged_bytes_per_request(100) == 7 * 16 * per_tok  # the last page moves whole


def test_tp_splits_gqa_heads_and_replicates_when_fewer_kv_heads():
    m = gqa()
    full = kv_layout(m, Deployment()).bytes_per_token
    assert kv_layout(m, Deployment(tp=2)).bytes_per_rank_per_token == full // 2
    assert kv_layout(m, Deployment(tp=4)).bytes_per_rank_per_token == full // 4
    tp8 = kv_layout(m, Deployment(tp=8))  # 4 KV heads on 8 ranks: one head each, 2 copies
    assert tp8.heads_per_rank == 1 and tp8.copies == 2
    assert tp8.bytes_per_rank_per_token == full // 4


def test_mla_latent_replicated_unless_dp_attention():
    m = load_model("deepseek-v3")
    tp8 = kv_layout(m, Deployment(tp=8))
    assert tp8.bytes_per_rank_per_token == 70_272  # the full latent on every rank
    assert tp8.copies == 8
    dp = kv_layout(m, Deployment(tp=8, dp_attention=True))
    assert dp.copies == 1


def test_pp_contiguous_stages_first_stages_take_the_remainder():
    assert split_stages(61, 4) == ((0, 16), (16, 31), (31, 46), (46, 61))
    lay = kv_layout(load_model("deepseek-v3"), Deployment(pp=4))
    assert lay.bytes_per_rank_per_token == 16 * 576 * 2
    assert [lay.stage_of_layer(x) for x in (0, 15, 16, 60)] == [0, 0, 1, 3]


def test_sliding_window_layers_hold_only_the_window():
    m = gqa(sliding_window=SlidingWindow(window=32, layers=(0, 2)))
    lay = kv_layout(m, Deployment(page_size=16))
    per_layer = 2 * 4 * 32 * 2
    assert lay.bytes_per_token_per_layer == (per_layer,) * 4  # still per token
    assert lay.bytes_per_request(100) == per_layer * (32 + 100 + 32 + 100)
    assert lay.bytes_per_request(20) == per_layer * 20 * 4
    # pages overlapping the last 32 tokens of 100: tokens 68..99 -> pages 4, 5, 6
    assert lay.first_page_held(0, 100) == 4
    assert lay.paged_bytes_per_request(100) == per_layer * 16 * (3 + 7 + 3 + 7)


def test_gpt_oss_sliding_layers_from_shipped_profile():
    m = load_model("gpt-oss-120b")
    lay = kv_layout(m, Deployment())
    assert sum(lay.sliding) == len(m.sliding_window.layers) > 0
    assert lay.bytes_per_request(10_000) < lay.bytes_per_token * 10_000


@pytest.mark.parametrize("tp, side", [(3, "prefill"), (16, "decode")])
def test_bad_tp_names_side_field_and_valid_values(tp, side):
    m = gqa()  # 8 heads, 4 KV heads: 3 does not divide, 16 exceeds the heads
    with pytest.raises(ProfileError) as err:
        kv_layout(m, Deployment(tp=tp), source="<scenario>", side=side)
    assert err.value.field == f"{side}.tp"
    assert "valid: 1, 2, 4, 8" in str(err.value)
    assert valid_tp(m) == [1, 2, 4, 8]


def test_bad_kv_dtype_and_pp():
    with pytest.raises(ProfileError, match="prefill.kv_dtype.*valid"):
        kv_layout(gqa(), Deployment(kv_dtype="int3"))
    with pytest.raises(ProfileError, match="decode.pp"):
        kv_layout(gqa(), Deployment(pp=5), side="decode")


def test_mla_tp_check_uses_query_heads():
    m = dataclasses.replace(
        gqa(attention="mla", kv_heads=8),
        mla=MlaDims(kv_lora_rank=64, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32),
    )
    assert kv_layout(m, Deployment(tp=8)).bytes_per_token == 4 * 80 * 2
    with pytest.raises(ProfileError, match="prefill.tp"):
        kv_layout(m, Deployment(tp=3))
