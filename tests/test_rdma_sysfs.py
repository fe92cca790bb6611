"""sysfs parsing over a tree of real files written by the test (the layout of /sys/class/infiniband)."""
from __future__ import annotations

import os

import pytest

from pytest_kvfabric.transports.rdma import sysfs
from pytest_kvfabric.transports.rdma.sysfs_tree import write_port

LINK_LOCAL = "fe80:0000:0000:0000:0a5e:45ff:fe12:3456"
V4_MAPPED = "0000:0000:0000:0000:0000:ffff:0a00:0001"  # ::ffff:10.0.0.1
V4_OTHER = "0000:0000:0000:0000:0000:ffff:0a00:0002"  # ::ffff:10.0.0.2
V6 = "fd00:0000:0000:0000:0000:0000:0000:0007"


@pytest.fixture
def root(tmp_path):
    r = str(tmp_path / "infiniband")
    write_port(r, "mlx5_0", 1, gids=[
        (0, LINK_LOCAL, "IB/RoCE v1", "ens1f0"),
        (1, LINK_LOCAL, "RoCE v2", "ens1f0"),
        (2, V4_MAPPED, "IB/RoCE v1", "ens1f0"),
        (3, V4_MAPPED, "RoCE v2", "ens1f0"),
        (4, V6, "IB/RoCE v1", "ens1f0"),
        (5, V6, "RoCE v2", "ens1f0"),
    ], active_mtu="4096", fw_ver="28.39.1002")
    write_port(r, "mlx5_1", 1, state="1: DOWN", phys_state="3: Disabled",
               gids=[(0, LINK_LOCAL, "IB/RoCE v1", "ens1f1")])
    return r


def test_devices_ports_and_attributes(root):
    assert sysfs.devices(root) == ["mlx5_0", "mlx5_1"]
    assert sysfs.ports(root, "mlx5_0") == [1]
    assert sysfs.fw_ver(root, "mlx5_0") == "28.39.1002"
    info = sysfs.port_info(root, "mlx5_0", 1)
    assert (info.state, info.phys_state, info.link_layer) == ("ACTIVE", "LinkUp", "Ethernet")
    assert info.active and info.active_mtu == 4096
    assert info.rate == "100 Gb/sec (4X EDR)"
    down = sysfs.port_info(root, "mlx5_1", 1)
    assert not down.active and down.state == "DOWN" and down.phys_state == "Disabled"
    assert down.active_mtu is None  # not exposed: the transport asks ibv_query_port


def test_gid_table_skips_empty_slots_and_reads_types_and_ndevs(root):
    table = sysfs.gid_table(root, "mlx5_0", 1)
    assert [g.index for g in table] == [0, 1, 2, 3, 4, 5]  # slots 6, 7 are all-zero
    assert table[3].gid_type == "RoCE v2" and table[3].ndev == "ens1f0"
    assert table[2].gid_type == "IB/RoCE v1"


def test_missing_root_means_no_devices(tmp_path):
    assert sysfs.devices(str(tmp_path / "absent")) == []
    assert sysfs.all_ports(str(tmp_path / "absent")) == []


@pytest.mark.parametrize(
    "addr, index, gid",
    [("10.0.0.1", 3, V4_MAPPED), ("fd00::7", 5, V6), (None, 1, LINK_LOCAL)],
)
def test_select_gid_picks_roce_v2_on_the_data_address(root, addr, index, gid):
    # v1 entries with the same value come first in the table and must be skipped.
    assert sysfs.select_gid(root, "mlx5_0", 1, addr) == (index, gid, "RoCE v2")


def test_select_gid_no_match_lists_what_the_port_has(root):
    with pytest.raises(sysfs.GidNotFound) as exc:
        sysfs.select_gid(root, "mlx5_0", 1, "10.0.0.2")
    msg = str(exc.value)
    assert "no RoCE v2 GID for 10.0.0.2 (::ffff:a00:2)" in msg
    assert "3=::ffff:a00:1 (RoCE v2)" in msg and "2=::ffff:a00:1 (IB/RoCE v1)" in msg


