"""Loopback fabric: both agents are separate processes on this host, data plane on 127.0.0.1."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .base import Host, HostPair, Layout, PairRequest


def local_pair() -> HostPair:
    spec = f"popen//python={sys.executable}"
    return HostPair(
        name="local",
        fabric=LocalFabric.name,
        prefill=Host("prefill", spec, "127.0.0.1", "lo"),
        decode=Host("decode", spec, "127.0.0.1", "lo"),
        details={"mtu": 65536},
    )


def local_layout(rails: int = 1, topology: tuple[int, int] = (1, 1)) -> Layout:
    """Every agent on this host's loopback. Loopback rails are rails in name only: they all share
    `lo` (one interface, one kernel path), so they spread the agents' CPU, not a NIC's load."""
    spec = f"popen//python={sys.executable}"
    P, D = topology

    def side(role: str, count: int) -> tuple[tuple[Host, ...], ...]:
        return tuple(tuple(Host(f"{role}{i}.r{r}", spec, "127.0.0.1", "lo") for r in range(rails))
                     for i in range(count))

    return Layout(name=f"local-{P}p{D}d-{rails}r", fabric=LocalFabric.name, prefill=side("prefill", P),
                  decode=side("decode", D), details={"mtu": 65536, "rails_share_interface": True})


class LocalFabric:
    name = "local"
    shares_clock = True
    probes_here = True
    needs_inventory = False

    def open(self, request: PairRequest) -> tuple[HostPair, Callable[[], None]]:
        return local_pair(), lambda: None

    def open_layout(self, request: PairRequest) -> tuple[Layout, Callable[[], None]]:
        return local_layout(int(request.rails), tuple(request.topology)), lambda: None  # type: ignore[arg-type]

    def interfaces(self, pair: HostPair) -> list[dict[str, Any]]:
        return [{"name": "lo", "netns": None}]

    def link_cause(self, pair: HostPair) -> str | None:
        return None
