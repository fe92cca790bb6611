"""Multi-agent runs on real namespaces: every rail's veth carries its ranks' bytes, and a fan-in
decode instance receives from several prefill namespaces through the bridge (root only).

Prefix "kvffl-" keeps these namespaces apart from other tests and from running sessions."""
from __future__ import annotations

import pytest

from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.core.scenario import Arrival, Deployment, Distribution, Scenario, Topology, Workload
from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.fabric.base import PairRequest
from pytest_kvfabric.fabric.netns import link_counters, list_netns, netns_unavailable_reason
from pytest_kvfabric.fabric.select import open_layout
from pytest_kvfabric.run.flows import FlowRunner

PREFIX = "kvffl-"
REASON = netns_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def scenario(rails: int, topology: Topology) -> Scenario:
    wl = Workload(isl=Distribution.fixed(64), osl=Distribution.fixed(8), requests=4,
                  arrival=Arrival("poisson", rate_per_s=100.0))
    return Scenario(id="flows-netns", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), workload=wl,
                    prefill=Deployment(tp=2), decode=Deployment(tp=2), pool_bytes=8 << 20, seed=9,
                    rails=rails, topology=topology)


def _tx_bytes(host) -> int:
    return int(link_counters(host.netns, host.interface)["tx_bytes"])


def test_each_rail_veth_carries_its_ranks_and_nothing_is_left_behind():
    sc = scenario(2, Topology())
    layout, close = open_layout("netns", PairRequest(worker=61, netns_prefix=PREFIX, rails=2))
    try:
        before = [_tx_bytes(layout.prefill[0][r]) for r in range(2)]
        with FlowRunner(layout, timeout_s=60) as runner:
            res = runner.run(sc)
        sent = [_tx_bytes(layout.prefill[0][r]) - before[r] for r in range(2)]
    finally:
        close()
    assert res.integrity["errors"] == 0 and res.bytes == build_plan(sc).total_bytes
    for r in range(2):  # the kernel's own counters: each rail's veth moved at least its rail's KV bytes
        assert res.per_rail[r]["interface"] == layout.prefill[0][r].interface
        assert res.per_rail[r]["bytes"] > 0 and sent[r] >= res.per_rail[r]["bytes"], (r, sent, res.per_rail)
    assert not [n for n in list_netns() if n.startswith(PREFIX)]


def test_fan_in_through_the_bridge_reports_instances_and_incast():
    sc = scenario(1, Topology(2, 1))
    layout, close = open_layout("netns", PairRequest(worker=62, netns_prefix=PREFIX, topology=(2, 1)))
    try:
        with FlowRunner(layout, timeout_s=60) as runner:
            res = runner.run(sc)
    finally:
        close()
    assert res.integrity["errors"] == 0
    assert [e["bytes"] > 0 for e in res.per_instance["prefill"]] == [True, True]
    assert res.incast[0]["fan_in"] == 2 and res.fairness_jain is not None
    assert {f["receiver"] for f in res.flows} == {layout.decode[0][0].name}  # one decode host, two receivers
