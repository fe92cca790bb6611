"""The `hosts` fabric: an inventory of real host pairs reached over SSH.

Inventory (``--kv-hosts PATH``, validated against schemas/hosts.schema.json)::

    pairs:
      - name: lab-a
        prefill: {ssh: kv@10.0.0.11, port: 22, identity: ~/.ssh/kvfabric, python: /opt/kv/bin/python,
                  data_addr: 192.168.50.11, interface: enp65s0f0}
        decode:  {ssh: kv@10.0.0.12, data_addr: 192.168.50.12, interface: enp65s0f0}

Rails (``--kv-rails N``): a host may list one NIC per rail; rail k of prefill talks to rail k of
decode, and N takes the first N of each host. The agent of a rail is pinned to ``cpus`` where
given, else to its NIC's NUMA node (the host's probe reads it; rails.rail_cpu_sets)::

        prefill: {ssh: kv@10.0.0.11, data_addr: 192.168.50.11, interface: enp65s0f0,
                  rails: [{interface: enp65s0f0, data_addr: 192.168.50.11},
                          {interface: enp65s0f1, data_addr: 192.168.51.11, cpus: [16, 17, 18, 19]}]}

Agents start through execnet's ssh gateway (``ssh=<opts> user@host//python=...``). SSH does the
authentication: we pass ``-o BatchMode=yes`` (never prompt: a missing key fails fast) and
``-o ConnectTimeout``; host key checking stays as the user configured it (known_hosts,
StrictHostKeyChecking in ~/.ssh/config): we never disable it.
"""
from __future__ import annotations

import ipaddress
import os
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProfileError
from ..core.profile_schema import read_yaml, validate
from . import alloc
from .alloc import FabricUsageError
from . import rails as rl
from .base import Host, HostPair, Layout, PairRequest
from .bootstrap import HostUnreachable, cause_of, open_gateway

DEFAULT_PORT = 22
DEFAULT_PYTHON = "python3"
ROLES = ("prefill", "decode")
SSH_FLAGS_WITH_ARG = set("BbcDEeFIiJLlmOopQRSWw")


@dataclass(frozen=True)
class InventoryRail:
    interface: str
    data_addr: str
    cpus: tuple[int, ...] | None = None  # None: the NIC's NUMA node decides (rails.rail_cpu_sets)


@dataclass(frozen=True)
class InventoryHost:
    role: str
    ssh: str  # user@host or host
    data_addr: str
    interface: str
    port: int = DEFAULT_PORT
    identity: str | None = None
    python: str = DEFAULT_PYTHON
    ssh_options: tuple[str, ...] = ()
    rails: tuple[InventoryRail, ...] = ()

    @property
    def hostname(self) -> str:
        return self.ssh.rsplit("@", 1)[-1]

    def gateway_spec(self, connect_timeout_s: int = 10, cpus: list[int] | None = None) -> str:
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s}"]
        for opt in self.ssh_options:
            args += ["-o", opt]
        args += ["-p", str(self.port)]
        if self.identity:
            args += ["-i", os.path.expanduser(self.identity)]
        args.append(self.ssh)
        # pinned: the remote shell runs `taskset -c LIST PYTHON -c ...` (execnet appends -c)
        python = f"taskset -c {','.join(map(str, cpus))} {self.python}" if cpus else self.python
        return f"ssh={' '.join(args)}//python={python}"


@dataclass(frozen=True)
class InventoryPair:
    name: str
    prefill: InventoryHost
    decode: InventoryHost

    def host_pair(self, source: str = "") -> HostPair:
        def host(h: InventoryHost) -> Host:
            return Host(f"{self.name}/{h.role}", h.gateway_spec(), h.data_addr, h.interface, None)

        return HostPair(self.name, HostsFabric.name, host(self.prefill), host(self.decode),
                        {"inventory": source,
                         "ssh": {r: f"{getattr(self, r).ssh}:{getattr(self, r).port}" for r in ROLES}})


