from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.emulator.kvlayout import kv_layout
from pytest_kvfabric.emulator.plan import TRANSFER_DTYPE, build_plan, plan_summary
from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.core.scenario import Arrival, Deployment, Distribution, Scenario, Workload

BIG_POOL = 1 << 34  # 16 GiB of address space: no slot is reused within these requests


def scenario(model="llama3-70b", ptp=1, dtp=1, ppp=1, dpp=1, isl=256, requests=1, access="layer",
             pool=BIG_POOL, page=16, chunk=0, dp=False, seed=0, isl_dist=None) -> Scenario:
    return Scenario(
        id="t",
        model=load_model(model),
        gpu=load_gpu("h100"),
        prefill=Deployment(tp=ptp, pp=ppp, page_size=page, access=access, chunk_tokens=chunk, dp_attention=dp),
        decode=Deployment(tp=dtp, pp=dpp, page_size=page, access=access, dp_attention=dp),
        workload=Workload(isl=isl_dist or Distribution.fixed(isl), requests=requests),
        pool_bytes=pool,
        seed=seed,
    )


FANOUT = [
    ("llama3-70b", 8, 4),
    ("llama3-70b", 4, 8),
    ("llama3-70b", 1, 8),
    ("llama3-70b", 8, 8),
    ("llama3-70b", 16, 8),  # KV heads replicated on the prefill side
    ("deepseek-v3", 8, 4),  # MLA latent: one full copy per dst rank
    ("deepseek-v3", 1, 8),
    ("deepseek-v3", 4, 8),
]


def rank_regions_ok(plan) -> None:
    t = plan.transfers
    end_src = t["src_off"] + t["nbytes"]
    end_dst = t["dst_off"] + t["nbytes"]
    assert np.all(t["src_off"] >= t["src_rank"].astype(np.uint64) * plan.src_rank_bytes)
    assert np.all(end_src <= (t["src_rank"].astype(np.uint64) + 1) * plan.src_rank_bytes)
    assert np.all(t["dst_off"] >= t["dst_rank"].astype(np.uint64) * plan.dst_rank_bytes)
    assert np.all(end_dst <= (t["dst_rank"].astype(np.uint64) + 1) * plan.dst_rank_bytes)
    assert np.all(t["src_rank"] < plan.src_ranks) and np.all(t["dst_rank"] < plan.dst_ranks)


@pytest.mark.parametrize("model, ptp, dtp", FANOUT)
def test_total_bytes_equal_layout_times_copies(model, ptp, dtp):
    sc = scenario(model, ptp, dtp, isl=1024, requests=2)
    plan = build_plan(sc)
    dst = kv_layout(sc.model, sc.decode, side="decode")
    assert plan.total_bytes == 2 * dst.bytes_per_request(1024) * dst.copies
    assert plan.transfers.dtype == TRANSFER_DTYPE
    assert int(plan.requests["nbytes"].sum()) == plan.total_bytes
    rank_regions_ok(plan)


@pytest.mark.parametrize("model, ptp, dtp", FANOUT)
def test_every_dst_byte_covered_once_per_dst_rank(model, ptp, dtp):
    sc = scenario(model, ptp, dtp, isl=100)  # a partial last page too
    plan = build_plan(sc)
    t = plan.transfers
    dst = kv_layout(sc.model, sc.decode, side="decode")
    per_rank = dst.paged_bytes_per_request(100) * dst.heads_per_rank // dst.kv_heads
    for rank in range(plan.dst_ranks):
        rows = t[t["dst_rank"] == rank]
        order = np.argsort(rows["dst_off"], kind="stable")
        off, n = rows["dst_off"][order], rows["nbytes"][order].astype(np.uint64)
        assert np.all(off[:-1] + n[:-1] <= off[1:]), "overlapping writes"
        assert int(n.sum()) == per_rank  # covered: exactly the rank's share, no gaps in total
        # each (layer, page) unit exactly fills one slot-sized region of the rank's heads
        units = rows["layer"].astype(np.int64) * 1_000_000 + rows["block"]
        sums = np.bincount(np.unique(units, return_inverse=True)[1], weights=rows["nbytes"])
        assert np.all(sums == dst.heads_per_rank * 16 * dst.head_bytes_per_token[0])
    # the src side reads whole shards: every src byte it reads lies in one rank's unit
    rank_regions_ok(plan)


