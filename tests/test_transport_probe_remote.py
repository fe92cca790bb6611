"""Probes run where the agents run: inside each namespace of a pair (the same code path as SSH hosts)."""
from __future__ import annotations

import os

import pytest

from pytest_kvfabric.fabric.base import Host, HostPair
from pytest_kvfabric.fabric.transport_probe import host_params, probe_pair

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def ns_pair():
    from pytest_kvfabric.fabric import netns

    reason = netns.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    pair = netns.NetnsPair.create(f"probe{os.getpid()}", 7, prefix="kvft9-")
    try:
        yield pair.pair
    finally:
        pair.destroy()


def test_tcp_is_available_on_both_namespace_hosts(ns_pair):
    assert probe_pair(ns_pair, "tcp", {}) is None


def test_devmem_reason_names_the_namespace_host_and_its_veth(ns_pair):
    reason = probe_pair(ns_pair, "devmem", {})
    assert reason is not None
    assert f"prefill host {ns_pair.prefill.name}" in reason and f"decode host {ns_pair.decode.name}" in reason
    # The probe ran inside the namespace: it examined the pair's veth, not this host's NIC.
    assert ns_pair.prefill.interface in reason and "veth" in reason


def test_unreachable_host_is_a_reason_not_a_hang():
    ghost = Host(name="ghost", gateway_spec="popen//python=/nonexistent/python3", data_addr="127.0.0.1")
    reason = probe_pair(HostPair("ghost-pair", "hosts", ghost, ghost), "tcp", {})
    assert reason and "prefill host ghost" in reason


def test_host_params_fill_data_plane_facts_but_user_values_win():
    h = Host(name="h", gateway_spec="popen", data_addr="10.0.0.2", interface="eth4")
    assert host_params(h, {}) == {"data_addr": "10.0.0.2", "host": "10.0.0.2", "interface": "eth4"}
    assert host_params(h, {"interface": "eth9"})["interface"] == "eth9"
