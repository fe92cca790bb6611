"""Real runs: two agent processes, Mooncake's engine moving the pages, every page verified."""
from __future__ import annotations

import json
import os

import pytest

from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.run.runner import run_scenario
from pytest_kvfabric.core.scenario import Scenario, Synthetic

from conftest import SUITE


def scenario(**kw) -> Scenario:
    base = dict(id="mc", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), pacing="none",
                pool_bytes=8 << 20, seed=3, transport="mooncake",
                synthetic=Synthetic(nbytes=65536, transfers=32, batch=8, requests=3))
    base.update(kw)
    return Scenario(**base)


def test_run_scenario_moves_and_verifies_every_page(engine):
    d = run_scenario(scenario(), timeout_s=120).to_dict()
    assert d["integrity"] == {"errors": 0, "first_error": None, "pages_checked": 96}
    assert d["requests_completed"] == 3 and d["bytes"] == 96 * 65536  # 32 writes per request
    for side in ("sender", "receiver"):
        dp = d["data_path"][side]
        assert dp["transport"] == "mooncake" and dp["protocol"] == "tcp" and dp["zero_copy"] is False
        assert dp["metadata"] == "P2PHANDSHAKE" and dp["engine"].startswith("mooncake-transfer-engine")
    posted = d["data_path"]["sender"]["batches_posted"]
    assert posted >= 1 and d["data_path"]["receiver"]["batches_announced"] == posted


def test_slot_reuse_runs_guard_round_trips(engine):
    # 96 writes of 64 KiB through a 1 MiB pool: each slot is written 6 times.
    d = run_scenario(scenario(pool_bytes=1 << 20), timeout_s=120).to_dict()
    assert d["integrity"]["errors"] == 0 and d["integrity"]["pages_checked"] == 96
    assert d["data_path"]["receiver"]["guard_round_trips"] > 0


def test_suite_passes_through_the_plugin_and_reports_the_data_path(engine, pytester):
    pytester.makefile(".yaml", mc=SUITE)
    result = pytester.runpytest("mc.yaml", "--kv-transport=mooncake", "--kv-json=r.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    report = json.loads((pytester.path / "r.json").read_text())
    for r in report["results"]:
        m = r["metrics"]
        assert m["integrity"]["errors"] == 0 and m["integrity"]["pages_checked"] > 0
        assert m["data_path"]["sender"]["protocol"] == "tcp"


def test_rdma_on_a_host_without_a_device_is_a_skip_with_the_reason(engine, pytester):
    if os.path.isdir("/sys/class/infiniband") and os.listdir("/sys/class/infiniband"):
        pytest.skip("this host has an RDMA device")
    pytester.makefile(".yaml", mc=SUITE)
    result = pytester.runpytest("mc.yaml", "--kv-transport=mooncake", "--kv-transport-param=protocol=rdma",
                                "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*mooncake protocol rdma needs an RDMA device*"])


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_suite_passes_across_a_namespace_pair(engine, pytester):
    pytester.makefile(".yaml", mc=SUITE)
    result = pytester.runpytest("mc.yaml", "--kv-transport=mooncake", "--kv-fabric=netns", "-k", "slot-reuse",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=2)
