"""Real runs: two agent processes, NIXL (UCX) moving the pages, every page verified, the UCX path proven."""
from __future__ import annotations

import json
import os

import pytest

from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.run.runner import run_scenario
from pytest_kvfabric.core.scenario import Scenario, Synthetic

from conftest import SUITE

# On one host UCX would use cma (a kernel copy between the processes) for writes; tcp over lo
# keeps the traffic on the loopback device these tests may use.
TCP_LO = {"ucx_tls": "tcp", "ucx_net_devices": "lo"}


def scenario(**kw) -> Scenario:
    base = dict(id="nx", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), pacing="none",
                pool_bytes=8 << 20, seed=3, transport="nixl", transport_params=dict(TCP_LO),
                synthetic=Synthetic(nbytes=65536, transfers=32, batch=8, requests=3))
    base.update(kw)
    return Scenario(**base)


def test_run_scenario_moves_verifies_and_names_the_ucx_lanes(engine):
    d = run_scenario(scenario(transport_params={**TCP_LO, "require_ucx_transport": "tcp"}), timeout_s=120).to_dict()
    assert d["integrity"] == {"errors": 0, "first_error": None, "pages_checked": 96}
    assert d["requests_completed"] == 3
    snd, rcv = d["data_path"]["sender"], d["data_path"]["receiver"]
    assert snd["ucx_write_lanes"] == ["tcp/lo"] and snd["zero_copy"] is False
    assert "tcp/lo" in snd["description"] and snd["ucx_env"] == {"UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"}
    assert rcv["batches_announced"] == snd["batches_posted"] >= 1


def test_ucx_default_choice_is_reported_not_assumed(engine):
    d = run_scenario(scenario(transport_params={}), timeout_s=120).to_dict()
    assert d["integrity"]["errors"] == 0
    lanes = d["data_path"]["sender"]["ucx_write_lanes"]
    assert lanes and all("/" in lane for lane in lanes)  # e.g. cma/memory on one host


def test_slot_reuse_runs_guard_round_trips(engine):
    d = run_scenario(scenario(pool_bytes=1 << 20), timeout_s=120).to_dict()
    assert d["integrity"]["errors"] == 0 and d["integrity"]["pages_checked"] == 96
    assert d["data_path"]["receiver"]["guard_round_trips"] > 0


def test_required_rc_fails_the_case_naming_the_fallback(engine, pytester):
    pytester.makefile(".yaml", nx=SUITE)
    result = pytester.runpytest("nx.yaml", "--kv-transport=nixl", "-k", "size-64k", "-p", "no:cacheprovider",
                                *[f"--kv-transport-param={k}={v}" for k, v in TCP_LO.items()],
                                "--kv-transport-param=require_ucx_transport=rc")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*require_ucx_transport=rc: UCX moved the remote writes over tcp/lo*not rc*"], consecutive=False)


def test_suite_passes_through_the_plugin_and_reports_the_lanes(engine, pytester):
    pytester.makefile(".yaml", nx=SUITE)
    result = pytester.runpytest("nx.yaml", "--kv-transport=nixl", "--kv-json=r.json", "-p", "no:cacheprovider",
                                *[f"--kv-transport-param={k}={v}" for k, v in TCP_LO.items()])
    result.assert_outcomes(passed=3)
    for r in json.loads((pytester.path / "r.json").read_text())["results"]:
        m = r["metrics"]
        assert m["integrity"]["errors"] == 0 and m["integrity"]["pages_checked"] > 0
        assert m["data_path"]["sender"]["ucx_write_lanes"] == ["tcp/lo"]


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_suite_passes_across_a_namespace_pair(engine, pytester):
    pytester.makefile(".yaml", nx=SUITE)
    result = pytester.runpytest("nx.yaml", "--kv-transport=nixl", "--kv-fabric=netns", "-k", "slot-reuse",
                                "--kv-transport-param=ucx_tls=tcp", "--kv-json=r.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=2)
    (r,) = json.loads((pytester.path / "r.json").read_text())["results"]
    lanes = r["metrics"]["data_path"]["sender"]["ucx_write_lanes"]
    assert lanes and all(lane.startswith("tcp/") for lane in lanes)