def test_select_gid_only_v1_is_not_enough(tmp_path):
    r = str(tmp_path / "ib")
    write_port(r, "rxe0", 1, gids=[(0, LINK_LOCAL, "IB/RoCE v1", "eth0"),
                                   (1, V4_OTHER, "IB/RoCE v1", "eth0")])
    with pytest.raises(sysfs.GidNotFound, match="no RoCE v2 GID for 10.0.0.2"):
        sysfs.select_gid(r, "rxe0", 1, "10.0.0.2")
    with pytest.raises(sysfs.GidNotFound, match="no RoCE v2 GID at all"):
        sysfs.select_gid(r, "rxe0", 1, None)


def test_gid_type_unreadable_is_not_roce_v2(tmp_path):
    r = str(tmp_path / "ib")
    write_port(r, "mlx5_0", 1, gids=[(0, V4_MAPPED, None, None)])
    assert sysfs.gid_table(r, "mlx5_0", 1)[0].gid_type is None
    with pytest.raises(sysfs.GidNotFound):
        sysfs.select_gid(r, "mlx5_0", 1, "10.0.0.1")


def test_counters_snapshot_and_delta(tmp_path):
    r = str(tmp_path / "ib")
    base = write_port(r, "mlx5_0", 1, counters={"port_xmit_data": 1000, "port_rcv_data": 10},
                      hw_counters={"out_of_sequence": 5, "np_cnp_sent": 0, "rp_cnp_handled": 2,
                                   "local_ack_timeout_err": 0, "packet_seq_err": 1})
    with open(os.path.join(base, "hw_counters", "lifespan"), "w") as fh:
        fh.write("N/A\n")  # non-numeric entries are skipped, not fatal
    before = sysfs.read_counters(r, "mlx5_0", 1)
    assert before["tx_bytes"] == 4000 and before["rx_bytes"] == 40  # 4-octet words
    assert "lifespan" not in before
    for name, value in (("out_of_sequence", 9), ("np_cnp_sent", 3), ("port_xmit_data", 1500)):
        with open(os.path.join(base, "hw_counters" if name != "port_xmit_data" else "counters",
                               name), "w") as fh:
            fh.write(f"{value}\n")
    after = sysfs.read_counters(r, "mlx5_0", 1)
    delta = sysfs.counter_delta(before, after)
    assert delta["out_of_sequence"] == 4 and delta["np_cnp_sent"] == 3
    assert delta["tx_bytes"] == 2000 and delta["port_xmit_data"] == 500
    assert delta["rp_cnp_handled"] == 0
    ev = sysfs.evidence(delta)
    assert ev["tx_bytes"] == 2000 and ev["out_of_sequence"] == 4
    assert "port_xmit_data" not in ev


def test_counter_delta_reset_and_new_counters():
    delta = sysfs.counter_delta({"a": 100, "b": 5}, {"a": 7, "b": 9, "c": 1})
    assert delta == {"a": 7, "b": 4}  # reset: lower bound; "c" has no before value


def test_gid_for_address():
    assert str(sysfs.gid_for_address("192.168.1.2")) == "::ffff:c0a8:102"
    assert str(sysfs.gid_for_address("fd00::7")) == "fd00::7"


def test_ipv6_scope_is_ignored_for_gid_matching(tmp_path):
    r = str(tmp_path / "ib")
    write_port(r, "mlx5_0", 1, gids=[(1, LINK_LOCAL, "RoCE v2", "ens1f0")])
    assert sysfs.select_gid(r, "mlx5_0", 1, "fe80::a5e:45ff:fe12:3456%ens1f0")[0] == 1


def test_snapshot_ports_and_moved_since_name_only_the_ports_asked(tmp_path):
    root = str(tmp_path)
    write_port(root, "rxe0", 1, hw_counters={"sent_pkts": 7, "rcvd_pkts": 7, "rnr_nak": 0})
    write_port(root, "mlx5_0", 2, counters={"port_xmit_packets": 1})
    before = sysfs.snapshot_ports(root)
    assert set(before) == {"rxe0:1", "mlx5_0:2"}
    write_port(root, "rxe0", 1, hw_counters={"sent_pkts": 107, "rcvd_pkts": 57, "rnr_nak": 0})
    write_port(root, "mlx5_0", 2, counters={"port_xmit_packets": 9})
    assert sysfs.moved_since(before, ["rxe0:1", "rxe0:1", "rxe7:1"], root) == {"rxe0:1": {"rcvd_pkts": 50, "sent_pkts": 100}}
    assert sysfs.snapshot_ports(str(tmp_path / "absent")) == {}
