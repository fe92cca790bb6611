"""Host inventory: schema errors, gateway specs, reachability checks (loopback and our own namespaces only)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.fabric.base import Host
from pytest_kvfabric.fabric.hosts import (
    HostUnreachable,
    check_host,
    fingerprint,
    load_inventory,
    parse_inventory,
    ssh_target,
)
from pytest_kvfabric.fabric.netns import NetnsPair, netns_unavailable_reason

GOOD = textwrap.dedent("""
    pairs:
      - name: lab-a
        prefill: {ssh: kv@10.0.0.11, port: 2222, python: /opt/kv/bin/python, data_addr: 192.168.50.11, interface: enp65s0f0}
        decode: {ssh: kv@10.0.0.12, data_addr: 192.168.50.12, interface: enp65s0f0}
      - name: lab-b
        prefill: {ssh: h3, data_addr: "fd00::3", interface: eth1, ssh_options: [ProxyJump=bastion]}
        decode: {ssh: h4, data_addr: "fd00::4", interface: eth1}
""")


def write(tmp_path, text: str):
    p = tmp_path / "hosts.yaml"
    p.write_text(text)
    return p


def error_of(tmp_path, text: str) -> ProfileError:
    p = write(tmp_path, text)
    with pytest.raises(ProfileError) as ei:
        load_inventory(p)
    assert ei.value.source == str(p)
    assert str(p) in str(ei.value)
    return ei.value


def test_good_inventory_and_specs(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    assert [p.name for p in inv.pairs] == ["lab-a", "lab-b"]
    hp = inv.pairs[0].host_pair(inv.source)
    assert hp.fabric == "hosts" and hp.prefill.name == "lab-a/prefill"
    assert hp.prefill.gateway_spec == ("ssh=-o BatchMode=yes -o ConnectTimeout=10 -p 2222 kv@10.0.0.11"
                                       "//python=/opt/kv/bin/python")
    assert hp.decode.gateway_spec.endswith("-p 22 kv@10.0.0.12//python=python3")
    assert "StrictHostKeyChecking" not in hp.prefill.gateway_spec
    b = inv.pairs[1].host_pair()
    assert "-o ProxyJump=bastion" in b.prefill.gateway_spec and b.prefill.data_addr == "fd00::3"
    assert ssh_target(hp.prefill.gateway_spec) == ("10.0.0.11", 2222)
    assert ssh_target(b.prefill.gateway_spec) == ("h3", 22)
    assert ssh_target("popen//python=python3") is None


def test_identity(tmp_path):
    key = tmp_path / "id_kv"
    key.write_text("not a real key")
    inv = load_inventory(write(tmp_path, GOOD.replace("port: 2222,", f"port: 2222, identity: {key},")))
    assert f"-i {key} kv@10.0.0.11" in inv.pairs[0].host_pair().prefill.gateway_spec
    e = error_of(tmp_path, GOOD.replace("port: 2222,", "port: 2222, identity: /nonexistent/key,"))
    assert e.field == "pairs[0] (lab-a).prefill.identity" and "not found" in e.reason


def test_bad_yaml(tmp_path):
    e = error_of(tmp_path, "pairs: [ {name: a, prefill: {")
    assert "not valid YAML" in e.reason


def test_missing_field(tmp_path):
    e = error_of(tmp_path, GOOD.replace("data_addr: 192.168.50.12, ", ""))
    assert e.field == "pairs[0].decode.data_addr" and e.reason == "missing required field"


def test_wrong_type(tmp_path):
    e = error_of(tmp_path, GOOD.replace("port: 2222", "port: '2222'"))
    assert e.field == "pairs[0].prefill.port" and "expected integer" in e.reason


def test_unknown_field_and_empty(tmp_path):
    e = error_of(tmp_path, GOOD.replace("port: 2222", "prot: 2222"))
    assert "unknown field 'prot'" in e.reason
    e = error_of(tmp_path, "pairs: []")
    assert e.field == "pairs" and "must not be empty" in e.reason


@pytest.mark.parametrize("old,new,field,reason", [
    ("data_addr: 192.168.50.11", "data_addr: not-an-ip", "pairs[0] (lab-a).prefill.data_addr", "IPv4/IPv6"),
    ("name: lab-b", "name: lab-a", "pairs[1].name", "duplicate pair name 'lab-a'"),
    ("ssh: h4", "ssh: 'h4 -oX'", "pairs[1] (lab-b).decode.ssh", "whitespace"),
    ("ProxyJump=bastion", "StrictHostKeyChecking=no", "pairs[1] (lab-b).prefill.ssh_options[0]",
     "host key checking is left to your ssh configuration"),
])
def test_semantic_errors(tmp_path, old, new, field, reason):
    e = error_of(tmp_path, GOOD.replace(old, new))
    assert e.field == field and reason in e.reason


def test_parse_inventory_top_level():
    with pytest.raises(ProfileError, match="inv.yaml: expected a mapping"):
        parse_inventory(["x"], "inv.yaml")


def local_host(interface: str) -> Host:
    return Host("local/prefill", f"popen//python={sys.executable}", "127.0.0.1", interface)


def test_unknown_interface_on_host():
    with pytest.raises(ProfileError) as ei:
        check_host(local_host("kvfnope0"), 20, source="hosts.yaml", field_path="pairs[0] (a).prefill.interface")
    msg = str(ei.value)
    assert msg.startswith("hosts.yaml: pairs[0] (a).prefill.interface: interface 'kvfnope0' not found on host local/prefill")
    assert "it has: " in msg and "lo" in msg
    with pytest.raises(HostUnreachable, match="'kvfnope0' not found"):
        fingerprint(local_host("kvfnope0"), 20)


def test_fingerprint_local():
    fp = fingerprint(local_host("lo"), 20)
    assert fp["kernel"] == os.uname().release and fp["nic"]["name"] == "lo" and fp["nic"]["mtu"] > 0
    assert json.loads(json.dumps(fp)) == fp  # plain data for the JSON report


def test_unreachable_loopback_port_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    h = Host("lab/decode", f"ssh=-o BatchMode=yes -p {port} kv@127.0.0.1//python=python3", "127.0.0.1", "lo")
    with pytest.raises(HostUnreachable, match=rf"host lab/decode \(127.0.0.1:{port}\): cannot reach SSH: Connection refused"):
        check_host(h, 2.0)


CHECK = textwrap.dedent("""
    import sys, time
    from pytest_kvfabric.fabric.base import Host
    from pytest_kvfabric.fabric.hosts import check_host, HostUnreachable
    h = Host("lab/decode", "ssh=-o BatchMode=yes kv@" + sys.argv[1] + "//python=python3", sys.argv[1], "eth0")
    t = time.monotonic()
    try:
        check_host(h, float(sys.argv[2]))
    except HostUnreachable as e:
        print("%.3f %s" % (time.monotonic() - t, e))
