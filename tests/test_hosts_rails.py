"""The host inventory's `rails`: validation (Hypothesis), CPU sets, the layout, probe of each rail NIC."""
from __future__ import annotations

import ipaddress
import os
import sys
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.fabric.alloc import FabricUsageError
from pytest_kvfabric.fabric.base import Host, PairRequest
from pytest_kvfabric.fabric.hosts import (HostsFabric, HostUnreachable, build_layout, fingerprint, load_inventory,
                                          parse_inventory, probe_host, rail_cpus)
from pytest_kvfabric.fabric.select import layout_interfaces

RAILS = textwrap.dedent("""
    pairs:
      - name: rail-lab
        prefill:
          ssh: kv@10.0.0.11
          data_addr: 192.168.50.11
          interface: enp1s0
          rails:
            - {interface: enp1s0, data_addr: 192.168.50.11}
            - {interface: enp2s0, data_addr: 192.168.51.11, cpus: [6, 7]}
        decode:
          ssh: kv@10.0.0.12
          data_addr: 192.168.50.12
          interface: enp1s0
          rails:
            - {interface: enp1s0, data_addr: 192.168.50.12}
            - {interface: enp2s0, data_addr: 192.168.51.12}
""")


def write(tmp_path, text: str):
    p = tmp_path / "hosts.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path, text: str) -> ProfileError:
    p = write(tmp_path, text)
    with pytest.raises(ProfileError) as ei:
        load_inventory(p)
    assert str(p) in str(ei.value)
    return ei.value


def test_rails_parsed_and_pinned_spec(tmp_path):
    inv = load_inventory(write(tmp_path, RAILS))
    h = inv.pairs[0].prefill
    assert [(r.interface, r.data_addr, r.cpus) for r in h.rails] == [
        ("enp1s0", "192.168.50.11", None), ("enp2s0", "192.168.51.11", (6, 7))]
    assert h.gateway_spec(cpus=[6, 7]).endswith("kv@10.0.0.11//python=taskset -c 6,7 python3")
    assert h.gateway_spec().endswith("//python=python3")
    plain = RAILS.split("      rails:")[0] + "    decode: {ssh: h, data_addr: 10.0.0.2, interface: eth0}\n"
    assert load_inventory(write(tmp_path, plain)).pairs[0].prefill.rails == ()  # rails stay optional


@pytest.mark.parametrize("old,new,field,reason", [
    ("data_addr: 192.168.51.11,", "data_addr: nope,", "pairs[0] (rail-lab).prefill.rails[1].data_addr",
     "expected an IPv4/IPv6 address, got 'nope'"),
    ("{interface: enp2s0, data_addr: 192.168.51.12}", "{interface: enp1s0, data_addr: 192.168.51.12}",
     "pairs[0] (rail-lab).decode.rails[1].interface", "interface 'enp1s0' is already rail 0 of this host"),
    ("{interface: enp2s0, data_addr: 192.168.51.12}", "{interface: enp2s0, data_addr: 192.168.50.12}",
     "pairs[0] (rail-lab).decode.rails[1].data_addr", "data_addr '192.168.50.12' is already rail 0 of this host"),
    ("        - {interface: enp2s0, data_addr: 192.168.51.12}\n", "",
     "pairs[0] (rail-lab).decode.rails", "1 rails but prefill has 2"),
    ("cpus: [6, 7]", "cpus: [6, 6]", "pairs[0] (rail-lab).prefill.rails[1].cpus", "CPU listed twice"),
    ("interface: enp2s0, data_addr: 192.168.51.11", "interface: 'en p2', data_addr: 192.168.51.11",
     "pairs[0] (rail-lab).prefill.rails[1].interface", "not a valid interface name"),
    ("cpus: [6, 7]", "cpus: [-1]", "pairs[0].prefill.rails[1].cpus[0]", "must be >= 0, got -1"),
    ("cpus: [6, 7]", "cpu: [6]", "pairs[0].prefill.rails[1].cpu", "unknown field 'cpu'"),
])
def test_rail_errors_name_file_host_and_field(tmp_path, old, new, field, reason):
    assert old in RAILS
    e = error_of(tmp_path, RAILS.replace(old, new))
    assert e.field == field and reason in e.reason, (e.field, e.reason)


def test_empty_rails_list(tmp_path):
    e = error_of(tmp_path, RAILS.replace(
        "      rails:\n        - {interface: enp1s0, data_addr: 192.168.50.12}\n"
        "        - {interface: enp2s0, data_addr: 192.168.51.12}\n", "      rails: []\n"))
    assert e.field == "pairs[0].decode.rails" and "must not be empty" in e.reason


NAMES = st.sampled_from(["eth0", "eth1", "enp65s0f0", "ib0", "bad name", "a/b"])
ADDRS = st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1", "not-ip", "300.1.1.1"])


def _expected_error(rails: list[dict]) -> str | None:
    """The field the validator must name first, from the rules, written independently."""
    seen: set[tuple[str, str]] = set()
    for r, item in enumerate(rails):
        at = f"pairs[0] (p).prefill.rails[{r}]"
        if " " in item["interface"] or "/" in item["interface"]:
            return f"{at}.interface"
        try:
            addr = str(ipaddress.ip_address(item["data_addr"]))
        except ValueError:
            return f"{at}.data_addr"
        for key, value in (("interface", item["interface"]), ("data_addr", addr)):
            if (key, value) in seen:
                return f"{at}.{key}"
            seen.add((key, value))
        if "cpus" in item and len(set(item["cpus"])) != len(item["cpus"]):
            return f"{at}.cpus"
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rails=st.lists(st.fixed_dictionaries({"interface": NAMES, "data_addr": ADDRS},
                                            optional={"cpus": st.lists(st.integers(0, 7), min_size=1, max_size=3)}),
                      min_size=1, max_size=5))