def test_fanout_pieces_split_and_join_shards():
    t = build_plan(scenario("llama3-70b", 4, 8, isl=16)).transfers
    first = t[(t["layer"] == 0) & (t["block"] == 0)]
    # TP4 -> TP8: src rank 0 holds heads 0,1; head 0 -> dst 0, head 1 -> dst 1 at the next head offset
    head_page = 16 * 2 * 128 * 2
    r0 = first[first["src_rank"] == 0]
    assert r0["dst_rank"].tolist() == [0, 1]
    assert int(r0["src_off"][1] - r0["src_off"][0]) == head_page
    assert r0["nbytes"].tolist() == [head_page, head_page]
    t = build_plan(scenario("llama3-70b", 8, 4, isl=16)).transfers
    first = t[(t["layer"] == 0) & (t["block"] == 0) & (t["dst_rank"] == 0)]
    # TP8 -> TP4: dst rank 0 gets head 0 from src 0 and head 1 from src 1, one head apart
    assert first["src_rank"].tolist() == [0, 1]
    assert int(first["dst_off"][1] - first["dst_off"][0]) == head_page


def test_mla_replica_source_is_dst_rank_mod_src_tp():
    t = build_plan(scenario("deepseek-v3", 4, 8, isl=16)).transfers
    first = t[(t["layer"] == 0) & (t["block"] == 0)]
    assert sorted(zip(first["dst_rank"].tolist(), first["src_rank"].tolist())) == [(d, d % 4) for d in range(8)]
    assert set(first["nbytes"].tolist()) == {16 * 576 * 2}


def test_pp_maps_layers_to_stage_ranks():
    sc = scenario("llama3-70b", 2, 4, ppp=2, dpp=1, isl=64)
    t = build_plan(sc).transfers
    assert set(t[t["layer"] < 40]["src_rank"].tolist()) == {0, 1}
    assert set(t[t["layer"] >= 40]["src_rank"].tolist()) == {2, 3}
    assert set(t["dst_rank"].tolist()) == {0, 1, 2, 3}
    sc = scenario("llama3-70b", 1, 1, ppp=1, dpp=3, isl=64)  # 80 layers: stages of 27, 27, 26
    t = build_plan(sc).transfers
    assert t[t["layer"] == 26]["dst_rank"][0] == 0 and t[t["layer"] == 27]["dst_rank"][0] == 1
    assert t[t["layer"] == 79]["dst_rank"][0] == 2


def test_block_access_one_transfer_per_page_and_stage_segment():
    sc = scenario("llama3-70b", 2, 2, ppp=2, dpp=1, isl=160, access="block")
    plan = build_plan(sc)
    t = plan.transfers
    # 10 pages x 2 segments (prefill stages) x 2 pieces
    assert len(t) == 10 * 2 * 2
    assert set(t["layer"].tolist()) == {0, 40}
    lay = kv_layout(sc.model, sc.decode, side="decode")
    assert plan.total_bytes == lay.bytes_per_request(160)
    assert set(t["nbytes"].tolist()) == {40 * 4 * 16 * 2 * 128 * 2}
    # block: ready when the last layer of the segment is done
    ready = build_plan(scenario("llama3-70b", 2, 2, ppp=2, dpp=1, isl=160)).transfers
    last = ready[(ready["layer"] == 39)]["ready_ns"].max()
    assert t[t["layer"] == 0]["ready_ns"].max() == last
    rank_regions_ok(plan)
    # the decode rank's page unit holds both segments back to back, no overlap
    d0 = t[(t["dst_rank"] == 0) & (t["block"] == 0)]
    off = np.sort(d0["dst_off"])
    assert np.all(off[:-1] + d0["nbytes"][0] <= off[1:])