""")


@pytest.mark.skipif(netns_unavailable_reason() is not None, reason=str(netns_unavailable_reason()))
def test_unreachable_in_our_namespace_within_timeout():
    p = NetnsPair.create(f"h{os.getpid()}", 13, prefix="kvft8-")
    try:
        def run(addr: str, timeout_s: float) -> tuple[float, str]:
            out = subprocess.run(["ip", "netns", "exec", p.ns_prefill, sys.executable, "-c", CHECK, addr, str(timeout_s)],
                                 capture_output=True, text=True, timeout=60, check=True).stdout.strip()
            elapsed, _, msg = out.partition(" ")
            return float(elapsed), msg

        # the decode namespace answers but nothing listens on 22
        elapsed, msg = run(p.addr_decode, 3.0)
        assert msg == f"host lab/decode ({p.addr_decode}:22): cannot reach SSH: Connection refused"
        # an address of our subnet that nobody owns: no answer at all, bounded by the timeout
        t0 = time.monotonic()
        elapsed, msg = run("10.203.13.9", 1.0)
        assert msg.startswith("host lab/decode (10.203.13.9:22): cannot reach SSH: ")
        assert msg.endswith(("no answer within 1 s", "No route to host"))
        assert elapsed < 1.0 + 5.0  # bounded by the timeout (plus scheduling slack), not ssh's defaults
        assert time.monotonic() - t0 < 60
    finally:
        p.destroy()
