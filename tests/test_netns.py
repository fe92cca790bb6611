"""The netns fabric on real namespaces. Prefix "kvft8-" keeps these apart from any running session."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pytest_kvfabric.errors import KvFabricError
from pytest_kvfabric.transports import ethtool_ioctl
from pytest_kvfabric.fabric import netns as nsmod
from pytest_kvfabric.fabric.netns import (
    NetnsPair,
    NetnsUnavailable,
    cleanup_stale,
    link_counters,
    list_netns,
    netns_pids,
    netns_unavailable_reason,
    parse_offloads,
)

PREFIX = "kvft8-"
TAG = f"t{os.getpid()}"
REASON = netns_unavailable_reason()
needs_netns = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def ns_run(ns: str, *args: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True,
                          timeout=timeout, check=check)


@pytest.fixture
def pair():
    p = NetnsPair.create(TAG, 7, prefix=PREFIX)
    try:
        yield p
    finally:
        p.destroy()


# --- pure / no root -------------------------------------------------------------------

def test_reason_names_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns_unavailable_reason() == "netns fabric needs root to create network namespaces (euid is 1000)"
    with pytest.raises(NetnsUnavailable, match="needs root"):
        NetnsPair.create(TAG, 0, prefix=PREFIX)


def test_names_addresses_and_spec():
    assert nsmod.netns_names("kvf-", "123", 4) == ("kvf-123-4p", "kvf-123-4d")
    assert nsmod.veth_names("kvf-", 4) == ("kvf-p4", "kvf-d4")
    assert nsmod.pair_addrs(4) == ("10.203.4.1", "10.203.4.2")
    with pytest.raises(ValueError, match="out of range"):
        nsmod.pair_addrs(256)
    with pytest.raises(ValueError, match="longer than 15"):
        nsmod.veth_names("kvf-much-too-long-", 1)
    spec = nsmod.netns_gateway_spec("kvf-1-0p", "/usr/bin/python3")
    assert spec.startswith("popen//python=") and spec.endswith("netns exec kvf-1-0p /usr/bin/python3")


def test_parse_offloads():
    assert parse_offloads("gro=off, tso=on") == {"gro": False, "tso": True}
    assert parse_offloads(None) == {}
    with pytest.raises(ValueError, match="unknown offload 'lro'; valid: gro, gso, tso"):
        parse_offloads("lro=off")
    with pytest.raises(ValueError, match="needs =on or =off"):
        parse_offloads("gro")


def test_non_root_process_gets_reason():
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another uid")
    # import as root (the interpreter lives under /root), then really drop to nobody
    code = ("import os\nfrom pytest_kvfabric.fabric.netns import NetnsPair, NetnsUnavailable\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n    NetnsPair.create('x', 0, prefix='kvft8-')\n"
            "except NetnsUnavailable as e:\n    print('REASON', e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "REASON netns fabric needs root to create network namespaces (euid is 65534)" in res.stdout, res.stderr


# --- real namespaces --------------------------------------------------------------------

@needs_netns
def test_pair_addresses_mtu_lo(pair):
    hp = pair.pair
    assert hp.fabric == "netns" and hp.prefill.netns in list_netns() and hp.decode.netns in list_netns()
    for host, addr in ((hp.prefill, "10.203.7.1"), (hp.decode, "10.203.7.2")):
        assert host.data_addr == addr
        out = ns_run(host.netns, "ip", "-o", "addr", "show", "dev", host.interface).stdout
        assert f"inet {addr}/24" in out
        link = ns_run(host.netns, "ip", "-o", "link", "show", "dev", host.interface).stdout
        assert "mtu 9000" in link and "state UP" in link
        lo = ns_run(host.netns, "ip", "-o", "link", "show", "dev", "lo").stdout
        assert ",UP" in lo
    # nothing of ours in the root namespace
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert hp.prefill.interface not in root and hp.decode.interface not in root


@needs_netns
def test_gateway_runs_inside_namespace(pair):
    import execnet

    gw = execnet.makegateway(pair.pair.decode.gateway_spec)
    try:
        ch = gw.remote_exec("import os; channel.send((os.stat('/proc/self/ns/net').st_ino, sorted(os.listdir('/sys/class/net'))))")
        ino, ifaces = ch.receive(timeout=20)
    finally:
        gw.exit()
    assert ino == os.stat(f"/run/netns/{pair.ns_decode}").st_ino
    assert ifaces == sorted(["lo", pair.if_decode])


SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], 5599)); s.listen(1); s.settimeout(20)
    print("ready", flush=True)
    c, _ = s.accept(); c.settimeout(20); got = 0
    while True:
        b = c.recv(1 << 20)
        if not b: break
        got += len(b)
    print(got, flush=True)
""")
CLIENT = textwrap.dedent("""
    import socket, sys
    c = socket.create_connection((sys.argv[1], 5599), timeout=20)
    n = int(sys.argv[2]); chunk = b"k" * (1 << 20); left = n
    while left:
        left -= c.send(chunk[:min(left, len(chunk))])
    c.close()
""")


