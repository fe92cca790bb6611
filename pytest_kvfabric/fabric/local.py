"""Loopback fabric: both agents are separate processes on this host, data plane on 127.0.0.1."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .base import Host, HostPair, PairRequest


def local_pair() -> HostPair:
    spec = f"popen//python={sys.executable}"
    return HostPair(
        name="local",
        fabric=LocalFabric.name,
        prefill=Host("prefill", spec, "127.0.0.1", "lo"),
        decode=Host("decode", spec, "127.0.0.1", "lo"),
        details={"mtu": 65536},
    )


class LocalFabric:
    name = "local"
    shares_clock = True
    probes_here = True
    needs_inventory = False

    def open(self, request: PairRequest) -> tuple[HostPair, Callable[[], None]]:
        return local_pair(), lambda: None

    def interfaces(self, pair: HostPair) -> list[dict[str, Any]]:
        return [{"name": "lo", "netns": None}]

    def link_cause(self, pair: HostPair) -> str | None:
        return None
