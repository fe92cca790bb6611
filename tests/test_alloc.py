"""Per-xdist-worker pair selection (pure) and open_pair's argument checks."""
from __future__ import annotations

import pytest

from pytest_kvfabric.fabric.alloc import (
    FabricUsageError,
    check_worker_count,
    inventory_index,
    netns_index,
    pairs_for_auto,
    worker_count,
    worker_index,
)
from pytest_kvfabric.fabric.hosts import parse_inventory
from pytest_kvfabric.fabric.netns import netns_names, pair_addrs
from pytest_kvfabric.fabric.select import open_pair


def host(n: int) -> dict:
    return {"ssh": f"kv@h{n}", "data_addr": f"192.0.2.{n}", "interface": "eth1"}


def inventory(npairs: int):
    return parse_inventory({"pairs": [{"name": f"p{i}", "prefill": host(2 * i + 1), "decode": host(2 * i + 2)}
                                      for i in range(npairs)]}, "lab.yaml")


@pytest.mark.parametrize("env,expected", [
    ({}, 0), ({"PYTEST_XDIST_WORKER": ""}, 0), ({"PYTEST_XDIST_WORKER": "gw0"}, 0),
    ({"PYTEST_XDIST_WORKER": "gw7"}, 7), ({"PYTEST_XDIST_WORKER": "gw12"}, 12),
])
def test_worker_index(env, expected):
    assert worker_index(env) == expected


def test_worker_index_malformed():
    with pytest.raises(FabricUsageError, match="'master' is not of the form gwN"):
        worker_index({"PYTEST_XDIST_WORKER": "master"})


def test_worker_count():
    assert worker_count({}) == 1
    assert worker_count({"PYTEST_XDIST_WORKER_COUNT": "4"}) == 4
    with pytest.raises(FabricUsageError, match="not an integer"):
        worker_count({"PYTEST_XDIST_WORKER_COUNT": "auto"})


def test_netns_workers_get_distinct_names_and_addresses():
    idx = [netns_index(w) for w in range(4)]
    names = {n for i in idx for n in netns_names("kvf-", "42", i)}
    addrs = {a for i in idx for a in pair_addrs(i)}
    assert len(names) == 8 and len(addrs) == 8
    with pytest.raises(FabricUsageError, match="at most 256 workers"):
        netns_index(256)


def test_hosts_worker_n_takes_pair_n():
    inv = inventory(3)
    assert [inventory_index(w, 3, len(inv.pairs), inv.source) for w in range(3)] == [0, 1, 2]
    assert [inv.pairs[inventory_index(w, 3, 3, "lab.yaml")].name for w in range(3)] == ["p0", "p1", "p2"]


def test_more_workers_than_pairs():
    with pytest.raises(FabricUsageError) as ei:
        check_worker_count(4, 2, "lab.yaml")
    assert str(ei.value) == "4 workers but only 2 host pairs in lab.yaml"
    with pytest.raises(FabricUsageError, match="3 workers but only 2 host pairs in lab.yaml"):
        inventory_index(2, 1, 2, "lab.yaml")  # worker number itself proves there are >= 3


def test_pairs_for_auto():
    assert pairs_for_auto(inventory(3)) == 3
    assert pairs_for_auto(inventory(1)) == 1
    with pytest.raises(FabricUsageError, match="no pairs"):
        pairs_for_auto([])


def test_open_pair_usage_errors(tmp_path):
    with pytest.raises(FabricUsageError, match="unknown fabric 'rdma'; valid: local, netns, hosts"):
        open_pair("rdma", worker=0)
    with pytest.raises(FabricUsageError, match="needs an inventory: --kv-hosts PATH"):
        open_pair("hosts", worker=0)
    inv = tmp_path / "lab.yaml"
    inv.write_text("pairs:\n  - name: a\n    prefill: {ssh: kv@h1, data_addr: 192.0.2.1, interface: eth1}\n"
                   "    decode: {ssh: kv@h2, data_addr: 192.0.2.2, interface: eth1}\n")
    with pytest.raises(FabricUsageError, match=f"2 workers but only 1 host pairs in {inv}"):
        open_pair("hosts", worker=1, hosts_file=str(inv), nworkers=2)
    with pytest.raises(FabricUsageError, match="unknown netns option"):
        open_pair("netns", worker=0, netns_options={"speed": 1})
    with pytest.raises(FabricUsageError, match="--kv-netns-offloads: unknown offload 'lro'"):
        open_pair("netns", worker=0, netns_options={"offloads": "lro=off"})
    with pytest.raises(FabricUsageError, match="--kv-netns-offloads: unknown offload 'lro'"):
        open_pair("netns", worker=0, netns_options={"offloads": {"lro": False}})


def test_open_pair_hosts_worker_count_from_env(tmp_path, monkeypatch):
    inv = tmp_path / "lab.yaml"
    inv.write_text("pairs:\n  - name: a\n    prefill: {ssh: kv@h1, data_addr: 192.0.2.1, interface: eth1}\n"
                   "    decode: {ssh: kv@h2, data_addr: 192.0.2.2, interface: eth1}\n")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    with pytest.raises(FabricUsageError, match=f"3 workers but only 1 host pairs in {inv}"):
        open_pair("hosts", worker=0, hosts_file=str(inv))


def test_unavailable_is_a_fabric_unavailable():
    from pytest_kvfabric.fabric import select
    from pytest_kvfabric.fabric.netns import NetnsUnavailable

    assert issubclass(NetnsUnavailable, select.FabricUnavailable)