@dataclass(frozen=True)
class Inventory:
    source: str
    pairs: tuple[InventoryPair, ...] = field(default_factory=tuple)


def _no_space(value: str, source: str, field_path: str, what: str) -> None:
    # execnet splits the ssh spec on whitespace and the whole spec on "//"
    if any(c.isspace() for c in value) or "//" in value:
        raise ProfileError(source, field_path, f"{what} must not contain whitespace or '//', got {value!r}")


def _parse_host(raw: dict[str, Any], role: str, source: str, where: str) -> InventoryHost:
    ssh = raw["ssh"]
    _no_space(ssh, source, f"{where}.ssh", "ssh destination")
    if ssh.startswith("-") or ssh.endswith("@") or ssh.startswith("@"):
        raise ProfileError(source, f"{where}.ssh", f"expected user@host or host, got {ssh!r}")
    try:
        ipaddress.ip_address(raw["data_addr"])
    except ValueError:
        raise ProfileError(source, f"{where}.data_addr",
                           f"expected an IPv4/IPv6 address, got {raw['data_addr']!r}") from None
    identity = raw.get("identity")
    if identity is not None:
        _no_space(identity, source, f"{where}.identity", "identity path")
        if not Path(os.path.expanduser(identity)).is_file():
            raise ProfileError(source, f"{where}.identity", f"identity file {identity!r} not found")
    python = raw.get("python", DEFAULT_PYTHON)
    if "//" in python:
        raise ProfileError(source, f"{where}.python", f"must not contain '//', got {python!r}")
    opts = tuple(raw.get("ssh_options", ()))
    for i, opt in enumerate(opts):
        _no_space(opt, source, f"{where}.ssh_options[{i}]", "ssh option (Key=Value)")
        if "=" not in opt:
            raise ProfileError(source, f"{where}.ssh_options[{i}]", f"expected Key=Value, got {opt!r}")
        if opt.split("=", 1)[0].lower() == "stricthostkeychecking":
            raise ProfileError(source, f"{where}.ssh_options[{i}]",
                               "host key checking is left to your ssh configuration; remove this option")
    return InventoryHost(role, ssh, raw["data_addr"], raw["interface"], raw.get("port", DEFAULT_PORT),
                         identity, python, opts, _parse_rails(raw.get("rails") or (), source, where))


def _parse_rails(raw: Any, source: str, where: str) -> tuple[InventoryRail, ...]:
    """Each rail: a valid interface name and IP address, no interface or address twice on the host."""
    rails = []
    seen: dict[tuple[str, str], int] = {}
    for r, item in enumerate(raw):
        at = f"{where}.rails[{r}]"
        name = item["interface"]
        if any(c.isspace() for c in name) or "/" in name or name in (".", ".."):
            raise ProfileError(source, f"{at}.interface", f"not a valid interface name: {name!r}")
        try:
            addr = str(ipaddress.ip_address(item["data_addr"]))
        except ValueError:
            raise ProfileError(source, f"{at}.data_addr",
                               f"expected an IPv4/IPv6 address, got {item['data_addr']!r}") from None
        for key, value in (("interface", name), ("data_addr", addr)):
            if (key, value) in seen:
                raise ProfileError(source, f"{at}.{key}",
                                   f"{key} {value!r} is already rail {seen[(key, value)]} of this host")
            seen[(key, value)] = r
        cpus = item.get("cpus")
        if cpus is not None and len(set(cpus)) != len(cpus):
            raise ProfileError(source, f"{at}.cpus", f"CPU listed twice: {sorted(cpus)}")
        rails.append(InventoryRail(name, addr, tuple(cpus) if cpus is not None else None))
    return tuple(rails)