@needs_netns
def test_tcp_transfer_crosses_veth_not_loopback(pair):
    nbytes = 16 * 1000 * 1000
    hp = pair.pair
    before = {k: link_counters(ns, ifn) for k, ns, ifn in (
        ("pv", hp.prefill.netns, hp.prefill.interface), ("dv", hp.decode.netns, hp.decode.interface),
        ("pl", hp.prefill.netns, "lo"), ("dl", hp.decode.netns, "lo"))}
    srv = subprocess.Popen(["ip", "netns", "exec", hp.decode.netns, sys.executable, "-c", SERVER, hp.decode.data_addr],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        ns_run(hp.prefill.netns, sys.executable, "-c", CLIENT, hp.decode.data_addr, str(nbytes))
        out, _ = srv.communicate(timeout=30)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait(5)
    assert int(out.strip()) == nbytes
    after = {k: link_counters(ns, ifn) for k, ns, ifn in (
        ("pv", hp.prefill.netns, hp.prefill.interface), ("dv", hp.decode.netns, hp.decode.interface),
        ("pl", hp.prefill.netns, "lo"), ("dl", hp.decode.netns, "lo"))}
    assert after["pv"]["tx_bytes"] - before["pv"]["tx_bytes"] >= nbytes
    assert after["dv"]["rx_bytes"] - before["dv"]["rx_bytes"] >= nbytes
    for k in ("pl", "dl"):
        assert after[k]["tx_bytes"] - before[k]["tx_bytes"] < nbytes // 100


@needs_netns
def test_tbf_shaping_and_offloads_applied():
    p = NetnsPair.create(TAG, 8, mtu=1500, rate_mbit=200, offloads={"gro": False, "tso": False}, prefix=PREFIX)
    try:
        for ns, ifn in ((p.ns_prefill, p.if_prefill), (p.ns_decode, p.if_decode)):
            qd = ns_run(ns, "tc", "qdisc", "show", "dev", ifn).stdout
            assert "qdisc tbf" in qd and "rate 200Mbit" in qd
            with ethtool_ioctl.socket_in_netns(ns) as s:  # the kernel's answer, no ethtool CLI needed
                feats = ethtool_ioctl.get_offloads(s, ifn)
            assert feats["gro"] == "off" and feats["tso"] == "off" and feats["gso"] == "on"
            assert "mtu 1500" in ns_run(ns, "ip", "-o", "link", "show", "dev", ifn).stdout
        assert p.pair.details["rate_mbit"] == 200 and p.pair.details["offloads"] == {"gro": "off", "tso": "off"}
    finally:
        p.destroy()


@needs_netns
def test_cpu_split_pins_each_agent_and_steers_its_receive_processing():
    # Each side gets its own half of the CPUs: the agent (taskset in its gateway command)
    # and the receive processing of its veth end (RPS), as two hosts would have.
    p = NetnsPair.create(TAG, 12, prefix=PREFIX, cpu_split=True)
    try:
        pre, dec = p.cpus
        assert sorted(pre + dec) == sorted(os.sched_getaffinity(0)) and not set(pre) & set(dec)
        assert p.pair.details["cpu_split"] == {"prefill": pre, "decode": dec}
        for ns, ifn, cpus, host in ((p.ns_prefill, p.if_prefill, pre, p.pair.prefill),
                                    (p.ns_decode, p.if_decode, dec, p.pair.decode)):
            mask = ns_run(ns, "cat", f"/sys/class/net/{ifn}/queues/rx-0/rps_cpus").stdout.strip()
            assert int(mask.replace(",", ""), 16) == sum(1 << c for c in cpus)
            cmd = host.gateway_spec.split("python=", 1)[1]
            got = subprocess.run([*cmd.split(), "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
            assert got == str(cpus)
    finally:
        p.destroy()
    plain = NetnsPair.create(TAG, 13, prefix=PREFIX)
    try:
        assert plain.cpus is None and plain.pair.details["cpu_split"] is None
        assert "taskset" not in plain.pair.decode.gateway_spec
    finally:
        plain.destroy()


def test_cpu_split_needs_two_cpus_and_masks_span_words():
    with pytest.raises(NetnsUnavailable, match="cpu_split needs at least 2 CPUs available to this process, found 1"):
        nsmod.split_cpus([3])
    assert nsmod.split_cpus([5, 1, 2]) == ([1], [2, 5])
    assert nsmod.cpu_mask([0]) == "00000001" and nsmod.cpu_mask([1, 3]) == "0000000a"
    assert nsmod.cpu_mask([0, 33]) == "00000002,00000001"


@needs_netns
def test_destroy_leaves_nothing():
    p = NetnsPair.create(TAG, 9, prefix=PREFIX)
    sleeper = subprocess.Popen(["ip", "netns", "exec", p.ns_decode, "sleep", "60"])
    try:
        for _ in range(200):  # bounded: until the sleeper has entered the namespace
            if sleeper.pid in netns_pids(p.ns_decode):
                break
            subprocess.run(["sleep", "0.01"])
        assert sleeper.pid in netns_pids(p.ns_decode)
        p.destroy()
        assert sleeper.wait(timeout=10) != 0  # killed by destroy
        assert p.ns_prefill not in list_netns() and p.ns_decode not in list_netns()
        assert not (nsmod.PID_DIR / f"{p.ns_prefill}.pid").exists()
        root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert p.if_prefill not in root and p.if_decode not in root
        p.destroy()  # idempotent
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(5)
        p.destroy()


@needs_netns
def test_cleanup_stale_only_dead_and_prefixed():
    dead_tag = f"dead{os.getpid()}"
    code = ("import os\nfrom pytest_kvfabric.fabric.netns import NetnsPair\n"
            f"NetnsPair.create({dead_tag!r}, 10, prefix={PREFIX!r})\nos._exit(0)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    dead = nsmod.netns_names(PREFIX, dead_tag, 10)
    live = NetnsPair.create(TAG, 11, prefix=PREFIX)
    other = f"kvfx8-keep-{os.getpid()}"  # not our prefix: must survive
    from pyroute2 import netns as pr_netns

    pr_netns.create(other)
    try:
        assert set(dead) <= set(list_netns())
        removed = cleanup_stale(PREFIX)
        assert set(dead) <= set(removed)  # (plus any leftover of an earlier killed test run)
        assert live.ns_prefill not in removed and other not in removed
        names = list_netns()
        assert not set(dead) & set(names)
        assert live.ns_prefill in names and live.ns_decode in names and other in names
        assert cleanup_stale(PREFIX) == []
    finally:
        live.destroy()
        pr_netns.remove(other)
        for name in dead:
            nsmod.remove_netns(name)


def test_cleanup_stale_refuses_empty_prefix():
    with pytest.raises(ValueError):
        cleanup_stale("")


@needs_netns
def test_link_counters_unknown_interface(pair):
    with pytest.raises(KvFabricError, match="'nope0' not found in netns kvft8-"):
        link_counters(pair.ns_prefill, "nope0")


@needs_netns
def test_open_pair_netns_and_closer():
    from pytest_kvfabric.fabric.select import open_pair

    hp, close = open_pair("netns", worker=12, netns_options={"mtu": 4000, "offloads": "gso=off"},
                          netns_prefix=PREFIX)
    try:
        assert hp.prefill.data_addr == "10.203.12.1" and hp.details["mtu"] == 4000
        fp = hp.details["fingerprint"]
        assert fp["prefill"]["nic"]["driver"] == "veth" and fp["decode"]["nic"]["mtu"] == 4000
        assert fp["prefill"]["nic"]["offloads"]["gso"] == "off"
        assert fp["prefill"]["kernel"] == os.uname().release
    finally:
        close()
    assert hp.prefill.netns not in list_netns() and hp.decode.netns not in list_netns()
    close()  # idempotent


HOLDER = textwrap.dedent("""
    import sys, time
    from pytest_kvfabric.fabric.select import open_pair
    hp, close = open_pair("netns", worker=int(sys.argv[1]), netns_prefix="kvft8-")
    print(hp.prefill.netns, hp.decode.netns, flush=True)
    time.sleep(60)
""")


@needs_netns
@pytest.mark.parametrize("sig,worker", [("TERM", 15), ("KILL", 16)])
def test_session_killed(sig, worker):
    """SIGTERM: the holder tears down itself. SIGKILL: leftovers stay until cleanup_stale()."""
    import signal

    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(worker)], stdout=subprocess.PIPE, text=True)
    names: list[str] = []
    try:
        names = proc.stdout.readline().split()
        assert len(names) == 2 and set(names) <= set(list_netns())
        proc.send_signal(getattr(signal, f"SIG{sig}"))
        assert proc.wait(timeout=30) == -getattr(signal, f"SIG{sig}")
        if sig == "TERM":
            assert not set(names) & set(list_netns())
        else:
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
def test_scenario_crosses_the_veth_and_leaves_nothing():
    """End to end: a small tcp scenario between agents inside the two namespaces."""
    from pytest_kvfabric.emulator.plan import build_plan
    from pytest_kvfabric.core.profiles import load_gpu, load_model
    from pytest_kvfabric.run.runner import AgentPair
    from pytest_kvfabric.core.scenario import Distribution, Scenario, Workload

    sc = Scenario(id="netns-e2e", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"),
                  workload=Workload(isl=Distribution.fixed(64), osl=Distribution.fixed(8), requests=2),
                  pool_bytes=16 << 20, transport="tcp", seed=5)
    plan = build_plan(sc)
    p = NetnsPair.create(TAG, 17, prefix=PREFIX)
    hp = p.pair
    ends = {"pv": (hp.prefill.netns, hp.prefill.interface), "dv": (hp.decode.netns, hp.decode.interface),
            "pl": (hp.prefill.netns, "lo"), "dl": (hp.decode.netns, "lo")}
    pids: dict[str, int] = {}
    try:
        before = {k: link_counters(*v) for k, v in ends.items()}
        with AgentPair(hp, timeout_s=60) as agents:
            res = agents.run(sc)
            pids = dict(agents.pids)
            # the agents really live in our namespaces
            for role, ns in (("prefill", hp.prefill.netns), ("decode", hp.decode.netns)):
                assert os.stat(f"/proc/{pids[role]}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
        after = {k: link_counters(*v) for k, v in ends.items()}
    finally:
        p.destroy()
    assert res.integrity["errors"] == 0 and res.bytes == plan.total_bytes > 0
    assert res.pair == hp.name
    assert after["pv"]["tx_bytes"] - before["pv"]["tx_bytes"] >= res.bytes
    assert after["dv"]["rx_bytes"] - before["dv"]["rx_bytes"] >= res.bytes
    for k in ("pl", "dl"):
        assert after[k]["tx_bytes"] - before[k]["tx_bytes"] < res.bytes // 100
    # nothing of ours remains: no namespace, no link, no agent process
    assert hp.prefill.netns not in list_netns() and hp.decode.netns not in list_netns()
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert hp.prefill.interface not in root and hp.decode.interface not in root
    for pid in pids.values():
        assert nsmod._starttime(pid) is None or nsmod._is_zombie(pid)


@needs_netns
def test_two_workers_get_two_distinct_pairs():
    from pytest_kvfabric.fabric.select import open_pair

    a, close_a = open_pair("netns", worker=20, netns_prefix=PREFIX)
    try:
        b, close_b = open_pair("netns", worker=21, netns_prefix=PREFIX)  # cleanup_stale spares a: creator alive
        try:
            assert a.name != b.name
            assert {a.prefill.netns, a.decode.netns}.isdisjoint({b.prefill.netns, b.decode.netns})
            assert {a.prefill.data_addr, a.decode.data_addr}.isdisjoint({b.prefill.data_addr, b.decode.data_addr})
            assert {a.prefill.netns, a.decode.netns, b.prefill.netns, b.decode.netns} <= set(list_netns())
        finally:
            close_b()
    finally:
        close_a()
    assert not {a.prefill.netns, b.decode.netns} & set(list_netns())


@needs_netns
def test_forked_child_signal_does_not_tear_down():
    """pyroute2 forks helpers that inherit our SIGTERM handler: only the creator may tear down."""
    import signal

    from pytest_kvfabric.fabric.select import open_pair

    hp, close = open_pair("netns", worker=22, netns_prefix=PREFIX)
    try:
        pid = os.fork()
        if pid == 0:  # child: die by SIGTERM through the inherited handler
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        assert {hp.prefill.netns, hp.decode.netns} <= set(list_netns())
    finally:
        close()
    assert not {hp.prefill.netns, hp.decode.netns} & set(list_netns())


@needs_netns
def test_a_link_set_down_mid_run_is_named_as_the_cause(pair):
    """Over a dead link a run can only time out; the error must say the link went down."""
    import threading
    import time

    from pytest_kvfabric.errors import TransportError
    from pytest_kvfabric.fabric.netns import links_down
    from pytest_kvfabric.core.profiles import load_gpu, load_model
    from pytest_kvfabric.run.runner import AgentPair
    from pytest_kvfabric.core.scenario import Distribution, Scenario, Workload

    hp = pair.pair
    assert links_down([(hp.prefill.netns, hp.prefill.interface)]) == []
    sc = Scenario(id="linkdown", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"),
                  workload=Workload(isl=Distribution.fixed(4096), requests=100), pool_bytes=16 << 20)
    ap = AgentPair(hp, timeout_s=4.0)
    # Cut on the first progress report: the run is under way however long setup took on a
    # loaded host (a fixed sleep after the pid sometimes cut before or after the run).
    running, over = threading.Event(), threading.Event()
    ap.on_progress = lambda _p: running.set()

    def cut() -> None:
        if running.wait(timeout=120) and not over.is_set():
            ns_run(hp.prefill.netns, "ip", "link", "set", "dev", hp.prefill.interface, "down")

    th = threading.Thread(target=cut, daemon=True)
    th.start()
    try:
        with pytest.raises(TransportError) as info:
            ap.run(sc)
    finally:
        over.set()  # the run ended: a late wake-up must not act
        running.set()
        th.join(timeout=25)
        ap.close()
    msg = str(info.value)
    assert msg.startswith(f"link {hp.prefill.interface} in netns {hp.prefill.netns} is down (set down)"), msg
