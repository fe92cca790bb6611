"""The storage tier end to end through pytester: a store agent and its client beside the pair,
real sockets, every fetched and offloaded page verified, figures in the JSON report."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.emulator.storeplan import build_store_plan
from pytest_kvfabric.endpoint.store_pages import ObjectPages
from pytest_kvfabric.fabric.netns import netns_unavailable_reason
from pytest_kvfabric.harness.resolve import build
from pytest_kvfabric.report import jsonreport
from pytest_kvfabric.run.store_runner import read_reason

TCP_READS = read_reason("tcp")

# Small on purpose: llama3.1-8b with fp8 KV is 1 MiB per page; each case moves ~10-40 MiB.
SUITE = """
suite: st
defaults:
  gpu: h100
  models: [llama3.1-8b]
  prefill: {kv_dtype: fp8}
  decode: {kv_dtype: fp8}
  pool_mib: 16
  workload: {isl: 160, osl: 4, requests: 3}
scenarios:
  - id: prefix
    store: {mode: prefix, dram_mib: 32, hit_ratio: 0.6}
    slo: {min_store_hit_ratio: 1.0, p99_fetch_ms: 60000}
  - id: prefix-file
    store: {mode: prefix, dram_mib: 12, file_mib: 32, hit_ratio: 0.9}
    slo: {min_store_hit_ratio: 1.0}
  - id: resume
    store: {mode: resume, dram_mib: 32, hit_ratio: 0.5, reuse: 1.0}
  - id: offload
    store: {mode: offload, dram_mib: 16}
    slo: {p99_offload_ms: 60000}
"""


def test_a_transport_without_reads_skips_store_cases_with_the_reason(pytester):
    pytester.makefile(".yaml", st=SUITE)
    pytester.makeconftest("""
from pytest_kvfabric.transports.base import Capability
from pytest_kvfabric.transports.tcp import TcpTransport