def parse_inventory(data: Any, source: str) -> Inventory:
    """Validate a parsed inventory document; every problem is a ProfileError(file, field, reason)."""
    validate(data, "hosts", source)
    pairs = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(data["pairs"]):
        name = raw["name"]
        if name in seen:
            raise ProfileError(source, f"pairs[{i}].name", f"duplicate pair name {name!r} (also pairs[{seen[name]}])")
        seen[name] = i
        hosts = {r: _parse_host(raw[r], r, source, f"pairs[{i}] ({name}).{r}") for r in ROLES}
        np_, nd = len(hosts["prefill"].rails), len(hosts["decode"].rails)
        if np_ != nd:  # rail k of one side talks to rail k of the other
            raise ProfileError(source, f"pairs[{i}] ({name}).decode.rails",
                               f"{nd} rails but prefill has {np_}; rail k pairs with rail k, so both sides list the same number")
        pairs.append(InventoryPair(name, hosts["prefill"], hosts["decode"]))
    return Inventory(source, tuple(pairs))


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    return parse_inventory(read_yaml(path), str(path))


# --- reachability and fingerprints -----------------------------------------------------

def ssh_target(gateway_spec: str) -> tuple[str, int] | None:
    """(hostname, port) an execnet ssh spec connects to; None for non-ssh specs."""
    parts = dict(kv.split("=", 1) if "=" in kv else (kv, "") for kv in gateway_spec.split("//"))
    if "ssh" not in parts:
        return None
    tokens = shlex.split(parts["ssh"])
    port, dest, i = DEFAULT_PORT, None, 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-") and len(tok) >= 2:
            flag = tok[1]
            if flag in SSH_FLAGS_WITH_ARG:
                val = tok[2:] if len(tok) > 2 else (tokens[i + 1] if i + 1 < len(tokens) else "")
                if flag == "p" and val.isdigit():
                    port = int(val)
                i += 1 if len(tok) > 2 else 2
                continue
            i += 1
            continue
        dest = tok
        break
    if dest is None:
        return None
    return dest.rsplit("@", 1)[-1], port


def tcp_probe(hostname: str, port: int, timeout_s: float) -> None:
    """Bounded TCP connect; raises OSError/TimeoutError with the cause."""
    with socket.create_connection((hostname, port), timeout=timeout_s):
        pass


def probe_host(host: Host, timeout_s: float = 10.0, rails: list[str] | None = None) -> dict[str, Any]:
    """Reach `host` (bounded), run the probe there, return its fingerprint dict (with `rails`:
    each rail interface's driver, firmware, MTU and NUMA node). Raises HostUnreachable."""
    deadline = time.monotonic() + timeout_s
    target = ssh_target(host.gateway_spec)
    if target is not None:
        hostname, port = target
        try:
            tcp_probe(hostname, port, timeout_s)
        except OSError as exc:
            cause = (f"no answer within {timeout_s:g} s" if isinstance(exc, (TimeoutError, socket.timeout))
                     else cause_of(exc))
            raise HostUnreachable(f"host {host.name} ({hostname}:{port}): cannot reach SSH: {cause}") from None
    group, gw = open_gateway(host.gateway_spec, max(0.5, deadline - time.monotonic()), host.name)
    try:
        from . import _probe

        ch = gw.remote_exec(_probe)
        ch.send({"interface": host.interface, "rails": list(rails or [])})
        try:
            return ch.receive(timeout=max(0.5, deadline - time.monotonic()))
        except Exception as exc:
            raise HostUnreachable(f"host {host.name}: probe failed: {cause_of(exc)}") from None
    finally:
        group.terminate(timeout=2.0)


def _check_fingerprint(host: Host, fp: dict[str, Any], source: str | None, field_path: str | None) -> None:
    if fp.get("interface_found"):
        return
    reason = (f"interface {host.interface!r} not found on host {host.name} ({fp.get('hostname')}); "
              f"it has: {', '.join(fp.get('interfaces') or []) or 'none'}")
    if source:
        raise ProfileError(source, field_path or "", reason)
    raise HostUnreachable(reason)


