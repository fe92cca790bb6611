"""Sub-plans of a multi-agent run (emulator/flows.py) and their figures (measure/flowstats.py): pure."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.core.scenario import Arrival, Deployment, Distribution, Scenario, Topology, Workload
from pytest_kvfabric.emulator.flows import (ROUTINGS, SESSION_REQUESTS, FlowSpec, check_layout, flow_plan, rail_of,
                                            route)
from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.harness.resolve import build_topology
from pytest_kvfabric.harness.suites import parse_suite
from pytest_kvfabric.measure import flowstats

MIB = 1 << 20


def scenario(tp: int = 4, requests: int = 6, **kw) -> Scenario:
    wl = Workload(isl=Distribution.fixed(64), osl=Distribution.fixed(8), requests=requests,
                  arrival=Arrival("poisson", rate_per_s=50.0))
    return Scenario(id="flows", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), workload=wl,
                    prefill=Deployment(tp=tp), decode=Deployment(tp=2), pool_bytes=16 * MIB, seed=3, **kw)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(1, 8), st.integers(1, 8), st.sampled_from(ROUTINGS), st.integers(0, 2**64 - 1))
def test_routing_stays_in_range_is_seeded_and_round_robin_is_balanced(nreq, P, D, routing, seed):
    pre, dec = route(nreq, P, D, routing, seed)
    assert pre.shape == dec.shape == (nreq,)
    assert ((0 <= pre) & (pre < P)).all() and ((0 <= dec) & (dec < D)).all()
    again = route(nreq, P, D, routing, seed)
    assert (again[0] == pre).all() and (again[1] == dec).all()
    if nreq:
        counts = np.bincount(pre, minlength=P)
        assert counts.max() - counts.min() <= 1  # the front end spreads prompts evenly
    if routing == "round_robin" and nreq:
        counts = np.bincount(dec, minlength=D)
        assert counts.max() - counts.min() <= P  # whole rounds of P requests per decode instance
    if routing == "session":
        for s in range(0, nreq, SESSION_REQUESTS):
            assert len(set(dec[s:s + SESSION_REQUESTS].tolist())) == 1  # a session sticks to one instance


def test_unknown_routing_is_refused():
    with pytest.raises(ValueError, match="unknown routing 'hash'; valid: round_robin, random, session"):
        route(4, 1, 2, "hash", 0)


@pytest.mark.parametrize("rails, P, D, routing", [(1, 1, 1, "round_robin"), (2, 1, 1, "round_robin"),
                                                 (3, 2, 1, "random"), (2, 1, 2, "session"), (4, 2, 2, "round_robin")])
def test_flows_partition_the_plan_and_own_compact_regions(rails, P, D, routing):
    sc = scenario(rails=rails, topology=Topology(P, D, routing))
    plan = build_plan(sc)
    seen = np.zeros(len(plan.transfers), int)
    pre_of, _ = route(len(plan.requests), P, D, routing, sc.seed)
    for p in range(P):
        for d in range(D):
            for r in range(rails):
                sub = flow_plan(plan, FlowSpec(rails, r, P, D, p, d, routing, sc.seed))
                seen[sub.rows] += 1
                t, q = sub.plan.transfers, sub.plan.requests
                assert (sub.reqs == np.flatnonzero(pre_of == p)).all()  # the whole instance's GPU timeline
                assert (rail_of(plan.transfers["src_rank"][sub.rows], rails) == r).all()
                assert (t["nbytes"] == plan.transfers["nbytes"][sub.rows]).all()
                assert (q["arrival_ns"] == plan.requests["arrival_ns"][sub.reqs]).all()
                assert int(q["count"].sum()) == len(t)
                for i in range(len(q)):  # rows of a request are contiguous and renumbered
                    f, c = int(q["first"][i]), int(q["count"][i])
                    assert (t["request"][f:f + c] == i).all()
                if len(t):
                    assert int((t["src_off"] + t["nbytes"]).max()) <= sub.plan.src_region_bytes
                    assert int((t["dst_off"] + t["nbytes"]).max()) <= sub.plan.dst_region_bytes
                    assert sub.plan.src_ranks == len(np.unique(plan.transfers["src_rank"][sub.rows]))
    assert (seen == 1).all()  # every row in exactly one flow


def test_reference_flow_holds_every_instance_timeline():
    sc = scenario(topology=Topology(2, 1))
    plan = build_plan(sc)
    sub = flow_plan(plan, FlowSpec(1, 0, 2, 1, None, 0, "round_robin", sc.seed))
    assert len(sub.rows) == len(plan.transfers)
    assert sub.gpu.tolist() == [i % 2 for i in range(len(plan.requests))]


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.integers(-5, 100), st.booleans(), st.text(max_size=3), st.floats(allow_nan=True)),
       st.one_of(st.integers(-5, 100), st.none()), st.integers(1, 64),
       st.one_of(st.sampled_from(ROUTINGS), st.text(max_size=8)))
def test_check_layout_names_the_bad_field(rails, prefill, decode, routing):
    why = check_layout(rails, prefill, decode, routing, "scenarios[0].topology", "scenarios[0].rails")
    good_int = lambda v, top: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= top  # noqa: E731
    ok = good_int(rails, 64) and good_int(prefill, 64) and routing in ROUTINGS
    assert (why is None) == ok
    if why:
        field, _, reason = why.partition(": ")
        assert field in ("scenarios[0].rails", "scenarios[0].topology.prefill", "scenarios[0].topology.routing")
        assert reason and "\n" not in why


def test_suite_topology_errors_name_file_and_field():
    text = "suite: s\nscenarios:\n  - id: a\n    topology: {prefill: 2, decode: 1, routing: %s}\n"
    suite = parse_suite(text % "random", "s.yaml")
    assert suite.scenarios[0].fields["topology"]["routing"] == "random"
    with pytest.raises(ProfileError, match=r"s\.yaml: .*routing"):
        parse_suite(text % "hash", "s.yaml")  # the schema refuses it before any run
    with pytest.raises(ProfileError, match=r"x\.yaml: scenarios\[1\]\.topology\.extra: unknown key"):
        build_topology({"extra": 1}, 1, "x.yaml", "scenarios[1]")
    with pytest.raises(ProfileError, match=r"x\.yaml: scenarios\[1\]\.rails: must be between 1 and 64, got 0"):
        build_topology({}, 0, "x.yaml", "scenarios[1]")


def test_jain_index():
    assert flowstats.jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert flowstats.jain([1.0, 0.0001 * 0 + 1e-9]) == pytest.approx(0.5, abs=1e-6)
    assert flowstats.jain([3.0, 1.0]) == pytest.approx(16 / 20)
    assert flowstats.jain([5.0]) is None and flowstats.jain([None, 2.0]) is None


def test_merge_rebases_each_flow_to_its_start_and_takes_the_last_completion():
    rows = np.arange(4)
    reqs = np.arange(1)
    base = flowstats.BASE_NS
    a = flowstats.FlowMeasure("a", 0, 0, 0, np.array([0, 2]), reqs, {
        "post_ns": np.array([1010, 1020]), "done_ns": np.array([1050, 1060]), "req_arrival_ns": np.array([1000]),
        "req_start_ns": np.array([1000]), "req_done_ns": np.array([1060])}, 1000)
    b = flowstats.FlowMeasure("b", 1, 0, 0, np.array([1, 3]), reqs, {
        "post_ns": np.array([5012, 5022]), "done_ns": np.array([5070, 0]), "req_arrival_ns": np.array([5000]),
        "req_start_ns": np.array([5000]), "req_done_ns": np.array([5090])}, 5000)
    m = flowstats.merge(rows, reqs, [a, b])
    assert m["post_ns"].tolist() == [base + 10, base + 12, base + 20, base + 22]
    assert m["done_ns"].tolist() == [base + 50, base + 70, base + 60, 0]  # never completed stays 0
    assert m["req_done_ns"].tolist() == [base + 90] and m["req_start_ns"].tolist() == [base]
    b.m["req_done_ns"][0] = 0  # one rail never finished the request: it is not complete
    assert flowstats.merge(rows, reqs, [a, b])["req_done_ns"].tolist() == [0]


def test_incast_entry_penalty_is_fan_in_minus_one_sender():
    fanned = {"exposed_ms": {"p50": 5.0, "p99": 12.0}, "throughput_gbps": 3.0}
    ref = {"exposed_ms": {"p50": 4.0, "p99": 8.0}, "throughput_gbps": 3.5}
    e = flowstats.incast_entry(0, 4, fanned, ref)
    assert e["penalty_p99_ms"] == 4.0 and e["penalty_p50_ms"] == 1.0 and e["penalty_ratio_p99"] == 1.5
    assert flowstats.worst_penalty([e, {**e, "penalty_p99_ms": 9.0}]) == 9.0


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.integers(-10**6, 10**6).map(str), st.text(max_size=6), st.floats(allow_nan=True).map(str)))
def test_kv_rails_option_is_an_int_in_range_or_a_one_line_error_naming_it(text):
    from pytest_kvfabric.harness.options import resolve

    try:
        value = int(text)
    except ValueError:
        value = None
    try:
        sel = resolve(lambda d: text if d == "kv_rails" else None)
    except ProfileError as exc:
        assert "--kv-rails" in str(exc) and "\n" not in str(exc)
        assert value is None or not 1 <= value <= 64 or text.strip() == ""
        return
    assert sel.rails is None if text in ("",) else sel.rails == value and 1 <= value <= 64


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(["prefill", "decode", "routing", "extra"]),
                       st.one_of(st.integers(-3, 80), st.sampled_from(ROUTINGS), st.text(max_size=4), st.none()),
                       max_size=4))
def test_suite_topology_builds_or_names_the_field(spec):
    try:
        topo = build_topology(spec, 1, "s.yaml", "scenarios[3]")
    except ProfileError as exc:
        assert str(exc).startswith("s.yaml: scenarios[3].topology.") and "\n" not in str(exc)
        return
    assert "extra" not in spec
    assert 1 <= topo.prefill <= 64 and 1 <= topo.decode <= 64 and topo.routing in ROUTINGS