def test_rails_validator_property(rails):
    host = {"ssh": "h", "data_addr": "10.9.9.9", "interface": "eth0"}
    doc = {"pairs": [{"name": "p", "prefill": dict(host, rails=rails),
                      "decode": dict(host, rails=[{"interface": f"x{r}", "data_addr": f"10.1.1.{r + 1}"}
                                                  for r in range(len(rails))])}]}
    doc = yaml.safe_load(yaml.safe_dump(doc))  # what a file would give
    want = _expected_error(rails)
    if want is None:
        inv = parse_inventory(doc, "inv.yaml")
        got = inv.pairs[0].prefill.rails
        assert [(r.interface, r.data_addr) for r in got] == [
            (i["interface"], str(ipaddress.ip_address(i["data_addr"]))) for i in rails]
    else:
        with pytest.raises(ProfileError) as ei:
            parse_inventory(doc, "inv.yaml")
        assert ei.value.source == "inv.yaml" and ei.value.field == want
        assert str(ei.value).startswith(f"inv.yaml: {want}: ")


def _fp(nodes: list[int | None], allowed: list[int]) -> dict:
    """A probe's answer (the shape _probe.probe returns) for a host with these rail NUMA nodes."""
    cpulists = {0: "0-3", 1: "4-7"}
    return {"cpus_allowed": allowed, "interfaces": ["enp1s0", "enp2s0"],
            "rails": [{"name": n, "mtu": 9000, "driver": "mlx5_core", "firmware": "28.39.1002", "numa_node": node,
                       **({"numa_cpus": cpulists[node]} if node is not None else {})}
                      for n, node in zip(["enp1s0", "enp2s0"], nodes)]}


def test_cpus_follow_the_nic_node_unless_the_inventory_says(tmp_path):
    inv = load_inventory(write(tmp_path, RAILS))
    pre, dec = inv.pairs[0].prefill, inv.pairs[0].decode
    # both NICs on node 1: its CPUs split between them; rail 1's inventory cpus win
    assert rail_cpus(pre, 2, _fp([1, 1], list(range(8)))) == [[4, 5], [6, 7]]
    assert rail_cpus(pre, 2, _fp([0, 0], list(range(8)))) == [[0, 1], [6, 7]]
    assert rail_cpus(dec, 2, _fp([0, 1], list(range(8)))) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert rail_cpus(dec, 2, _fp([None, None], [0, 1])) == [[0], [1]]  # no NUMA node: split the allowed set
    assert rail_cpus(dec, 1, _fp([None, None], [0, 1])) == [None]  # every allowed CPU: not pinned
    lay = build_layout(inv, 0, 2, {"prefill": _fp([0, 1], list(range(8))), "decode": _fp([0, 0], list(range(8)))})
    assert lay.rails == 2 and lay.topology == (1, 1)
    assert [h.data_addr for h in lay.decode[0]] == ["192.168.50.12", "192.168.51.12"]
    assert "python=taskset -c 0,1 python3" in lay.decode[0][0].gateway_spec  # node 0 split between 2 rails
    rows = layout_interfaces(lay)
    assert [(r["role"], r["rail"], r["name"], r["cpus"], r["driver"], r["firmware"], r["mtu"], r["numa_node"])
            for r in rows] == [
        ("prefill", 0, "enp1s0", [0, 1, 2, 3], "mlx5_core", "28.39.1002", 9000, 0),
        ("prefill", 1, "enp2s0", [6, 7], "mlx5_core", "28.39.1002", 9000, 1),
        ("decode", 0, "enp1s0", [0, 1], "mlx5_core", "28.39.1002", 9000, 0),
        ("decode", 1, "enp2s0", [2, 3], "mlx5_core", "28.39.1002", 9000, 0)]
    assert lay.flow_pair(0, 0, 1).prefill.interface == "enp2s0"


def test_probe_reports_each_rail_nic_and_a_missing_one_is_named():
    local = Host("lab/prefill", f"popen//python={sys.executable}", "127.0.0.1", "lo")
    fp = probe_host(local, 20, ["lo"])
    assert fp["rails"][0]["name"] == "lo" and fp["rails"][0]["mtu"] > 0 and fp["rails"][0]["numa_node"] is None
    assert fp["cpus_allowed"] == sorted(os.sched_getaffinity(0))
    with pytest.raises(HostUnreachable, match=r"rail interface\(s\) 'kvfnope1' not found on host lab/prefill"):
        fingerprint(local, 20, rails=["lo", "kvfnope1"])


def test_open_layout_usage_errors(tmp_path):
    path = str(write(tmp_path, RAILS))
    fab = HostsFabric()
    with pytest.raises(FabricUsageError, match=r"--kv-rails 3: .*hosts.yaml: pairs\[0\] \(rail-lab\) lists 2 rails"):
        fab.open_layout(PairRequest(worker=0, hosts_file=path, nworkers=1, rails=3))
    with pytest.raises(FabricUsageError, match=r"topology \(2, 1\) \(several instances\) needs --kv-fabric=netns"):
        fab.open_layout(PairRequest(worker=0, hosts_file=path, nworkers=1, topology=(2, 1)))
