"""The storage tier's pure parts: the `store:` validator, the tier index, the lookup protocol,
the store plan and the figures. Validators and the wire protocol take Hypothesis inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.core.scenario import Scenario
from pytest_kvfabric.core.store_spec import STORE_MODES, Fraction, StoreSpec, parse_store
from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.emulator.storeplan import build_store_plan, hit_tokens
from pytest_kvfabric.endpoint import store_proto
from pytest_kvfabric.endpoint.store_index import DRAM, FILE, StoreFull, TierIndex
from pytest_kvfabric.errors import ProfileError, ProtocolError
from pytest_kvfabric.harness.resolve import build
from pytest_kvfabric.harness.suites import parse_suite
from pytest_kvfabric.measure.store_stats import summarize_store

# ---------------------------------------------------------------- the `store:` validator

fractions = st.one_of(
    st.floats(0, 1),
    st.fixed_dictionaries({"kind": st.just("fixed"), "value": st.floats(0, 1)}),
    st.tuples(st.floats(0, 1), st.floats(0, 1)).map(lambda t: {"kind": "uniform", "low": min(t), "high": max(t)}),
)
valid_stores = st.fixed_dictionaries(
    {"mode": st.sampled_from(STORE_MODES)},
    optional={"dram_mib": st.floats(1, 4096), "file_mib": st.floats(1, 4096), "hit_ratio": fractions,
              "reuse": st.floats(0, 1), "eviction": st.just("lru")},
)


@given(valid_stores)
def test_valid_store_blocks_parse_and_round_trip(block):
    spec = parse_store(block, "s.yaml", "scenarios[0].store")
    assert spec.mode == block["mode"]
    assert StoreSpec.from_spec(spec.to_spec()) == spec


BAD = [
    ({"mode": "prefetch"}, "scenarios[0].store.mode", "unknown mode"),
    ({"dram_mib": 0}, "scenarios[0].store.dram_mib", "within"),
    ({"dram_mib": "lots"}, "scenarios[0].store.dram_mib", "must be a number"),
    ({"hit_ratio": 1.5}, "scenarios[0].store.hit_ratio", "within"),
    ({"hit_ratio": {"kind": "uniform", "low": 0.9, "high": 0.1}}, "scenarios[0].store.hit_ratio.high", ">= low"),
    ({"hit_ratio": {"kind": "uniform", "low": 0.1}}, "scenarios[0].store.hit_ratio.high", "required"),
    ({"hit_ratio": {"kind": "beta"}}, "scenarios[0].store.hit_ratio.kind", "unknown kind"),
    ({"eviction": "fifo"}, "scenarios[0].store.eviction", "unknown eviction"),
    ({"file_dir": "/tmp"}, "scenarios[0].store.file_dir", "without file_mib"),
    ({"reuse": -0.1}, "scenarios[0].store.reuse", "within"),
    ({"size": 3}, "scenarios[0].store.size", "unknown key"),
]


@pytest.mark.parametrize("block,field,why", BAD)
def test_bad_store_blocks_name_file_field_and_reason(block, field, why):
    with pytest.raises(ProfileError) as ei:
        parse_store(block, "s.yaml", "scenarios[0].store")
    assert ei.value.source == "s.yaml" and ei.value.field == field and why in ei.value.reason


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5)),
                       max_size=4))
def test_any_mapping_parses_or_raises_profile_error(block):
    try:
        parse_store(block, "s.yaml")
    except ProfileError as exc:
        assert str(exc).startswith("s.yaml: store")


def test_suite_with_a_bad_store_fails_at_load_naming_the_scenario():
    text = "suite: t\nscenarios:\n  - id: a\n    store: {mode: prefix, hit_ratio: 2}\n"
    with pytest.raises(ProfileError, match=r"t.yaml: scenarios\[0\].store.hit_ratio: must be within"):
        parse_suite(text, "t.yaml")


# ---------------------------------------------------------------- the tier index

ops = st.lists(st.tuples(st.sampled_from(["put", "get", "unpin"]), st.integers(0, 12)), max_size=60)


@settings(max_examples=200)
@given(st.integers(1, 4), st.integers(0, 4), ops)
def test_index_keeps_slots_consistent_and_counts_every_lookup(dram, file_slots, seq):
    idx = TierIndex(dram, file_slots)
    gets = 0
    for op, key in seq:
        try:
            if op == "put":
                slot, _ = idx.put(key)
                assert idx.where(key) == (DRAM, slot)
            elif op == "get":
                gets += 1
                hit = idx.get(key, pin=False)
                if hit is not None:
                    assert idx.where(key) == (DRAM, hit[1])
            else:
                idx.unpin(key)
        except StoreFull:
            pass
        assert idx.check() is None
        assert len(idx.dram) <= dram and len(idx.file) <= file_slots
    c = idx.counters
    assert c.hits[DRAM] + c.hits[FILE] + c.misses == gets


def test_lru_demotes_the_least_recent_and_stages_file_hits_back():
    idx = TierIndex(2, 2)
    idx.put("a"), idx.put("b")
    idx.get("a", pin=False)  # a is now the most recent: b goes when c comes
    _, moves = idx.put("c")
    assert [(m.kind, m.key) for m in moves] == [("demote", "b")]
    tier, slot, moves = idx.get("b")
    assert tier == FILE and [(m.kind, m.key) for m in moves] == [("demote", "a"), ("stage", "b")]
    assert moves[0].dram_slot == moves[1].dram_slot == slot  # a's slot is written out before b fills it
    assert idx.where("a")[0] == FILE and idx.counters.to_dict()["staged"] == 1


def test_pinned_objects_are_never_evicted():
    idx = TierIndex(1, 0)
    idx.put("a")
    idx.get("a")  # pinned
    with pytest.raises(StoreFull):
        idx.put("b")
    idx.unpin("a")
    idx.put("b")
    assert idx.where("a") is None and idx.counters.dropped == 1


# ---------------------------------------------------------------- the lookup protocol

requests = st.one_of(
    st.builds(lambda op, keys: {"op": op, "keys": keys}, st.sampled_from(["get", "release", "put", "commit"]),
              st.lists(st.integers(0, 2**40), max_size=50)),
    st.just({"op": "bye"}),
)


@given(st.lists(requests, max_size=5), st.data())
def test_messages_survive_any_split_of_the_stream(msgs, data):
    stream = b"".join(store_proto.encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    dec, got, prev = store_proto.Decoder(), [], 0
    for cut in [*cuts, len(stream)]:
        got += dec.feed(stream[prev:cut])
        prev = cut
    assert got == msgs and dec.pending == 0
    assert all(store_proto.check_request(m) is None for m in got)


@given(st.binary(max_size=64))
def test_garbage_is_a_protocol_error_or_an_incomplete_frame(blob):
    dec = store_proto.Decoder()
    try:
        for m in dec.feed(blob):
            store_proto.check_request(m)  # any decoded value gets a verdict, never an exception
    except ProtocolError:
        pass


def test_oversized_frames_and_bad_keys_are_refused():
    with pytest.raises(ProtocolError, match="announces"):
        store_proto.Decoder().feed((store_proto.MAX_MESSAGE_BYTES + 1).to_bytes(4, "little"))
    assert "non-negative integer" in store_proto.check_request({"op": "get", "keys": [-1]})
    assert "non-negative integer" in store_proto.check_request({"op": "get", "keys": [True]})
    assert "not a store request" in store_proto.check_request({"op": "drop"})


# ---------------------------------------------------------------- the store plan and figures


def scenario(store: dict, **wl) -> Scenario:
    fields = {"workload": {"isl": 512, "osl": 16, "requests": 4, **wl}, "store": store}
    return build(fields, id="t", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), transport="tcp")


def test_hits_are_whole_pages_and_leave_a_token_to_compute():
    spec = StoreSpec(hit_ratio=Fraction("uniform", None, 0.0, 1.0), reuse=0.5)
    isl = np.array([1, 16, 17, 100, 512, 4096] * 10)
    h = hit_tokens(spec, isl, 16, seed=3)
    assert (h % 16 == 0).all() and (h < isl).all() and (h >= 0).all()
    assert (h == 0).any() and (h > 0).any()  # reuse 0.5: some requests miss by draw
    assert (hit_tokens(StoreSpec(mode="offload"), isl, 16, 3) == 0).all()


def test_a_prefix_hit_shortens_the_emulated_prefill_to_its_suffix():
    sc = scenario({"mode": "prefix", "hit_ratio": 0.75, "dram_mib": 256})
    plan, plain = build_plan(sc), build_plan(sc.replace(store=None))
    sp = build_store_plan(sc, plan)
    assert (sp.hit_tokens == 384).all() and (sp.req_count == 24).all()
    assert (plan.requests["prefill_ns"] < plain.requests["prefill_ns"]).all()  # suffix only
    assert (sp.full_ns == plain.requests["prefill_ns"]).all()
    assert plan.total_bytes == plain.total_bytes  # decode still gets the whole KV
    assert sp.obj_bytes == 16 * 131072  # one page, every layer: 128 KiB per token in bf16


def test_offload_writes_every_page_once_the_session_finished():
    sc = scenario({"mode": "offload", "dram_mib": 64})
    plan = build_plan(sc)
    sp = build_store_plan(sc, plan)
    assert (sp.req_count == 32).all() and sp.total_objects == 128
    done = plan.requests["prefill_ns"].astype(np.int64) + 16 * plan.requests["decode_step_ns"].astype(np.int64)
    assert sp.act_ns[0] == done[0]


def test_a_dram_tier_smaller_than_one_request_is_refused_with_figures():
    with pytest.raises(ProfileError, match=r"store.dram_mib: 4 MiB holds 2 page\(s\)"):
        sc = scenario({"mode": "prefix", "hit_ratio": 0.75, "dram_mib": 4})
        build_store_plan(sc, build_plan(sc))


def test_ttft_with_store_is_max_of_fetch_and_suffix_plus_exposed():
    sc = scenario({"mode": "prefix", "hit_ratio": 0.75, "dram_mib": 256}, requests=2)
    sp = build_store_plan(sc, build_plan(sc))
    took = np.array([5_000_000, 50_000_000])  # 5 ms (under the suffix), 50 ms (over it)
    client = {"took_ns": took, "served": sp.req_count.copy()}
    store = {"counters": {"hits_dram": 40, "hits_file": 8, "misses": 0}}
    out = summarize_store(sp, client, store, np.array([1.0, 2.0]), lambda r, s: 0)
    suffix, full = sp.suffix_ns / 1e6, sp.full_ns / 1e6
    want_with = np.maximum(took / 1e6, suffix) + [1.0, 2.0]
    assert out["ttft_with_store_ms"]["p50"] == pytest.approx(np.percentile(want_with, 50))
    saved = (full + [1.0, 2.0]) - want_with
    assert out["ttft_saving_fraction"] == pytest.approx(saved.sum() / (full + [1.0, 2.0]).sum())
    assert out["hit_ratio"] == {"dram": 40 / 48, "file": 8 / 48, "all": 1.0}
    # measured without the store (its own run): that run's exposed transfer makes the TTFT without
    apart = summarize_store(sp, client, store, np.array([1.0, 2.0]), lambda r, s: 0, np.array([0.5, 0.5]))
    assert apart["ttft_without_store_ms"]["p50"] == pytest.approx(np.percentile(full + 0.5, 50))
    assert apart["ttft_with_store_ms"] == out["ttft_with_store_ms"]
    assert apart["exposed_without_store_ms"]["p50"] == 0.5 and out["exposed_without_store_ms"] is None
    assert out["bytes_fetched"] == 48 * sp.obj_bytes and out["fetch_bound_requests"] == 1


def test_a_partly_served_prefix_computes_from_its_first_missing_page():
    sc = scenario({"mode": "prefix", "hit_ratio": 0.75, "dram_mib": 256}, requests=1)
    sp = build_store_plan(sc, build_plan(sc))
    asked = []
    out = summarize_store(sp, {"took_ns": np.array([1]), "served": np.array([10])}, {}, None,
                          lambda r, s: asked.append((r, s)) or 7_000_000)
    assert asked == [(0, 160)] and out["tokens_fetched"] == 160 and out["tokens_computed"] == 512 - 160


def test_the_store_namespace_needs_a_netns_pair_and_is_named_after_its_via_side():
    from pytest_kvfabric.fabric.base import Host, HostPair
    from pytest_kvfabric.fabric.local import local_pair
    from pytest_kvfabric.fabric.netns_store import StoreNetns, StoreNetnsError

    with pytest.raises(StoreNetnsError, match="not a netns pair"):
        StoreNetns(local_pair(), "decode")
    pair = HostPair("netns:1-3", "netns", Host("kvf-1-3p", "popen", "10.203.3.1", "kvf-p3", "kvf-1-3p"),
                    Host("kvf-1-3d", "popen", "10.203.3.2", "kvf-d3", "kvf-1-3d"), {"subnet": "10.203.3.0/24", "mtu": 9000})
    ns = StoreNetns(pair, "decode")
    assert (ns.name, ns.if_via, ns.if_store, ns.addr_store, ns.subnet) == (
        "kvf-1-3ds", "kvf-d3v", "kvf-d3s", "10.213.3.2", "10.213.3.0/24")
    assert ns.other is pair.prefill and ns.mtu == 9000


def test_an_inventory_pair_may_name_a_third_host_for_the_store():
    from pytest_kvfabric.fabric.hosts import parse_inventory
    from pytest_kvfabric.run.store_runner import StoreAgents

    host = {"ssh": "u@h{}", "data_addr": "10.0.0.{}", "interface": "eth1"}
    raw = {"pairs": [{"name": "p", **{r: {k: v.format(i) for k, v in host.items()}
                                      for i, r in enumerate(("prefill", "decode", "store"))}}]}
    pair = parse_inventory(raw, "inv.yaml").pairs[0].host_pair("inv.yaml")
    store, client = StoreAgents(pair).hosts(scenario({"mode": "prefix"}))
    assert (store.name, store.data_addr, client) == ("p/store", "10.0.0.2", pair.prefill)
    assert "ssh=" in store.gateway_spec and "u@h2" in store.gateway_spec
    bad = {"pairs": [{**raw["pairs"][0], "store": {**raw["pairs"][0]["store"], "data_addr": "nope"}}]}
    with pytest.raises(ProfileError, match=r"pairs\[0\] \(p\).store.data_addr: expected an IPv4/IPv6 address"):
        parse_inventory(bad, "inv.yaml")
    without = {"pairs": [{k: v for k, v in raw["pairs"][0].items() if k != "store"}]}
    pair = parse_inventory(without, "inv.yaml").pairs[0].host_pair("inv.yaml")
    assert StoreAgents(pair).hosts(scenario({"mode": "offload"})) == (pair.prefill, pair.decode)


@pytest.mark.parametrize("model,tp", [("llama3.1-8b", 1), ("gpt-oss-120b", 2)])  # gpt-oss: sliding-window layers
def test_a_resumed_session_sends_decode_only_its_new_turn(model, tp):
    fields = {"workload": {"isl": 2000, "osl": 4, "requests": 6}, "prefill": {"tp": tp}, "decode": {"tp": tp},
              "store": {"mode": "resume", "hit_ratio": 0.6, "reuse": 0.5, "dram_mib": 100000}}
    sc = build(fields, id="t", model=load_model(model), gpu=load_gpu("h100"), transport="tcp")
    plan, prefix = build_plan(sc), build_plan(sc.replace(store=StoreSpec(mode="prefix", hit_ratio=Fraction("fixed", 0.6),
                                                                           reuse=0.5, dram_mib=100000)))
    hits = build_store_plan(sc, plan).hit_tokens
    assert (hits > 0).any() and (hits == 0).any()
    for r, h in enumerate(hits.tolist()):
        rows = plan.transfers[plan.requests["first"][r]:plan.requests["first"][r] + plan.requests["count"][r]]
        assert int(rows["block"].min()) == h // 16  # the session's earlier pages come from the store
        assert (plan.requests["nbytes"][r] < prefix.requests["nbytes"][r]) == (h > 0)
    assert (plan.requests["prefill_ns"] == prefix.requests["prefill_ns"]).all()  # the same suffix compute


def _run_moves(moves, dram, file, parallel):
    """Carry out moves on simulated tiers: as the server does (demotions, then stagings, each
    group reading before any of it writes) when `parallel`, else one by one."""
    if parallel:
        dem = [(m.file_slot, dram[m.dram_slot]) for m in moves if m.kind == "demote"]
        for slot, key in dem:
            file[slot] = key
        stg = [(m.dram_slot, file[m.file_slot]) for m in moves if m.kind == "stage"]
        for slot, key in stg:
            dram[slot] = key
        return
    for m in moves:
        if m.kind == "demote":
            file[m.file_slot] = dram[m.dram_slot]
        else:
            dram[m.dram_slot] = file[m.file_slot]


batches = st.lists(st.tuples(st.sampled_from(["get", "put", "unpin"]), st.lists(st.integers(0, 9), max_size=5)),
                   max_size=25)


@settings(max_examples=300)
@given(st.integers(1, 5), st.integers(0, 5), batches)
def test_batched_moves_in_two_parallel_groups_leave_every_object_where_the_index_says(dram_n, file_n, seq):
    from pytest_kvfabric.endpoint.store_index import parallel_safe

    idx = TierIndex(dram_n, file_n)
    dram, file = [None] * dram_n, [None] * file_n
    for op, keys in seq:
        if op == "unpin":
            for k in keys:
                idx.unpin(k)
            continue
        if op == "put":
            for k in keys:
                try:
                    slot, moves = idx.put(k)
                except StoreFull:
                    break
                _run_moves(moves, dram, file, parallel=False)
                dram[slot] = k  # the object's bytes land after its moves
            continue
        moves = []
        idx.begin_batch()
        try:
            for k in keys:
                hit = idx.get(k)
                if hit is not None:
                    moves += hit[2]
        except StoreFull:
            pass
        finally:
            _run_moves(moves, dram, file, parallel=parallel_safe(moves))
            idx.end_batch()
        assert idx.check() is None
        for k in set(idx.dram) | set(idx.file):
            tier, slot = idx.where(k)
            assert (dram if tier == DRAM else file)[slot] == k, (k, tier, slot, dram, file)
