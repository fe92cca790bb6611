"""netns layouts on real namespaces: rails (N veths), xPyD instances on a bridge, teardown.

Prefix "kvftr-" keeps these apart from other tests and from running sessions."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pytest_kvfabric.fabric import netns as nsmod
from pytest_kvfabric.fabric.alloc import FabricUsageError
from pytest_kvfabric.fabric.base import PairRequest
from pytest_kvfabric.fabric.netns import cleanup_stale, link_counters, list_netns, netns_unavailable_reason
from pytest_kvfabric.fabric.netns_layout import NetnsLayout

PREFIX = "kvftr-"
TAG = f"t{os.getpid()}"
REASON = netns_unavailable_reason()
needs_netns = pytest.mark.skipif(REASON is not None, reason=str(REASON))

# Runs inside an agent's gateway (its netns, its taskset): receive or send `n` bytes on the data
# address, and say which CPUs the process may use.
AGENT = textwrap.dedent("""
    import os, socket
    role, addr, n = channel.receive()
    cpus = sorted(os.sched_getaffinity(0))
    if role == "listen":
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, 5601)); s.listen(1); s.settimeout(20)
        channel.send(("ready", cpus))
        c, _ = s.accept(); c.settimeout(20); got = 0
        while True:
            b = c.recv(1 << 20)
            if not b: break
            got += len(b)
        channel.send(got)
    else:
        c = socket.create_connection((addr, 5601), timeout=20)
        c.sendall(b"r" * n); c.close()
        channel.send(("sent", cpus))