def check_host(host: Host, timeout_s: float = 10.0, *, source: str | None = None,
               field_path: str | None = None) -> None:
    """Raise a clear error (host + cause) unless `host` runs our probe and has its interface.

    With `source` (the inventory file), an unknown interface is a ProfileError naming the file and
    `field_path`; an unreachable host is HostUnreachable naming the host, its address and the cause.
    """
    _check_fingerprint(host, probe_host(host, timeout_s), source, field_path)


def fingerprint(host: Host, timeout_s: float = 10.0, rails: list[str] | None = None) -> dict[str, Any]:
    """Kernel, CPU model, data NIC driver/firmware, MTU and offloads, collected on the host;
    with `rails`, the same for every rail interface (each must exist there)."""
    fp = probe_host(host, timeout_s, rails)
    _check_fingerprint(host, fp, None, None)
    _check_rails(host, fp, rails, None, None)
    return fp


def _check_rails(host: Host, fp: dict[str, Any], rails: list[str] | None, source: str | None,
                 field_path: str | None) -> None:
    missing = [name for name, nic in zip(rails or [], fp.get("rails") or [None] * len(rails or [])) if nic is None]
    if not missing:
        return
    reason = (f"rail interface(s) {', '.join(map(repr, missing))} not found on host {host.name} "
              f"({fp.get('hostname')}); it has: {', '.join(fp.get('interfaces') or []) or 'none'}")
    if source:
        raise ProfileError(source, field_path or "", reason)
    raise HostUnreachable(reason)


def check_pair(inv: Inventory, index: int, timeout_s: float = 10.0) -> tuple[HostPair, dict[str, Any]]:
    """HostPair for inventory pair `index`, both hosts checked; returns (pair, fingerprints by role)."""
    ip = inv.pairs[index]
    pair = ip.host_pair(inv.source)
    fps: dict[str, Any] = {}
    for role in ROLES:
        host = getattr(pair, role)
        fp = probe_host(host, timeout_s)
        _check_fingerprint(host, fp, inv.source, f"pairs[{index}] ({ip.name}).{role}.interface")
        fps[role] = fp
    return pair, fps


def rail_cpus(host: InventoryHost, rails: int, fp: dict[str, Any]) -> list[list[int] | None]:
    """Each rail agent's CPU set on `host`: the inventory's `cpus` where given, else the rule of
    rails.rail_cpu_sets over what the host's probe reported (CPUs allowed, each NIC's NUMA node)."""
    allowed = fp.get("cpus_allowed") or []
    nics = fp.get("rails") or [None] * rails
    nodes: list[int | None] = [(n or {}).get("numa_node") for n in nics[:rails]]
    node_cpus: dict[int, list[int]] = {}
    for node, nic in zip(nodes, nics):
        if node is not None and nic.get("numa_cpus"):
            try:
                node_cpus[node] = rl.parse_cpulist(nic["numa_cpus"])
            except ValueError:
                pass  # an unreadable cpulist: the NIC counts as having no node
    auto = rl.rail_cpu_sets(allowed, rails, nodes, node_cpus) if allowed else [None] * rails
    out: list[list[int] | None] = []
    for r in range(rails):
        given = host.rails[r].cpus
        out.append(sorted(given) if given else (rl.pin_or_none(auto[r], allowed) if auto[r] else None))
    return out


