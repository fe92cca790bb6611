"""The RDMA port counters behind UCX's lanes: proof from the device, not only from UCX's log.

UCX's protocol tables say which lane UCX chose (`rc_verbs/rxe0:1`); the port's own counters
(sysfs, read by the core's rdma module) say that packets really crossed that port while the
agent ran. Snapshot at agent start, delta at data_path for each RDMA lane's device:port.
"""
from __future__ import annotations

import os
from typing import Iterable

from pytest_kvfabric.transports.rdma import sysfs


def rdma_port_of(lane: str) -> tuple[str, int] | None:
    """('rxe0', 1) from 'rc_verbs/rxe0:1' (ib transports name device:port); None for tcp/lo, cma/memory."""
    _, _, dev = lane.partition("/")
    name, sep, port = dev.rpartition(":")
    if not sep or not name or not port.isdigit():
        return None
    return name, int(port)


def snapshot(root: str = sysfs.DEFAULT_ROOT) -> dict[str, dict[str, int]]:
    """Counters of every RDMA port here, keyed 'dev:port' (empty where there is none)."""
    if not os.path.isdir(root):
        return {}
    return {f"{d}:{p}": sysfs.read_counters(root, d, p) for d in sysfs.devices(root) for p in sysfs.ports(root, d)}


def lane_deltas(before: dict[str, dict[str, int]], lanes: Iterable[str],
                root: str = sysfs.DEFAULT_ROOT) -> dict[str, dict[str, int]]:
    """For each RDMA lane's port seen at start: the counters that moved since (non-zero deltas)."""
    out: dict[str, dict[str, int]] = {}
    for lane in lanes:
        port = rdma_port_of(lane)
        key = f"{port[0]}:{port[1]}" if port else ""
        if not port or key not in before or key in out:
            continue
        delta = sysfs.counter_delta(before[key], sysfs.read_counters(root, port[0], port[1]))
        out[key] = {k: v for k, v in sorted(delta.items()) if v}
    return out
