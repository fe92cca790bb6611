"""HostPair: where a scenario's two agents run. INTERFACE shared by runner, plugin and fabrics.

An agent is started with `execnet.makegateway(host.gateway_spec)`; the channel is
authenticated by construction (popen pipes locally and in namespaces, SSH across hosts).
The data plane binds/connects to `data_addr` (an address the fabric assigned or the
inventory named); `interface` is the data-plane interface, for counters and NIC evidence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Host:
    name: str
    gateway_spec: str  # execnet spec, e.g. "popen//python=/path/python"
    data_addr: str  # IPv4/IPv6 the data plane uses on this host
    interface: str | None = None  # data-plane interface (None: loopback "lo")
    netns: str | None = None  # network namespace the agent runs in, if any


@dataclass(frozen=True)
class HostPair:
    name: str  # shown in reports: which pair ran a case
    fabric: str  # "local" | "netns" | "hosts"
    prefill: Host
    decode: Host
    details: dict[str, Any] = field(default_factory=dict)  # MTU, offloads, shaping...
