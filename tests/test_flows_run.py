"""End to end: several flows (rails, xPyD instances) of real agent processes over loopback (tcp)."""
from __future__ import annotations

import os

import pytest

from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.core.scenario import Arrival, Deployment, Distribution, Scenario, Topology, Workload
from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.errors import TransportError
from pytest_kvfabric.fabric.local import local_layout
from pytest_kvfabric.fabric.select import open_layout
from pytest_kvfabric.fabric.base import PairRequest
from pytest_kvfabric.run.flows import FlowRunner, run_flows

MIB = 1 << 20


def scenario(rails=1, topology=Topology(), tp=4, **kw) -> Scenario:
    wl = Workload(isl=Distribution.fixed(64), osl=Distribution.fixed(8), requests=4,
                  arrival=Arrival("poisson", rate_per_s=100.0))
    return Scenario(id="flows-e2e", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), workload=wl,
                    prefill=Deployment(tp=tp), decode=Deployment(tp=2), pool_bytes=8 * MIB, seed=5,
                    rails=rails, topology=topology, **kw)


def test_two_rails_both_carry_traffic_and_every_page_is_verified():
    sc = scenario(rails=2)
    res = run_flows(sc, timeout_s=60)
    plan = build_plan(sc)
    assert res.integrity["errors"] == 0 and res.integrity["pages_checked"] == len(plan.transfers)
    assert res.bytes == plan.total_bytes and res.requests_completed == res.requests == 4
    assert [r["rail"] for r in res.per_rail] == [0, 1]
    assert all(r["bytes"] > 0 and r["throughput_gbps"] > 0 for r in res.per_rail)
    assert sum(r["bytes"] for r in res.per_rail) == res.bytes
    assert [r["ranks"] for r in res.per_rail] == [[0, 2], [1, 3]]  # rank k -> rail k mod 2
    assert len(res.flows) == 2 and res.fairness_jain is not None and 0.5 <= res.fairness_jain <= 1.0
    assert res.flow_start_late_us["max"] is not None
    d = res.to_dict()
    assert d["per_rail"][1]["interface"] == "lo" and d["rails"] == 2


def test_a_rail_without_ranks_is_reported_idle_not_run():
    res = run_flows(scenario(rails=2, tp=1), timeout_s=60)
    assert res.per_rail[0]["bytes"] > 0
    assert res.per_rail[1]["bytes"] == 0 and "no prefill rank maps to this rail" in res.per_rail[1]["note"]
    assert [f["flow"] for f in res.flows] == ["p0d0r0"]


def test_fan_in_reports_instances_fairness_and_incast_penalty():
    sc = scenario(topology=Topology(2, 1))
    res = run_flows(sc, timeout_s=60)
    assert res.integrity["errors"] == 0 and res.bytes == build_plan(sc).total_bytes
    pre = res.per_instance["prefill"]
    assert [e["requests_routed"] for e in pre] == [2, 2] and all(e["bytes"] > 0 for e in pre)
    assert res.per_instance["decode"][0]["bytes"] == res.bytes
    (inc,) = res.incast
    assert inc["fan_in"] == 2 and inc["reference_exposed_p99_ms"] is not None
    assert res.incast_penalty_ms == pytest.approx(inc["exposed_p99_ms"] - inc["reference_exposed_p99_ms"])


def test_fan_out_routes_to_both_decode_instances():
    res = run_flows(scenario(topology=Topology(1, 2)), timeout_s=60)
    dec = res.per_instance["decode"]
    assert [e["requests_routed"] for e in dec] == [2, 2] and all(e["bytes"] > 0 for e in dec)
    assert res.incast is None and res.incast_penalty_ms is None


def test_one_flow_failing_names_the_flow_and_leaves_no_agent():
    sc = scenario(rails=2, transport_params={"_inject": "kill"})
    runner = FlowRunner(local_layout(2), timeout_s=30)
    with pytest.raises(TransportError, match=r"flow p0d0r[01] \(prefill0\.r[01] -> decode0\.r[01]\)"):
        runner.run(sc)
    pids = [pid for f in runner.last_flows for pid in f.agents.pids.values()]
    assert pids  # the agents had started (and answered setup) before the kill
    runner.close()
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive = os.waitpid(pid, os.WNOHANG) == (0, 0)
        except (ProcessLookupError, ChildProcessError):
            alive = False
        assert not alive, pid


def test_local_fabric_places_layouts_and_plain_fabrics_refuse_them():
    layout, close = open_layout("local", PairRequest(worker=0, rails=3, topology=(2, 1)))
    assert layout.rails == 3 and layout.topology == (2, 1)
    assert layout.flow_pair(1, 0, 2).prefill.name == "prefill1.r2"
    close()

    class PairOnly:  # a plug-in fabric that opens plain pairs only
        name, shares_clock, probes_here, needs_inventory = "pair-only-flows-test", True, True, False

        def open(self, request):
            from pytest_kvfabric.fabric.local import local_pair
            return local_pair(), lambda: None

    from pytest_kvfabric.fabric.select import FabricUsageError, register_fabric
    register_fabric(PairOnly())
    with pytest.raises(FabricUsageError, match="fabric 'pair-only-flows-test' cannot place rails=2 topology=\\(1, 1\\)"):
        open_layout("pair-only-flows-test", PairRequest(worker=0, rails=2))
    layout, _ = open_layout("pair-only-flows-test", PairRequest(worker=0))
    assert layout.rails == 1 and layout.topology == (1, 1)


def test_one_agent_pair_refuses_a_multi_agent_scenario():
    from pytest_kvfabric.errors import KvFabricError
    from pytest_kvfabric.run.runner import run_scenario

    with pytest.raises(KvFabricError, match=r"has rails=2 topology=\(1, 1\): one agent pair cannot run it"):
        run_scenario(scenario(rails=2))


def test_kvfabric_run_rails_and_instances_prints_per_rail_and_per_flow_figures(tmp_path, capsys):
    import json

    from pytest_kvfabric import cli

    out = tmp_path / "r.json"
    rc = cli.main(["run", "--model", "llama3.1-8b", "--transport", "tcp", "--isl", "32", "--requests", "2",
                   "--prefill-tp", "2", "--rails", "2", "--prefill-instances", "2", "--pool-mib", "8",
                   "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "rail 1 (lo)" in text and "flow p1d0r1" in text and "fairness (Jain, flows)" in text
    d = json.loads(out.read_text())
    assert d["rails"] == 2 and len(d["flows"]) == 4 and d["incast"][0]["fan_in"] == 2
    with pytest.raises(SystemExit) as bad:
        cli.main(["run", "--model", "llama3.1-8b", "--transport", "tcp", "--rails", "0"])
    assert bad.value.code == 2 and "argument --rails: must be >= 1, got 0" in capsys.readouterr().err


def test_closed_loop_fan_out_carries_every_request():
    """Closed loop, 1P2D: each sender holds requests routed to the other decode instance (no rows
    there); they must complete for it at their prefill end and let the next request in, not stall."""
    sc = scenario(topology=Topology(1, 2)).replace(
        workload=Workload(isl=Distribution.fixed(64), osl=Distribution.fixed(8), requests=4, arrival=Arrival("closed")))
    res = run_flows(sc, timeout_s=60)
    assert res.requests_completed == res.requests == 4 and res.bytes == build_plan(sc).total_bytes
    assert [e["bytes"] > 0 for e in res.per_instance["decode"]] == [True, True]
