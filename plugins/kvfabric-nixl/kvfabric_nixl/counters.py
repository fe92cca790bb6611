"""The RDMA port counters behind UCX's lanes: proof from the device, not only from UCX's log.

UCX's protocol tables say which lane UCX chose (`rc_verbs/rxe0:1`); the port's own counters
(sysfs, read by the core's rdma module) say that packets really crossed that port while the
agent ran. Snapshot at agent start (sysfs.snapshot_ports), delta at data_path for each RDMA
lane's device:port.
"""
from __future__ import annotations

from typing import Iterable

from pytest_kvfabric.transports.rdma import sysfs


def rdma_port_of(lane: str) -> tuple[str, int] | None:
    """('rxe0', 1) from 'rc_verbs/rxe0:1' (ib transports name device:port); None for tcp/lo, cma/memory."""
    _, _, dev = lane.partition("/")
    name, sep, port = dev.rpartition(":")
    if not sep or not name or not port.isdigit():
        return None
    return name, int(port)


def lane_deltas(before: dict[str, dict[str, int]], lanes: Iterable[str],
                root: str = sysfs.DEFAULT_ROOT) -> dict[str, dict[str, int]]:
    """For each RDMA lane's port seen at start: the counters that moved since (non-zero deltas)."""
    keys = [f"{p[0]}:{p[1]}" for p in map(rdma_port_of, lanes) if p]
    return sysfs.moved_since(before, keys, root)
