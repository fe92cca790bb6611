"""Write a /sys/class/infiniband-shaped directory tree (real files) for tests.

The layout matches what the kernel's ib_core exposes, so sysfs.py and probe.py run their
real code over it. Empty GID slots are written as all-zero GIDs without a type file (the
kernel returns EINVAL when such a type is read).
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping

ZERO_GID = "0000:0000:0000:0000:0000:0000:0000:0000"


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")


def write_port(
    root: str,
    device: str,
    port: int = 1,
    *,
    state: str = "4: ACTIVE",
    phys_state: str = "5: LinkUp",
    link_layer: str = "Ethernet",
    rate: str = "100 Gb/sec (4X EDR)",
    active_mtu: str | None = None,
    gids: Iterable[tuple[int, str, str | None, str | None]] = (),
    gid_slots: int = 8,
    counters: Mapping[str, int] | None = None,
    hw_counters: Mapping[str, int] | None = None,
    fw_ver: str = "22.39.1002",
) -> str:
    """gids: (index, gid, type or None, ndev or None). Returns the port directory."""
    _write(os.path.join(root, device, "fw_ver"), fw_ver)
    base = os.path.join(root, device, "ports", str(port))
    _write(os.path.join(base, "state"), state)
    _write(os.path.join(base, "phys_state"), phys_state)
    _write(os.path.join(base, "link_layer"), link_layer)
    _write(os.path.join(base, "rate"), rate)
    if active_mtu is not None:
        _write(os.path.join(base, "active_mtu"), active_mtu)
    given = {g[0]: g for g in gids}
    for index in range(max([gid_slots, *[i + 1 for i in given]])):
        index_s = str(index)
        entry = given.get(index)
        _write(os.path.join(base, "gids", index_s), entry[1] if entry else ZERO_GID)
        os.makedirs(os.path.join(base, "gid_attrs", "types"), exist_ok=True)
        os.makedirs(os.path.join(base, "gid_attrs", "ndevs"), exist_ok=True)
        if entry and entry[2] is not None:
            _write(os.path.join(base, "gid_attrs", "types", index_s), entry[2])
        if entry and entry[3] is not None:
            _write(os.path.join(base, "gid_attrs", "ndevs", index_s), entry[3])
    for sub, values in (("counters", counters), ("hw_counters", hw_counters)):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
        for name, value in (values or {}).items():
            _write(os.path.join(base, sub, name), str(value))
    return base