""")


def _move(sender, receiver, nbytes: int) -> tuple[list[int], list[int]]:
    """nbytes from `sender` to `receiver` Host, each in its own agent gateway; their CPU sets."""
    import execnet

    group = execnet.Group()
    try:
        rx = group.makegateway(receiver.gateway_spec).remote_exec(AGENT)
        rx.send(("listen", receiver.data_addr, 0))
        ready, rcpus = rx.receive(timeout=30)
        tx = group.makegateway(sender.gateway_spec).remote_exec(AGENT)
        tx.send(("send", receiver.data_addr, nbytes))
        _, scpus = tx.receive(timeout=30)
        assert rx.receive(timeout=30) == nbytes
        return scpus, rcpus
    finally:
        group.terminate(timeout=5)


@pytest.fixture
def rails2():
    nl = NetnsLayout.create(TAG, 41, 2, (1, 1), prefix=PREFIX, mtu=4000, offloads={"gro": False}, rate_mbit=4000)
    try:
        yield nl
    finally:
        nl.destroy()


@needs_netns
def test_rails_cross_their_own_veth_pinned_to_their_cpus(rails2):
    lay = rails2.layout
    assert lay.rails == 2 and lay.topology == (1, 1)
    assert {h.netns for h in lay.prefill[0]} == {f"{PREFIX}{TAG}-41p0"}
    assert [h.data_addr for h in lay.decode[0]] == ["10.204.41.129", "10.205.41.129"]
    # every rail's MTU and offloads, in both namespaces; nothing of ours in the root namespace
    for h in lay.prefill[0] + lay.decode[0]:
        assert subprocess.run(["ip", "netns", "exec", h.netns, "cat", f"/sys/class/net/{h.interface}/mtu"],
                              capture_output=True, text=True, check=True).stdout.strip() == "4000"
    from pytest_kvfabric.transports import ethtool_ioctl

    for h in lay.prefill[0] + lay.decode[0]:  # offloads and the tbf rate on every rail's both ends
        with ethtool_ioctl.socket_in_netns(h.netns) as sock:
            assert ethtool_ioctl.get_offloads(sock, h.interface)["gro"] == "off"
        qd = subprocess.run(["tc", "-n", h.netns, "qdisc", "show", "dev", h.interface], capture_output=True,
                            text=True, check=True).stdout
        assert qd.startswith("qdisc tbf") and "rate 4Gbit" in qd, qd
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert not any(h.interface in root for h in lay.prefill[0] + lay.decode[0])
    sizes = [3_000_000, 9_000_000]  # different per rail: each counter shows its own rail's bytes
    before = [link_counters(h.netns, h.interface) for h in lay.prefill[0]]
    cpus = [_move(lay.prefill[0][r], lay.decode[0][r], sizes[r]) for r in range(2)]
    after = [link_counters(h.netns, h.interface) for h in lay.prefill[0]]
    for r in range(2):
        sent = after[r]["tx_bytes"] - before[r]["tx_bytes"]
        assert sizes[r] <= sent < sizes[r] * 1.05 + 200_000, (r, sent)
    allowed = sorted(os.sched_getaffinity(0))
    want = [[c] for c in allowed[:2]] if len(allowed) >= 2 else [allowed, allowed]
    if len(allowed) > 2:  # two slices of the allowed set
        from pytest_kvfabric.fabric.rails import split_even
        want = split_even(allowed, 2)
    assert [c[0] for c in cpus] == want and [c[1] for c in cpus] == want


@pytest.fixture
def incast():
    nl = NetnsLayout.create(TAG, 42, 1, (2, 1), prefix=PREFIX, rate_mbit=800)
    try:
        yield nl
    finally:
        nl.destroy()


@needs_netns
def test_instances_meet_in_one_bridge_queue_shaped_towards_decode(incast):
    lay = incast.layout
    assert lay.topology == (2, 1) and lay.rails == 1
    bns = incast.ns_bridge
    assert bns == f"{PREFIX}{TAG}-42b" and bns in list_netns()
    links = subprocess.run(["ip", "-n", bns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"{PREFIX}br0" in links
    for port in ("bp0r0", "bp1r0", "bd0r0"):
        assert f"master {PREFIX}br0" in next(l for l in links.splitlines() if f"{PREFIX}{port}@" in l)
    qd = subprocess.run(["tc", "-n", bns, "qdisc", "show"], capture_output=True, text=True, check=True).stdout
    shaped = [l for l in qd.splitlines() if l.startswith("qdisc tbf")]
    assert len(shaped) == 1 and f"dev {PREFIX}bd0r0" in shaped[0]  # only the port towards decode
    # both prefill instances reach the one decode instance through the bridge; the decode
    # port's counter carries both flows (the shared queue)
    port_before = link_counters(bns, f"{PREFIX}bd0r0")
    for p in range(2):
        _move(lay.prefill[p][0], lay.decode[0][0], 2_000_000)
    port_after = link_counters(bns, f"{PREFIX}bd0r0")
    assert port_after["tx_bytes"] - port_before["tx_bytes"] >= 4_000_000
    assert lay.details["rate_on"] == "bridge port towards each decode instance"
    # the flow pair of prefill 1 -> decode 0 knows its agents, rail and bridge
    from pytest_kvfabric.fabric.netns_fabric import NetnsFabric

    pair = lay.flow_pair(1, 0, 0)
    ifs = NetnsFabric().interfaces(pair)
    assert [(i["role"], i["instance"], i["rail"]) for i in ifs] == [("prefill", 1, 0), ("decode", 0, 0)]
    assert NetnsFabric().link_cause(pair) is None
    subprocess.run(["ip", "-n", bns, "link", "set", f"{PREFIX}bd0r0", "down"], check=True)
    assert f"link {PREFIX}bd0r0 in netns {bns} is down (set down)" in NetnsFabric().link_cause(pair)


@needs_netns
def test_destroy_removes_every_namespace_and_bridge():
    nl = NetnsLayout.create(TAG, 43, 2, (2, 2), prefix=PREFIX)
    names = list(nl.namespaces)
    assert len(names) == 5 and set(names) <= set(list_netns())
    nl.destroy()
    assert not set(names) & set(list_netns())
    assert not any((nsmod.PID_DIR / f"{n}.pid").exists() for n in names)
    nl.destroy()  # idempotent


HOLDER = textwrap.dedent("""
    import sys
    from pytest_kvfabric.fabric.base import PairRequest
    from pytest_kvfabric.fabric.select import open_layout
    lay, close = open_layout("netns", PairRequest(worker=int(sys.argv[1]), netns_prefix="kvftr-",
                                                  rails=2, topology=(2, 1)))
    print(" ".join(lay.details["netns"]), flush=True)
    sys.stdin.readline()
