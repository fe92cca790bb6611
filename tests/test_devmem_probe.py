"""devmem capability probe: each missing piece has its own reason; the real kernel answers."""
from __future__ import annotations

import errno
import mmap
import os

import pytest

from pytest_kvfabric.errors import TransportError
from pytest_kvfabric.transports import registry
from pytest_kvfabric.transports.devmem import nic, udmabuf
from pytest_kvfabric.transports.devmem.probe import BindResult, ProbeInputs, decide, gather, parse_queues
from pytest_kvfabric.transports.devmem.transport import DevmemInitiator, DevmemTarget, DevmemTransport

ETHTOOL_N = """4 RX rings available
Total 2 rules

Filter: 1023
\tRule Type: TCP over IPv4
\tSrc IP addr: 0.0.0.0 mask: 255.255.255.255
\tDest IP addr: 0.0.0.0 mask: 255.255.255.255
\tTOS: 0x0 mask: 0xff
\tSrc port: 0 mask: 0xffff
\tDest port: 5201 mask: 0x0
\tAction: Direct to queue 15

Filter: 1022
\tRule Type: UDP over IPv4
\tDest port: 53 mask: 0x0
\tAction: Drop
"""
ETHTOOL_X = """RX flow hash indirection table for eth1 with 16 RX ring(s):
    0:      0     1     2     3     4     5     6     7
    8:      8     9    10    11    12    13    14     0
RSS hash key:
6d:5a:56:da
RSS hash function:
    toeplitz: on
"""
ETHTOOL_G = """Ring parameters for eth1:
Pre-set maximums:
RX:\t\t4096
Current hardware settings:
RX:\t\t1024
TCP data split:\ton
"""
ETHTOOL_I = """driver: bnxt_en
version: 6.18.0
firmware-version: 230.0.154.0/pkg 230.1.116.0
expansion-rom-version:
bus-info: 0000:3b:00.0
"""


def _ready_nic(**kw) -> nic.NicState:
    st = nic.NicState("eth1", 5, driver="bnxt_en", firmware="230.0", header_split="on",
                      header_split_source="ethtool netlink rings-get", rx_queues=16, ntuple="on",
                      rules=[nic.SteeringRule(1023, "TCP over IPv4", 5201, 15)],
                      rss_queues=set(range(15)))
    for k, v in kw.items():
        setattr(st, k, v)
    return st


def _ready(**kw) -> ProbeInputs:
    inp = ProbeInputs("eth1", ifindex=5, udmabuf_reason=None, netdev_ops=frozenset({1, 10, 13, 15}),
                      queues=[15], nic=_ready_nic(), port=5201,
                      bind_rx=BindResult(True, "udmabuf", binding_id=3),
                      bind_tx=BindResult(True, "udmabuf", binding_id=4))
    for k, v in kw.items():
        setattr(inp, k, v)
    return inp


# ---- parsers -----------------------------------------------------------------------------

def test_ethtool_parsers():
    rules = nic.parse_ethtool_n(ETHTOOL_N)
    assert rules == [nic.SteeringRule(1023, "TCP over IPv4", 5201, 15),
                     nic.SteeringRule(1022, "UDP over IPv4", 53, None)]
    assert nic.parse_ethtool_x(ETHTOOL_X) == set(range(15))
    assert nic.parse_ethtool_x("RX flow hash indirection table for eth0 with 1 RX ring(s):\n"
                               "Operation not supported\nRSS hash key:\n") is None
    assert nic.parse_ethtool_g(ETHTOOL_G) == "on"
    assert nic.parse_ethtool_g("TCP data split:\tn/a\n") == "unknown"
    assert nic.parse_ethtool_g("RX:\t1024\n") == "unknown"
    assert nic.parse_ethtool_i(ETHTOOL_I) == ("bnxt_en", "230.0.154.0/pkg 230.1.116.0")
    assert nic.parse_ethtool_i("driver: veth\nfirmware-version: \nexpansion-rom-version:\n") == ("veth", "")
    assert nic.parse_ethtool_k_ntuple("ntuple-filters: off [fixed]\n") == "off"