def build_layout(inv: Inventory, index: int, rails: int, fps: dict[str, Any]) -> Layout:
    """The Layout of inventory pair `index` with its first `rails` rails, from both hosts' probes
    (fps: role -> fingerprint with "rails"); each agent pinned by rail_cpus."""
    ip = inv.pairs[index]
    sides: dict[str, tuple[Host, ...]] = {}
    per_rail: list[dict[str, Any]] = [{"rail": r, "subnet": None, "bridge": None, "agents": []} for r in range(rails)]
    for role in ROLES:
        h: InventoryHost = getattr(ip, role)
        cpus = rail_cpus(h, rails, fps[role])
        nics = fps[role].get("rails") or [None] * rails
        agents = []
        for r in range(rails):
            rail = h.rails[r]
            agents.append(Host(f"{ip.name}/{role}/r{r}", h.gateway_spec(cpus=cpus[r]), rail.data_addr, rail.interface, None))
            per_rail[r]["agents"].append({"role": role, "instance": 0, "netns": None, "interface": rail.interface,
                                          "addr": rail.data_addr, "cpus": cpus[r],
                                          "numa_node": (nics[r] or {}).get("numa_node")})
        sides[role] = tuple(agents)
    details = {"inventory": inv.source, "ssh": {r: f"{getattr(ip, r).ssh}:{getattr(ip, r).port}" for r in ROLES},
               "rails": rails, "topology": [1, 1], "per_rail": per_rail,
               "fingerprint": {f"{role}0": fps[role] for role in ROLES}}
    return Layout(ip.name, HostsFabric.name, (sides["prefill"],), (sides["decode"],), details)


class HostsFabric:
    """Real host pairs over SSH: separate kernels (no shared clock); each host reports its own
    NICs and answers its own transport probes."""

    name = "hosts"
    shares_clock = False
    probes_here = False
    needs_inventory = True

    def open(self, request: PairRequest) -> tuple[HostPair, Any]:
        if not request.hosts_file:
            raise FabricUsageError("--kv-fabric=hosts needs an inventory: --kv-hosts PATH")
        inv = load_inventory(request.hosts_file)
        nworkers = request.nworkers if request.nworkers is not None else alloc.worker_count(os.environ)
        index = alloc.inventory_index(request.worker, nworkers, len(inv.pairs), inv.source)
        pair, fps = check_pair(inv, index, request.timeout_s)
        pair.details["fingerprint"] = fps
        return pair, lambda: None  # agents over SSH end with their gateways (runner)

    def open_layout(self, request: PairRequest) -> tuple[Layout, Any]:
        """The rails of this worker's inventory pair: --kv-rails N takes each host's first N
        `rails` (one agent per rail, pinned to its NIC's NUMA node or the inventory's cpus)."""
        if request.rails == 1 and tuple(request.topology) == (1, 1):
            pair, closer = self.open(request)
            return Layout.of_pair(pair), closer
        if tuple(request.topology) != (1, 1):
            raise FabricUsageError(f"--kv-fabric=hosts places the rails of one inventory pair; topology "
                                   f"{tuple(request.topology)} (several instances) needs --kv-fabric=netns")
        if not request.hosts_file:
            raise FabricUsageError("--kv-fabric=hosts needs an inventory: --kv-hosts PATH")
        inv = load_inventory(request.hosts_file)
        nworkers = request.nworkers if request.nworkers is not None else alloc.worker_count(os.environ)
        index = alloc.inventory_index(request.worker, nworkers, len(inv.pairs), inv.source)
        ip = inv.pairs[index]
        have = len(ip.prefill.rails)
        if request.rails > have:
            raise FabricUsageError(f"--kv-rails {request.rails}: {inv.source}: pairs[{index}] ({ip.name}) lists "
                                   f"{have} rails per host (field 'rails'); add rails or ask for fewer")
        pair = ip.host_pair(inv.source)
        fps: dict[str, Any] = {}
        for role in ROLES:
            host = getattr(pair, role)
            names = [r.interface for r in getattr(ip, role).rails[:request.rails]]
            fp = probe_host(host, request.timeout_s, names)
            _check_fingerprint(host, fp, inv.source, f"pairs[{index}] ({ip.name}).{role}.interface")
            _check_rails(host, fp, names, inv.source, f"pairs[{index}] ({ip.name}).{role}.rails")
            fps[role] = fp
        return build_layout(inv, index, request.rails, fps), lambda: None

    def interfaces(self, pair: HostPair) -> list[dict[str, Any]]:
        return []  # the hosts' own fingerprints name their interfaces

    def link_cause(self, pair: HostPair) -> str | None:
        return None