def test_sliding_window_page_count():
    m = load_model("gpt-oss-120b")
    isl, page = 1000, 16
    sc = scenario("gpt-oss-120b", isl=isl, page=page)
    t = build_plan(sc).transfers
    window = m.sliding_window.window
    sw_layer, full_layer = m.sliding_window.layers[0], next(x for x in range(m.layers) if x not in m.sliding_window.layers)
    pages = -(-isl // page)
    first_held = (isl - window) // page
    assert (t["layer"] == full_layer).sum() == pages
    assert (t["layer"] == sw_layer).sum() == pages - first_held
    assert t[t["layer"] == sw_layer]["block"].min() == first_held
    lay = kv_layout(m, sc.decode, side="decode")
    assert int(t["nbytes"].sum()) == lay.paged_bytes_per_request(isl)


def test_sliding_window_block_access_moves_prefix_outside_window():
    sc = scenario("gpt-oss-120b", isl=1000, access="block")
    plan = build_plan(sc)
    lay = kv_layout(sc.model, sc.decode, side="decode")
    assert plan.total_bytes == lay.paged_bytes_per_request(1000)
    sizes = sorted(set(plan.transfers["nbytes"].tolist()))
    assert len(sizes) == 2 and sizes[1] > sizes[0]  # in-window pages carry the sliding layers too


def test_ready_monotone_and_rows_sorted():
    sc = scenario("llama3.1-8b", 2, 2, isl=5000, chunk=1024, requests=3,
                  isl_dist=Distribution(kind="uniform", low=100, high=5000))
    plan = build_plan(sc)
    t = plan.transfers
    for req in plan.requests:
        rows = t[int(req["first"]) : int(req["first"]) + int(req["count"])]
        assert np.all(rows["request"] == req["request"])
        assert np.all(np.diff(rows["ready_ns"].astype(np.int64)) >= 0)
        for block in (0, int(rows["block"].max())):
            per_layer = rows[rows["block"] == block]
            r = per_layer["ready_ns"][np.argsort(per_layer["layer"], kind="stable")].astype(np.int64)
            assert np.all(np.diff(r) >= 0)
            assert np.diff(np.unique(r)).size == 31  # 32 layers, each strictly later
        assert int(rows["ready_ns"].max()) == int(req["prefill_ns"])
        # chunked: a page in the first chunk is ready before the prompt ends
        assert int(rows[rows["block"] == 0]["ready_ns"].max()) < int(req["prefill_ns"])


def test_slot_reuse_round_robin_per_rank():
    # Small pool: 8 slots per rank, a 100-page request wraps many times.
    head_page = 16 * 2 * 128 * 2
    unit = 4 * head_page  # TP2: 4 KV heads per rank
    sc = scenario("llama3.1-8b", 2, 2, isl=1600, pool=2 * 8 * unit)
    plan = build_plan(sc)
    assert plan.dst_slot_bytes == unit and plan.dst_rank_bytes == 8 * unit
    t = plan.transfers
    for rank in range(2):
        rows = t[t["dst_rank"] == rank]
        slots = (rows["dst_off"] - rank * plan.dst_rank_bytes) // plan.dst_slot_bytes
        # one row per unit here (TP matches): unit k uses slot k % 8
        assert np.array_equal(slots, np.arange(len(rows)) % 8)
    rank_regions_ok(plan)


def test_slot_reuse_distance_with_fanout():
    sc = scenario("llama3-70b", 8, 4, isl=640, pool=4 * 3 * 2 * 16 * 2 * 128 * 2 + 100)
    plan = build_plan(sc)
    t = plan.transfers
    for rank in range(4):
        rows = t[t["dst_rank"] == rank]
        unit = rows["layer"].astype(np.int64) * 100_000 + rows["block"]
        change = np.concatenate([[True], unit[1:] != unit[:-1]])
        slots = ((rows["dst_off"] - rank * plan.dst_rank_bytes) // plan.dst_slot_bytes)[change]
        assert np.array_equal(slots, np.arange(len(slots)) % 3)
        # within one use of a slot the two pieces do not overlap
        uses = np.cumsum(change) - 1
        for u in range(5):
            use = rows[uses == u]
            o = np.sort(use["dst_off"])
            assert len(use) == 2 and o[0] + use["nbytes"][0] <= o[1]


def test_pool_too_small_names_minimum():
    with pytest.raises(ProfileError) as err:
        build_plan(scenario("llama3-70b", 8, 8, pool=8 * 8192 + 8192))
    assert err.value.field == "pool_bytes"
    assert "need at least 131072 B" in err.value.reason


def test_deterministic_across_builds():
    sc = scenario("llama3.1-8b", 2, 1, requests=5, seed=3, isl_dist=Distribution(kind="lognormal", mean=300, std=0.7))
    a, b = build_plan(sc), build_plan(sc)
    assert np.array_equal(a.transfers, b.transfers) and np.array_equal(a.requests, b.requests)
    c = build_plan(sc.replace(seed=4))
    assert not np.array_equal(a.requests["isl"], c.requests["isl"])


def test_dp_attention_request_lives_on_one_rank():
    sc = scenario("deepseek-v3", 4, 2, isl=64, requests=4, dp=True)
    plan = build_plan(sc)
    t = plan.transfers
    for r in range(4):
        rows = t[t["request"] == r]
        assert set(rows["src_rank"].tolist()) == {r % 4} and set(rows["dst_rank"].tolist()) == {r % 2}
    lay = kv_layout(sc.model, sc.decode, side="decode")
    assert plan.total_bytes == 4 * lay.bytes_per_request(64)


def test_mismatched_sides_rejected():
    sc = scenario()
    with pytest.raises(ProfileError, match="decode.dp_attention"):
        build_plan(sc.replace(decode=Deployment(dp_attention=True)))
    with pytest.raises(ProfileError, match="decode.page_size"):
        build_plan(sc.replace(decode=Deployment(page_size=32)))
    with pytest.raises(ProfileError, match="decode.kv_dtype"):
        build_plan(sc.replace(decode=Deployment(kv_dtype="fp8")))
    with pytest.raises(ProfileError, match="decode.tp"):
        build_plan(sc.replace(decode=Deployment(tp=3)))


def test_plan_summary_keys_and_required_gbps():
    sc = scenario("llama3-70b", 8, 4, isl=2048, requests=2)
    plan = build_plan(sc)
    s = plan_summary(plan, sc)
    for key in ("prefill_ms", "decode_step_ms", "total_bytes", "transfers", "required_gbps",
                "size_histogram", "layer_ready_ms", "requests"):
        assert key in s
    assert s["total_bytes"] == plan.total_bytes and s["transfers"] == len(plan.transfers)
    prefill_s = plan.requests["prefill_ns"].sum() / 1e9
    assert s["required_gbps"] == pytest.approx(plan.total_bytes * 8 / prefill_s / 1e9)
    assert sum(h["count"] for h in s["size_histogram"]) == len(plan.transfers)
    assert len(s["layer_ready_ms"]) == 80 and s["layer_ready_ms"] == sorted(s["layer_ready_ms"])
    assert s["requests"] == 2
    block_sc = scenario("llama3-70b", 8, 4, isl=2048, requests=2, access="block")
    block = plan_summary(build_plan(block_sc), block_sc)
    assert block["layer_ready_ms"] == s["layer_ready_ms"]  # per layer even when pages move per stage
    t = plan.transfers
    assert s["layer_ready_ms"][79] == pytest.approx(t[t["request"] == 0]["ready_ns"].max() / 1e6, abs=1e-6)


def test_poisson_arrivals_recorded():
    sc = scenario(requests=4).replace(
        workload=Workload(requests=4, arrival=Arrival(kind="poisson", rate_per_s=5.0))
    )
    req = build_plan(sc).requests
    assert req["arrival_ns"][0] == 0 and np.all(np.diff(req["arrival_ns"].astype(np.int64)) > 0)
