"""fabric/rails.py: names, addresses and the CPU-set rule of rails (pure; Hypothesis for the rule)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.fabric import rails as rl


def test_names_and_addresses():
    assert rl.instance_netns("kvf-", "123", 4, "prefill", 1) == "kvf-123-4p1"
    assert rl.instance_netns("kvf-", "123", 4, "decode", 0) == "kvf-123-4d0"
    assert rl.bridge_netns("kvf-", "123", 4) == "kvf-123-4b"
    assert rl.rail_ifname("kvf-", "decode", 2, 7) == "kvf-d2r7"
    assert rl.port_ifname("kvf-", "prefill", 0, 1) == "kvf-bp0r1"
    assert rl.bridge_ifname("kvf-", 3) == "kvf-br3"
    assert rl.rail_subnet(4, 0) == "10.204.4.0/24" and rl.rail_subnet(4, 15) == "10.219.4.0/24"
    assert rl.rail_addr(4, 1, "prefill", 0) == "10.205.4.1"
    assert rl.rail_addr(4, 1, "decode", 3) == "10.205.4.132"
    with pytest.raises(ValueError, match="longer than 15"):
        rl.port_ifname("kvf-very-long-", "prefill", 10, 10)
    with pytest.raises(ValueError, match="rail 16 out of range 0..15"):
        rl.rail_subnet(0, 16)
    with pytest.raises(ValueError, match="layout index 256"):
        rl.rail_addr(256, 0, "prefill", 0)
    assert [rl.rank_rail(k, 3) for k in range(7)] == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("rails, topo, msg", [
    (0, (1, 1), "rails must be an integer in 1..16, got 0"),
    (17, (1, 1), "rails must be an integer in 1..16, got 17"),
    (True, (1, 1), "rails must be an integer"),
    (1, (0, 1), "topology: prefill instances must be in 1..100, got 0"),
    (1, (1, 101), "topology: decode instances must be in 1..100, got 101"),
    (1, (1, 1, 1), "topology must be"),
    (1, (1.0, 1), "topology must be"),
])
def test_check_shape_names_the_field(rails, topo, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        rl.check_shape(rails, topo)


def test_split_even_and_sharing():
    assert rl.split_even([3, 0, 1, 2, 4], 2) == [[0, 1, 2], [3, 4]]
    assert rl.split_even([0, 1], 4) == [[0], [1], [0], [1]]  # fewer cores than rails: shared
    assert rl.split_even([5], 1) == [[5]]
    with pytest.raises(ValueError):
        rl.split_even([], 1)


def test_numa_node_of_each_nic_wins():
    node_cpus = {0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}
    # rails 0, 1 on node 1; rail 2 on node 0; rail 3 a veth (no node): the whole allowed set
    sets = rl.rail_cpu_sets(range(8), 4, [1, 1, 0, None], node_cpus)
    assert sets == [[4, 5], [6, 7], [0, 1, 2, 3], list(range(8))]
    # a node whose CPUs this process may not use counts as no node
    assert rl.rail_cpu_sets([0, 1], 2, [1, 1], node_cpus) == [[0], [1]]
    with pytest.raises(ValueError, match="1 NUMA nodes given for 2 rails"):
        rl.rail_cpu_sets([0, 1], 2, [0], node_cpus)


def test_plan_shares_or_splits_cores():
    plan = rl.netns_plan("kvf-", "9", 3, 2, (1, 1), [0, 1])
    assert [(p.role, p.rail, p.cpus, p.ifname, p.addr) for p in plan] == [
        ("prefill", 0, [0], "kvf-p0r0", "10.204.3.1"), ("prefill", 1, [1], "kvf-p0r1", "10.205.3.1"),
        ("decode", 0, [0], "kvf-d0r0", "10.204.3.129"), ("decode", 1, [1], "kvf-d0r1", "10.205.3.129")]
    split = rl.netns_plan("kvf-", "9", 3, 2, (1, 1), [0, 1, 2, 3], cpu_split=True)
    assert [p.cpus for p in split] == [[0], [1], [2], [3]]
    one = rl.netns_plan("kvf-", "9", 3, 1, (2, 1), [0, 1])
    assert [p.cpus for p in one] == [None, None, None]  # a set of every allowed CPU is no pinning
    assert [p.netns for p in one] == ["kvf-9-3p0", "kvf-9-3p1", "kvf-9-3d0"]
    with pytest.raises(ValueError, match="cpu_split needs at least 2 CPUs"):
        rl.netns_plan("kvf-", "9", 3, 2, (1, 1), [0], cpu_split=True)


@settings(max_examples=200, deadline=None)
@given(cpus=st.sets(st.integers(0, 63), min_size=1, max_size=16), rails=st.integers(1, 16),
       nodes=st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=16, max_size=16))
def test_rule_properties(cpus, rails, nodes):
    node_cpus = {n: [c for c in range(64) if c % 4 == n] for n in range(4)}
    sets = rl.rail_cpu_sets(sorted(cpus), rails, nodes[:rails], node_cpus)
    assert len(sets) == rails
    for r, s in enumerate(sets):
        assert s and set(s) <= cpus  # never a CPU this process may not use
        local = set(node_cpus[nodes[r]]) & cpus if nodes[r] is not None else set()
        if local:
            assert set(s) <= local  # NIC-local where the node has usable CPUs
    # rails of one group get disjoint sets whenever the group has enough CPUs
    groups: dict[object, list[int]] = {}
    for r in range(rails):
        local = set(node_cpus[nodes[r]]) & cpus if nodes[r] is not None else set()
        groups.setdefault(nodes[r] if local else None, []).append(r)
    for key, members in groups.items():
        pool = cpus if key is None else set(node_cpus[key]) & cpus
        if len(pool) >= len(members):
            seen: set[int] = set()
            for r in members:
                assert not seen & set(sets[r])
                seen |= set(sets[r])
            assert seen == pool  # and use all of it