def test_queue_selection():
    assert nic.last_queues(16, 2) == [14, 15]
    with pytest.raises(ValueError, match="at least one left"):
        nic.last_queues(1, 1)
    assert parse_queues("auto", 16) == ([15], None)
    assert parse_queues("auto:4", 16) == ([12, 13, 14, 15], None)
    assert parse_queues([3, 4], None) == ([3, 4], None)
    assert parse_queues("3,4", None) == ([3, 4], None)
    assert parse_queues("auto", None)[1].startswith("RX queue count unknown")


# ---- decisions: one reason per missing piece ---------------------------------------------

def test_ready_host_is_available_with_rx_and_tx():
    cap = decide(_ready())
    assert cap.available, cap.reason
    assert cap.data_path == "devmem RX+TX on eth1 queues [15]"


def test_refused_bind_tx_means_devmem_rx_only_never_plain_tcp():
    cap = decide(_ready(bind_tx=BindResult(False, "udmabuf", errno=errno.EOPNOTSUPP, errname="EOPNOTSUPP",
                                           message="Driver does not support netmem TX")))
    assert cap.available
    assert cap.data_path.startswith("devmem RX only on eth1 queues [15] (TX from host memory: EOPNOTSUPP")
    assert "Driver does not support netmem TX" in cap.data_path


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"udmabuf_reason": udmabuf.MISSING_REASON},
         "no /dev/udmabuf (kernel built without CONFIG_UDMABUF or module not loaded)"),
        ({"interface": None, "ifindex": None, "nic": None, "bind_rx": None}, "no devmem interface"),
        ({"ifindex": None, "nic": None, "bind_rx": None}, "interface 'eth1' does not exist"),
        ({"netdev_error": "netdev netlink family unusable: ENOENT"}, "netdev netlink family unusable"),
        ({"netdev_ops": frozenset({1, 10})}, "has no bind-rx"),
        ({"bind_rx": BindResult(False, "udmabuf", errno=errno.EOPNOTSUPP, errname="EOPNOTSUPP",
                                bad_attr="ifindex")},
         "refused by the kernel: EOPNOTSUPP (Operation not supported) [kernel flagged attribute ifindex]"),
        ({"bind_rx": BindResult(False, "memfd (no dma-buf available)", errno=errno.EBADF, errname="EBADF")},
         "rejected the fd because it is not a dma-buf"),
        # what Linux 6.12 answers in the lab for lo/veth with a real udmabuf
        ({"bind_rx": BindResult(False, "udmabuf", errno=errno.EINVAL, errname="EINVAL",
                                message="Failed to bind dmabuf to device")},
         "the dma-buf could not be attached to eth1's parent device"),
        ({"nic": _ready_nic(header_split="off")}, "run `ethtool -G eth1 tcp-data-split on`"),
        ({"nic": _ready_nic(rules=[])}, "run `ethtool -N eth1 flow-type tcp4 dst-port 5201 action 15`"),
        ({"nic": _ready_nic(rules=[nic.SteeringRule(1, "TCP over IPv4", 80, 15)])}, "no flow steering rule"),
        ({"nic": _ready_nic(rss_queues=set(range(16)))},
         "RSS spreads other flows onto devmem queues [15] of eth1: `ethtool -X eth1 equal 15`"),
        ({"nic": _ready_nic(rss_queues=None, rss_source="`ethtool -x eth1`: Operation not supported")},
         "RSS indirection table of eth1 unknown"),
        ({"nic": _ready_nic(ntuple="off")}, "run `ethtool -K eth1 ntuple on`"),
        ({"queues": [16]}, "queues [16] do not exist"),
        ({"nic": _ready_nic(rx_queues=1), "queues": [0]}, "all 1 RX queues of eth1 would be bound"),
    ],
)
def test_each_missing_piece_has_its_own_reason(change, expected):
    cap = decide(_ready(**change))
    assert not cap.available
    assert expected in cap.details["detail"]
    assert cap.details["reasons"] and all(r in cap.details["detail"] for r in cap.details["reasons"])
    assert len(cap.reason) <= 230  # the skip reason stays short; the detail has every reason in full