TcpTransport.probe_read = classmethod(lambda cls, options=None: Capability.missing("reads switched off by this test"))
""")
    result = pytester.runpytest_subprocess("st.yaml", "--kv-transport=tcp", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*SKIPPED ?4?*store scenario needs one-sided READ; tcp: reads switched off by this test*"])


@pytest.mark.skipif(TCP_READS is not None, reason=str(TCP_READS))
def test_store_cases_pass_over_tcp_with_every_page_verified_and_figures_in_the_report(pytester):
    pytester.makefile(".yaml", st=SUITE)
    result = pytester.runpytest("st.yaml", "--kv-transport=tcp", "--kv-json=report.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*kvfabric storage tier*", "*st/offload?llama3.1-8b-tcp?*offload*30 (0 errors)*",
                                 "*st/prefix?llama3.1-8b-tcp?*prefix*1/0*->*%*"])
    report = jsonreport.read(pytester.path / "report.json")
    store = {r["scenario"].split("/")[-1]: r["metrics"]["store"] for r in report["results"]}
    for name in ("prefix", "prefix-file", "resume"):
        s = store[name]
        assert s["integrity"]["errors"] == 0 and s["integrity"]["pages_checked"] == s["bytes_fetched"] // s["page_bytes"] > 0
        assert s["fetch_ms"]["p99"] >= s["fetch_ms"]["p50"] > 0
        assert s["hit_ratio"]["all"] == 1.0
        assert s["tokens_fetched"] + s["tokens_computed"] == 3 * 160 and s["tokens_fetched"] > 0
        assert s["ttft_without_store_ms"]["p50"] > 0 and isinstance(s["ttft_saving_fraction"], float)
    assert store["prefix"]["hit_ratio"]["dram"] == 1.0
    # a 12 MiB DRAM tier cannot hold every prefix: some pages were staged from the file tier
    assert store["prefix-file"]["hit_ratio"]["file"] > 0 and store["prefix-file"]["disk"]["read_bytes"] > 0
    off = store["offload"]
    assert off["integrity"]["pages_checked"] == 30 and off["integrity"]["errors"] == 0  # 3 x 10 pages, checked at the store
    assert off["bytes_offloaded"] == 30 * off["page_bytes"] and off["offload_ms"]["p50"] > 0
    # every case's integrity counts the store's pages with the decode side's
    assert all(r["metrics"]["integrity"]["pages_checked"] > r["metrics"]["store"]["integrity"]["pages_checked"]
               for r in report["results"])


@pytest.mark.skipif(TCP_READS is not None or netns_unavailable_reason() is not None,
                    reason=str(TCP_READS or netns_unavailable_reason()))
def test_store_cases_pass_over_the_netns_fabric(pytester):
    pytester.makefile(".yaml", st=SUITE)
    result = pytester.runpytest("st.yaml", "--kv-transport=tcp", "--kv-fabric=netns", "-k", "prefix-file or offload",
                                "--kv-json=report.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, deselected=2)
    report = jsonreport.read(pytester.path / "report.json")
    for r in report["results"]:
        assert r["pair"].startswith("netns:") and r["metrics"]["store"]["integrity"]["errors"] == 0
        where = r["metrics"]["store"]["placement"]
        # the store has a namespace of its own, behind the pair's far side from its client
        assert where["store"] == where["store_netns"]["netns"] == where["store_netns"]["via"] + "s"
        assert where["client"] != where["store_netns"]["via"] and where["store_netns"]["subnet"].startswith("10.213.")
    import os
    import subprocess

    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if ln.startswith(f"kvf-{os.getpid()}-")], left  # none left behind


def test_a_page_from_the_wrong_slot_or_corrupted_is_named():
    sc = build({"workload": {"isl": 64, "osl": 4, "requests": 2}, "store": {"mode": "prefix", "hit_ratio": 0.5}},
               id="t", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), transport="tcp")
    sp = build_store_plan(sc, build_plan(sc))
    pages = ObjectPages(sp, sc.seed)
    region = np.zeros(2 * sp.obj_bytes, np.uint8)
    pages.fill(region, 0, 1)
    pages.fill(region, sp.obj_bytes, 2)
    assert pages.check(region, 0, 1) is None and pages.check(region, sp.obj_bytes, 2) is None
    assert "request 0 page 0" in pages.check(region, 0, 0) and "header key mismatch" in pages.check(region, 0, 0)
    region[sp.obj_bytes + 1000] ^= 0xFF
    assert "corrupted at byte 1000" in pages.check(region, sp.obj_bytes, 2)


@pytest.fixture(scope="module")
def store_server():
    from pytest_kvfabric.endpoint.store_server import StoreServer

    sc = build({"workload": {"isl": 64, "osl": 4, "requests": 3},
                "prefill": {"kv_dtype": "fp8"}, "decode": {"kv_dtype": "fp8"},
                "store": {"mode": "prefix", "hit_ratio": 0.75, "dram_mib": 4, "file_mib": 4}},
               id="t", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), transport="tcp")
    server = StoreServer({"spec": sc.to_spec(), "token": "t" * 32, "bind": "127.0.0.1"})
    yield server
    server.close()


any_request = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(["get", "release", "put", "commit", "bye", "drop"]),
                           "keys": st.one_of(st.lists(st.integers(-2, 12), max_size=8), st.text(max_size=3))}),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.lists(st.integers(), max_size=3),
)


@pytest.mark.skipif(TCP_READS is not None, reason=str(TCP_READS))
@settings(max_examples=150, deadline=None)
@given(st.lists(any_request, max_size=12))
def test_the_store_answers_any_request_sequence_and_keeps_its_index_consistent(store_server, msgs):
    for m in msgs:
        ans = store_server.answer(m)
        assert isinstance(ans, dict) and isinstance(ans["ok"], bool)
        assert ans["ok"] or ans["error"]
        assert store_server.index.check() is None
    for k in list(store_server.index.pins):  # the next example starts unpinned
        store_server.index.pins.pop(k)
    assert store_server.error_count == 0 or all("store object" in e for e in store_server.errors)


@pytest.mark.skipif(TCP_READS is not None, reason=str(TCP_READS))
def test_a_corrupted_store_page_fails_the_run_naming_the_page():
    from pytest_kvfabric.endpoint.store_server import STORE_INJECT_PARAM
    from pytest_kvfabric.errors import IntegrityError
    from pytest_kvfabric.run.store_runner import run_store_scenario

    sc = build({"workload": {"isl": 64, "osl": 4, "requests": 2}, "pool_mib": 16,
                "prefill": {"kv_dtype": "fp8"}, "decode": {"kv_dtype": "fp8"},
                "store": {"mode": "prefix", "hit_ratio": 0.75, "dram_mib": 16},
                "transport_params": {STORE_INJECT_PARAM: "corrupt"}},
               id="t", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), transport="tcp")
    with pytest.raises(IntegrityError, match=r"1 page\(s\) failed verification; first: store object 0 "
                                             r"\(request 0 page 0, 1048576 B\): corrupted at byte 1000") as ei:
        run_store_scenario(sc)
    store = ei.value.result.store
    assert store["integrity"]["errors"] == 1 and store["integrity"]["pages_checked"] == 6
