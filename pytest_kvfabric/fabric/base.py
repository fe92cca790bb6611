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
    rails: int = 1  # agents per instance and side, rank k on rail k mod rails (one interface each)
    topology: tuple[int, int] = (1, 1)  # (prefill instances, decode instances), each its own agent(s)


@dataclass(frozen=True)
class Layout:
    """Where every agent of a multi-agent run sits: `prefill[i][r]` is prefill instance i's agent
    on rail r, `decode[j][r]` the same for decode instance j. Each Host is one agent process; a
    flow runs from prefill[i][r] to decode[j][r] (rails pair up by index). A plain pair is the
    Layout ((prefill,),), ((decode,),). INTERFACE shared by the flows runner and the fabrics."""

    name: str
    fabric: str
    prefill: tuple[tuple[Host, ...], ...]
    decode: tuple[tuple[Host, ...], ...]
    details: dict[str, Any] = field(default_factory=dict)  # per-rail / per-link facts (MTU, shaping...)

    @property
    def rails(self) -> int:
        return len(self.prefill[0])

    @property
    def topology(self) -> tuple[int, int]:
        return len(self.prefill), len(self.decode)

    def flow_pair(self, p: int, d: int, rail: int) -> HostPair:
        """The HostPair of the flow prefill instance p -> decode instance d on `rail`."""
        return HostPair(name=f"{self.name}/p{p}d{d}r{rail}", fabric=self.fabric,
                        prefill=self.prefill[p][rail], decode=self.decode[d][rail], details=self.details)

    @classmethod
    def of_pair(cls, pair: HostPair) -> "Layout":
        return cls(pair.name, pair.fabric, ((pair.prefill,),), ((pair.decode,),), dict(pair.details))


class Fabric(Protocol):
    """Where the two agents run. A new fabric implements this and registers with
    select.register_fabric; built-ins are local.LocalFabric, netns_fabric.NetnsFabric, hosts.HostsFabric."""

    name: str
    shares_clock: bool  # both agents read one kernel's CLOCK_MONOTONIC (cross-agent times are valid)
    probes_here: bool  # the agents run on this host: a transport probe here answers for them
    needs_inventory: bool  # opening a pair needs an inventory file (PairRequest.hosts_file)

    def open(self, request: PairRequest) -> tuple[HostPair, Callable[[], None]]:
        """(pair, closer) for request.worker. Raises KvFabricError subclasses with one-line messages."""
        ...

    # A fabric that places rails or several instances also has
    #     open_layout(self, request: PairRequest) -> tuple[Layout, Callable[[], None]]
    # (optional: select.open_layout falls back to open() for one rail and topology (1, 1)).

    def interfaces(self, pair: HostPair) -> list[dict[str, Any]]:
        """The data-plane interfaces a case records ({"name", "netns", ...}); [] if the hosts report theirs."""
        ...

    def link_cause(self, pair: HostPair) -> str | None:
        """When a run stalls: what is wrong with the pair's link (e.g. a veth end down), or None."""
        ...