def test_several_missing_pieces_are_all_reported():
    cap = decide(_ready(udmabuf_reason=udmabuf.MISSING_REASON,
                        nic=_ready_nic(header_split="unknown", rules=[])))
    assert len(cap.details["reasons"]) == 3


# ---- the real probe on this machine ------------------------------------------------------

def test_real_probe_on_veth_gets_the_kernels_answers(veth_netns):
    inp = gather({"interface": "kvdm0", "netns": veth_netns.name, "rx_queues": [0], "port": 5201})
    if inp.netdev_error and inp.netdev_error.startswith("netdev netlink family unusable"):
        # e.g. Linux 6.1 in the lab's kernel matrix: the family arrived in 6.5; the reason is
        # the probe's own, checked in test_each_missing_piece_has_its_own_reason
        assert "netdev netlink family unusable" in decide(inp).reason
        pytest.skip(f"kernel {os.uname().release}: {inp.netdev_error}")
    assert inp.netdev_error is None, inp.netdev_error
    if 13 not in inp.netdev_ops:
        pytest.skip("kernel netdev family has no bind-rx")
    cap = decide(inp)
    assert not cap.available
    reasons = cap.details["reasons"]
    if not os.path.exists("/dev/udmabuf"):
        assert reasons[0] == udmabuf.MISSING_REASON
        # no dma-buf here: the bind was made with a memfd, and the kernel refused the DEVICE
        # first (extack on ifindex), so this does not claim anything about the fd
        assert inp.bind_rx.fd_kind.startswith("memfd")
    assert inp.bind_rx is not None and not inp.bind_rx.ok
    if inp.bind_rx.errno == errno.EINVAL and inp.bind_rx.fd_kind == "udmabuf":
        # Linux 6.12 with a real dma-buf (the lab VM): it attaches the dma-buf to the netdev's
        # parent device before checking queues, and veth has none
        assert any("could not be attached to kvdm0's parent device" in r for r in reasons)
        assert inp.bind_tx is not None and not inp.bind_tx.ok
    else:
        assert inp.bind_rx.errno == errno.EOPNOTSUPP and inp.bind_rx.bad_attr == "ifindex"
        assert any("bind-rx of kvdm0 queues [0] refused by the kernel: EOPNOTSUPP" in r
                   and "before the fd was examined: driver veth" in r for r in reasons)
        assert inp.bind_tx is not None and inp.bind_tx.errno == errno.EOPNOTSUPP
    assert any("TCP header/data split is unknown on kvdm0" in r and "ethtool -G kvdm0 tcp-data-split on" in r
               for r in reasons)
    assert any("no flow steering rule" in r and "ethtool -N kvdm0 flow-type tcp4 dst-port 5201 action 0" in r
               for r in reasons)
    assert cap.details["driver"] == "veth"


def test_registry_probe_of_a_missing_interface(veth_netns):
    cap = registry.probe("devmem", {"interface": "nope0", "netns": veth_netns.name})
    assert not cap.available
    assert "interface 'nope0' does not exist in netns " + veth_netns.name in cap.reason


# ---- transport entry points without the hardware -----------------------------------------

@pytest.mark.skipif(os.path.exists("/dev/udmabuf"), reason="this host has /dev/udmabuf")
def test_allocate_reports_missing_udmabuf():
    with pytest.raises(TransportError, match=r"devmem: no /dev/udmabuf \(kernel built without CONFIG_UDMABUF"):
        DevmemTransport.allocate(1 << 20, {})


@pytest.mark.skipif(not os.path.exists("/dev/udmabuf"), reason="no /dev/udmabuf on this host")
def test_allocate_gives_a_cpu_mapped_dmabuf():
    region = DevmemTransport.allocate(10_000, {})
    try:
        assert len(region) == 10_000
        region[:4] = b"abcd"
        assert bytes(region[:4]) == b"abcd"
    finally:
        DevmemTransport.release(region)


