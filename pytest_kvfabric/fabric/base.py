"""HostPair: where a scenario's two agents run, and Fabric: what makes one. INTERFACE shared by
runner, plugin and fabrics.

An agent is started with `execnet.makegateway(host.gateway_spec)`; the channel is
authenticated by construction (popen pipes locally and in namespaces, SSH across hosts).
The data plane binds/connects to `data_addr` (an address the fabric assigned or the
inventory named); `interface` is the data-plane interface, for counters and NIC evidence.

A fabric (local, netns, hosts; select.py holds the table) opens this worker's HostPair and
answers what callers would otherwise decide by testing its name: whether the two agents share
one kernel's clock, whether a transport probe on this host speaks for the agents' hosts, which
interfaces a case records, and what is wrong with the link when a run stalls.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    fabric: str  # the name of the Fabric that made it (select.FABRICS; get_fabric(name) finds it)
    prefill: Host
    decode: Host
    details: dict[str, Any] = field(default_factory=dict)  # MTU, offloads, shaping...


@dataclass(frozen=True)
class PairRequest:
    """What a fabric may need to open this worker's pair (each fabric reads its own fields)."""

    worker: int  # this xdist worker's number (0 without xdist)
    hosts_file: str | None = None  # hosts: the inventory
    netns_options: dict[str, Any] = field(default_factory=dict)  # netns: NETNS_OPTION_KEYS
    nworkers: int | None = None  # hosts: None reads the worker count from the environment
    timeout_s: float = 10.0  # reaching each host (gateway start, probe)
    netns_prefix: str | None = None  # netns: name prefix (tests use their own)


class Fabric(Protocol):
    """Where the two agents run. A new fabric implements this and registers with
    select.register_fabric; built-ins are local.LocalFabric, netns.NetnsFabric, hosts.HostsFabric."""

    name: str
    shares_clock: bool  # both agents read one kernel's CLOCK_MONOTONIC (cross-agent times are valid)
    probes_here: bool  # the agents run on this host: a transport probe here answers for them
    needs_inventory: bool  # opening a pair needs an inventory file (PairRequest.hosts_file)

    def open(self, request: PairRequest) -> tuple[HostPair, Callable[[], None]]:
        """(pair, closer) for request.worker. Raises KvFabricError subclasses with one-line messages."""
        ...

    def interfaces(self, pair: HostPair) -> list[dict[str, Any]]:
        """The data-plane interfaces a case records ({"name", "netns", ...}); [] if the hosts report theirs."""
        ...

    def link_cause(self, pair: HostPair) -> str | None:
        """When a run stalls: what is wrong with the pair's link (e.g. a veth end down), or None."""
        ...
