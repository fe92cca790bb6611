"""Fabrics are picked from a table by name and answer for themselves (no caller tests a fabric's name)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_kvfabric.fabric import select
from pytest_kvfabric.fabric.alloc import FabricUsageError
from pytest_kvfabric.fabric.base import Host, HostPair, PairRequest
from pytest_kvfabric.fabric.netns_options import OFFLOAD_KEYS, netns_kwargs, parse_offloads


@pytest.mark.parametrize("name", select.FABRICS)
def test_builtins_implement_the_protocol(name):
    fabric = select.get_fabric(name)
    assert fabric.name == name
    for attr in ("shares_clock", "probes_here", "needs_inventory"):
        assert isinstance(getattr(fabric, attr), bool)
    for method in ("open", "interfaces", "link_cause"):
        assert callable(getattr(fabric, method))


def test_what_each_builtin_answers():
    local, netns, hosts = (select.get_fabric(n) for n in ("local", "netns", "hosts"))
    assert (local.shares_clock, netns.shares_clock, hosts.shares_clock) == (True, True, False)
    assert (local.probes_here, netns.probes_here, hosts.probes_here) == (True, False, False)
    assert (local.needs_inventory, netns.needs_inventory, hosts.needs_inventory) == (False, False, True)
    pair, close = select.open_pair("local", worker=0)
    close()
    assert select.fabric_for(pair) is local
    assert local.interfaces(pair) == [{"name": "lo", "netns": None}] and local.link_cause(pair) is None
    ns = HostPair("netns:t-1", "netns", Host("a", "popen", "10.203.1.1", "kvf-p1", "nsa"),
                  Host("b", "popen", "10.203.1.2", "kvf-d1", "nsb"), details={"cpu_split": {"prefill": [0]}})
    assert netns.interfaces(ns) == [{"name": "kvf-p1", "netns": "nsa", "cpus": [0]},
                                    {"name": "kvf-d1", "netns": "nsb", "cpus": None}]
    assert hosts.interfaces(ns) == [] and hosts.link_cause(ns) is None


class _Toy:
    name = "toy-fabric"
    shares_clock = False
    probes_here = True
    needs_inventory = False

    def __init__(self):
        self.requests = []

    def open(self, request):
        self.requests.append(request)
        return select.get_fabric("local").open(request)[0], lambda: None

    def interfaces(self, pair):
        return []

    def link_cause(self, pair):
        return "toy link"


def test_a_registered_fabric_is_selectable(monkeypatch):
    monkeypatch.setattr(select, "_registered", dict(select._registered))
    with pytest.raises(FabricUsageError, match="unknown fabric 'toy-fabric'; valid: local, netns, hosts$"):
        select.get_fabric("toy-fabric")
    toy = _Toy()
    select.register_fabric(toy)
    assert select.fabric_names() == ("local", "netns", "hosts", "toy-fabric")
    pair, _ = select.open_pair("toy-fabric", worker=3, timeout_s=2.0)
    assert pair.name == "local" and toy.requests == [PairRequest(worker=3, timeout_s=2.0)]
    with pytest.raises(FabricUsageError, match="'netns' is built in"):
        select.register_fabric(type("N", (_Toy,), {"name": "netns"})())


@given(st.dictionaries(st.sampled_from(OFFLOAD_KEYS), st.booleans()))
def test_offloads_parse_the_same_from_text_and_mapping(offloads):
    text = ",".join(f"{k}={'on' if v else 'off'}" for k, v in offloads.items())
    assert parse_offloads(text) == parse_offloads(offloads) == offloads
    assert netns_kwargs({"offloads": text}).get("offloads", {}) == offloads


@pytest.mark.parametrize("value, message", [
    ("gro=maybe", "offload 'gro' needs =on or =off, got 'gro=maybe' (expected FEATURE=on|off"),
    ("lro=off", "unknown offload 'lro'; valid: gro, gso, tso"),
    ({"LRO": True}, "unknown offload 'lro'"),
])
def test_bad_offloads_name_the_item(value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("|", r"\|")):
        parse_offloads(value)
    with pytest.raises(ValueError, match="^--kv-netns-offloads: "):
        netns_kwargs({"offloads": value})
