"""Port counters behind UCX's RDMA lanes, over a real sysfs-shaped tree (the core's writer)."""
from __future__ import annotations

from hypothesis import given, strategies as st

from pytest_kvfabric.transports.rdma import sysfs, sysfs_tree

from kvfabric_nixl import counters


def test_rdma_lanes_name_their_port_others_none():
    assert counters.rdma_port_of("rc_verbs/rxe0:1") == ("rxe0", 1)
    assert counters.rdma_port_of("rc_mlx5/mlx5_0:2") == ("mlx5_0", 2)
    for lane in ("tcp/lo", "cma/memory", "tcp/eth0", "rc_verbs/rxe0:", "weird"):
        assert counters.rdma_port_of(lane) is None


@given(st.text(max_size=30))
def test_any_lane_text_is_parsed_or_refused(lane):
    got = counters.rdma_port_of(lane)
    assert got is None or (got[0] and got[1] >= 0)


def test_delta_of_the_lane_port_only(tmp_path):
    root = str(tmp_path)
    sysfs_tree.write_port(root, "rxe0", 1, hw_counters={"sent_pkts": 10, "rcvd_pkts": 5, "duplicate_request": 0})
    sysfs_tree.write_port(root, "rxe1", 1, hw_counters={"sent_pkts": 1})
    before = sysfs.snapshot_ports(root)
    assert set(before) == {"rxe0:1", "rxe1:1"}
    sysfs_tree.write_port(root, "rxe0", 1, hw_counters={"sent_pkts": 4106, "rcvd_pkts": 4101, "duplicate_request": 0})
    sysfs_tree.write_port(root, "rxe1", 1, hw_counters={"sent_pkts": 99})
    got = counters.lane_deltas(before, ["rc_verbs/rxe0:1", "rc_verbs/rxe0:1", "tcp/lo"], root)
    assert got == {"rxe0:1": {"rcvd_pkts": 4096, "sent_pkts": 4096}}
    assert counters.lane_deltas(before, ["rc_verbs/rxe9:1"], root) == {}
    assert sysfs.snapshot_ports(str(tmp_path / "none")) == {}