""")


@needs_netns
@pytest.mark.parametrize("sig,worker", [("TERM", 44), ("KILL", 45)])
def test_layout_session_killed_leaves_nothing(sig, worker):
    """SIGTERM: the holder tears down. SIGKILL: cleanup_stale() removes every namespace, bridge one included."""
    import signal

    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(worker)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    names: list[str] = []
    try:
        names = proc.stdout.readline().split()
        assert len(names) == 4 and names[-1].endswith(f"-{worker}b") and set(names) <= set(list_netns())
        proc.send_signal(getattr(signal, f"SIG{sig}"))
        assert proc.wait(timeout=30) == -getattr(signal, f"SIG{sig}")
        if sig == "KILL":
            assert set(names) <= set(list_netns())
            assert set(names) <= set(cleanup_stale(PREFIX))
        assert not set(names) & set(list_netns())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for name in names:
            nsmod.remove_netns(name)


@needs_netns
def test_open_layout_records_every_rails_nic():
    from pytest_kvfabric.fabric.select import layout_interfaces, open_layout

    lay, close = open_layout("netns", PairRequest(worker=46, netns_prefix=PREFIX, rails=2,
                                                  netns_options={"mtu": 3000}))
    try:
        fp = lay.details["fingerprint"]
        assert sorted(fp) == ["decode0", "prefill0"]
        for key, side in fp.items():
            assert [n["name"] for n in side["rails"]] == [f"{PREFIX}{key[0]}0r{i}" for i in range(2)]
            assert all(n["driver"] == "veth" and n["mtu"] == 3000 and n["numa_node"] is None for n in side["rails"])
        ifs = layout_interfaces(lay)
        assert sorted((i["role"], i["rail"], i["name"]) for i in ifs) == [
            ("decode", 0, f"{PREFIX}d0r0"), ("decode", 1, f"{PREFIX}d0r1"),
            ("prefill", 0, f"{PREFIX}p0r0"), ("prefill", 1, f"{PREFIX}p0r1")]
        assert all(i["mtu"] == 3000 and i["driver"] == "veth" and "firmware" in i for i in ifs)
        from pytest_kvfabric.fabric.netns_fabric import NetnsFabric

        flow = NetnsFabric().interfaces(lay.flow_pair(0, 0, 1))  # what a case of the flow records
        assert [(i["name"], i["rail"], i["mtu"], i["driver"]) for i in flow] == [
            (f"{PREFIX}p0r1", 1, 3000, "veth"), (f"{PREFIX}d0r1", 1, 3000, "veth")]
    finally:
        close()
    assert not set(lay.details["netns"]) & set(list_netns())


def test_open_layout_bad_shape_is_a_usage_error():
    from pytest_kvfabric.fabric.select import open_layout

    with pytest.raises(FabricUsageError, match="rails must be an integer in 1..16, got 17"):
        open_layout("netns", PairRequest(worker=47, netns_prefix=PREFIX, rails=17))
    with pytest.raises(FabricUsageError, match="topology: decode instances must be in 1..100, got 0"):
        open_layout("netns", PairRequest(worker=47, netns_prefix=PREFIX, topology=(1, 0)))



def test_a_fabric_without_open_layout_serves_the_plain_pair_only(monkeypatch):
    from pytest_kvfabric.fabric import select
    from pytest_kvfabric.fabric.select import open_layout

    class PairOnly:  # a plug-in's fabric that predates layouts: open() only
        name, shares_clock, probes_here, needs_inventory = "pair-only-test", True, True, False

        def open(self, request):
            return select.get_fabric("local").open(request)

    monkeypatch.setattr(select, "_registered", dict(select._registered))  # the registration ends with the test
    select.register_fabric(PairOnly())
    with pytest.raises(FabricUsageError, match="fabric 'pair-only-test' cannot place rails=2"):
        open_layout("pair-only-test", PairRequest(worker=0, rails=2))
    layout, close = open_layout("pair-only-test", PairRequest(worker=0))
    close()
    assert (layout.rails, layout.topology) == (1, (1, 1))


@needs_netns
def test_a_failure_while_building_removes_what_was_made(monkeypatch):
    """Half-built (namespaces and the bridge made, a link's setup fails): all of it goes, records too."""
    calls = {"n": 0}
    real = NetnsLayout._configure

    def failing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("injected: link setup failed")
        return real(self, *a, **kw)

    monkeypatch.setattr(NetnsLayout, "_configure", failing)
    before = set(list_netns())
    with pytest.raises(nsmod.NetnsUnavailable, match="cannot create netns layout .*injected: link setup failed"):
        NetnsLayout.create(TAG, 48, 1, (2, 1), prefix=PREFIX)
    assert calls["n"] == 2
    assert not {n for n in set(list_netns()) - before if n.startswith(f"{PREFIX}{TAG}-48")}
    assert not list(nsmod.PID_DIR.glob(f"{PREFIX}{TAG}-48*.pid"))