def test_target_needs_a_dmabuf_region_and_initiator_reports_host_tx():
    region = memoryview(mmap.mmap(-1, 4096))
    t = DevmemTarget(region, {"interface": "lo"})
    with pytest.raises(TransportError, match="must come from DevmemTransport.allocate"):
        t.listen("127.0.0.1", 1.0)
    t.close()
    i = DevmemInitiator(region, {"interface": "lo"})
    i._bind_tx(1.0)
    dp = i.data_path()
    assert dp["transport"] == "devmem" and dp["devmem_tx"] is False
    assert dp["description"].startswith("devmem RX only: TX from host memory")
    assert "not a dma-buf" in dp["description"]
    i.close()


def _run_loopback(target_opts, writes, rounds=200):
    """White box: a DevmemTarget whose NIC bind is skipped (no devmem NIC here), fed by a
    DevmemInitiator over loopback: the kernel delivers regular skbs, recvmsg(MSG_SOCK_DEVMEM)
    returns them without devmem cmsgs, so every byte is host memory and must be reported."""
    import numpy as np
    from stream_harness import connect_driving

    from pytest_kvfabric.transports.base import XFER_DTYPE

    src = memoryview(mmap.mmap(-1, 1 << 16))
    src[:] = bytes(range(256)) * 256
    dst = memoryview(mmap.mmap(-1, 1 << 16))
    t = DevmemTarget(dst, {"token": "s3cret", **target_opts})
    t.pool = object()
    from pytest_kvfabric.transports.stream_target import StreamTarget

    desc = StreamTarget.listen(t, "127.0.0.1", 2.0)  # the socket half of listen(); no NIC bind here
    i = DevmemInitiator(src, {"token": "s3cret", "tx": False})
    try:
        connect_driving(i, t, desc, 2.0)  # the target answers the handshake inside progress()
        i.post(np.array(writes, XFER_DTYPE), 2.0)
        placed, done = [], []
        for _ in range(rounds):
            p, _n = t.progress(0.05)
            placed += p["xfer"].tolist()
            done += i.poll(0.01)["xfer"].tolist()
            if len(done) == len(writes):
                break
        return t, i, src, dst, placed, done
    finally:
        i.close()
        t.close()


def test_target_rx_loop_reports_host_placed_bytes_on_loopback():
    writes = [(0, 0, 100, 5000, 3), (1, 8000, 20000, 30000, -1)]
    t, i, src, dst, placed, done = _run_loopback({}, writes)
    assert sorted(done) == [0, 1] and sorted(placed) == [0, 1]
    assert dst[100:5100] == src[0:5000] and dst[20000:50000] == src[8000:38000]
    dp = t.data_path()
    assert dp["transport"] == "devmem" and dp["device_placed_all"] is False
    assert dp["device_frags"] == 0 and dp["unsteered_bytes"] >= 35000 and dp["zero_copy"] is None
    assert "not steered" in dp["description"]
    assert i.data_path()["description"].startswith("devmem RX only: TX from host memory")


def test_scenario_requiring_device_placement_fails_on_host_bytes():
    with pytest.raises(TransportError, match="landed in host memory and the scenario requires device placement"):
        _run_loopback({"require_device_placement": True}, [(0, 0, 0, 4096, -1)])


def test_without_a_named_interface_no_nic_is_touched(monkeypatch):
    """The default-route NIC carries the user's SSH: a bind-rx there would restart its queue."""
    from pytest_kvfabric.transports.devmem import probe as probe_mod

    def forbidden(*a, **k):
        raise AssertionError("the probe touched a NIC nobody named")

    monkeypatch.setattr(probe_mod.nl, "open_in_netns", forbidden)
    monkeypatch.setattr(probe_mod, "_try_bind", forbidden)
    inp = gather({})
    assert inp.interface is None and inp.bind_rx is None and inp.nic is None
    cap = decide(inp)
    assert not cap.available and "no devmem interface named" in cap.reason and len(cap.reason) <= 230


def test_short_reason_keeps_the_start_of_each_and_counts_the_rest():
    from pytest_kvfabric.transports.base import short_reason

    reasons = [f"reason {i}: " + "x" * 300 for i in range(6)]
    short = short_reason(reasons)
    assert len(short) <= 230 and short.startswith("reason 0: ") and short.endswith("more")
    assert short_reason(["only one"]) == "only one"
