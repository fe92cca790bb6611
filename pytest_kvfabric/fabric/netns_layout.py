"""A netns layout: rails and instances (xPyD) as namespaces on this machine.

- rails=N, one instance per side: N veth pairs straight between the prefill and the decode
  namespace, one subnet per rail (10.<204+r>.<index>.0/24), MTU / offloads / tbf rate on both
  ends of every rail, as the plain pair has them on its one veth.
- P prefill and D decode instances: P+D namespaces plus one of the fabric's own holding a Linux
  bridge per rail; each instance's rail-r veth has its other end in rail r's bridge. The tbf
  rate (--kv-netns-rate-mbit) sits on the bridge port towards each decode instance: that
  port's queue is where several senders' packets meet (incast), the decode side's link.
- Each agent is pinned to its rail's CPU set (rails.rail_cpu_sets; a veth has no NUMA node)
  and its interface's receive processing (RPS) is steered to the same CPUs.

Names and the creator records follow netns.py (pid files written before each namespace
exists), so netns.cleanup_stale() removes a killed session's namespaces, the bridge namespace
and with it the bridges included. Everything is deleted by deleting the namespaces.
"""
from __future__ import annotations

import os
import shutil
from typing import Any

from ..errors import KvFabricError
from ..lab import env as lab_env
from . import netns as ns
from . import rails as rl
from .base import Host, Layout
from .netns_options import parse_offloads


class NetnsLayout:
    """Namespaces, veths and bridges of one layout; `create` builds, `destroy` removes all."""

    def __init__(self, prefix: str, tag: str, index: int, rails: int, topology: tuple[int, int], mtu: int,
                 offloads: dict[str, bool], rate_mbit: float | None, cpu_split: bool) -> None:
        self.prefix, self.tag, self.index = prefix, tag, index
        self.rails, self.topology = rails, topology
        self.mtu, self.offloads, self.rate_mbit, self.cpu_split = mtu, dict(offloads), rate_mbit, cpu_split
        self.bridged = rl.bridged(topology)
        self.allowed = sorted(os.sched_getaffinity(0))
        self.plan = rl.netns_plan(prefix, tag, index, rails, topology, self.allowed, cpu_split)
        self.ns_bridge = rl.bridge_netns(prefix, tag, index) if self.bridged else None
        self.namespaces = list(dict.fromkeys(p.netns for p in self.plan)) + ([self.ns_bridge] if self.ns_bridge else [])
        self.layout: Layout | None = None
        self._made: list[str] = []
        self._destroyed = False

    @classmethod
    def create(cls, tag: str, index: int, rails: int, topology: tuple[int, int], mtu: int = 9000,
               offloads: dict[str, bool] | None = None, rate_mbit: float | None = None, *,
               prefix: str = ns.PREFIX, cpu_split: bool = False) -> "NetnsLayout":
        """Build the layout (everything removed again on any failure). Raises NetnsUnavailable
        (the skip reason), ValueError (bad shape or option) or KvFabricError."""
        reason = ns.netns_unavailable_reason()
        if reason:
            raise ns.NetnsUnavailable(reason)
        if not prefix or not tag or "/" in tag or "/" in prefix:
            raise ValueError(f"bad netns prefix/tag {prefix!r}/{tag!r}")
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} out of range 68..65535")
        if rate_mbit is not None and not rate_mbit > 0:
            raise ValueError(f"rate_mbit must be > 0, got {rate_mbit}")
        rails, topology = rl.check_shape(rails, topology)
        self = cls(prefix, tag, index, rails, topology, mtu, parse_offloads(offloads), rate_mbit, cpu_split)
        if any(p.cpus for p in self.plan) and shutil.which("taskset") is None:
            raise ns.NetnsUnavailable("pinning rail agents needs 'taskset' (util-linux) on PATH, not found")
        ns.build_or_undo(self._build, self.destroy, f"netns layout {self.namespaces[0]}..")
        return self

    # --- building ------------------------------------------------------------------------

    def _build(self) -> None:
        from pyroute2 import netns as pr_netns

        for name in self.namespaces:
            if (ns.NETNS_DIR / name).exists():
                raise KvFabricError(f"netns {name} already exists (another session with the same tag?)")
        for name in self.namespaces:
            ns.write_pidfile(name)  # before the namespace: a crash in between stays cleanable
            self._made.append(name)
            pr_netns.create(name)
        for name in self.namespaces:
            self._lo_up(name)
        if self.bridged:
            self._build_bridged()
        else:
            self._build_direct()
        for p in self.plan:
            if lab_env.virtualized():
                ns.add_rxe(p.netns, p.ifname)
            if p.cpus:
                ns.set_rps(p.netns, p.ifname, p.cpus)
        self.layout = self._layout()

    @staticmethod
    def _lo_up(name: str) -> None:
        from pyroute2 import IPRoute

        with IPRoute(netns=name) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def _agent(self, role: str, i: int, rail: int) -> rl.RailPlan:
        return next(p for p in self.plan if (p.role, p.instance, p.rail) == (role, i, rail))

    def _build_direct(self) -> None:
        from pyroute2 import IPRoute

        for r in range(self.rails):
            p, d = self._agent("prefill", 0, r), self._agent("decode", 0, r)
            with IPRoute(netns=p.netns) as ipr:
                ipr.link("add", ifname=p.ifname, kind="veth", peer={"ifname": d.ifname, "net_ns_fd": d.netns})
            for end in (p, d):
                self._configure(end.netns, end.ifname, end.addr, shaped=True)

    def _build_bridged(self) -> None:
        from pyroute2 import IPRoute

        assert self.ns_bridge is not None
        for r in range(self.rails):
            br = rl.bridge_ifname(self.prefix, r)
            with IPRoute(netns=self.ns_bridge) as ipr:
                ipr.link("add", ifname=br, kind="bridge")
                bidx = ipr.link_lookup(ifname=br)[0]
                ipr.link("set", index=bidx, mtu=self.mtu)
                ipr.link("set", index=bidx, state="up")
            for p in (a for a in self.plan if a.rail == r):
                port = rl.port_ifname(self.prefix, p.role, p.instance, r)
                with IPRoute(netns=self.ns_bridge) as ipr:
                    ipr.link("add", ifname=port, kind="veth", peer={"ifname": p.ifname, "net_ns_fd": p.netns})
                    idx = ipr.link_lookup(ifname=port)[0]
                    ipr.link("set", index=idx, mtu=self.mtu)
                    ipr.link("set", index=idx, master=bidx)
                    ipr.link("set", index=idx, state="up")
                    if self.rate_mbit is not None and p.role == "decode":  # the fan-in queue
                        ipr.tc("add", "tbf", index=idx, **ns.tbf_params(self.rate_mbit, self.mtu))
                ns.set_offloads(self.ns_bridge, port, self.offloads)
                self._configure(p.netns, p.ifname, p.addr, shaped=False)

    def _configure(self, netns: str, ifname: str, addr: str, *, shaped: bool) -> None:
        from pyroute2 import IPRoute

        with IPRoute(netns=netns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            ipr.link("set", index=idx, mtu=self.mtu)
            ipr.addr("add", index=idx, address=addr, prefixlen=rl.PREFIXLEN)
            ipr.link("set", index=idx, state="up")
            if shaped and self.rate_mbit is not None:
                ipr.tc("add", "tbf", index=idx, **ns.tbf_params(self.rate_mbit, self.mtu))
        ns.set_offloads(netns, ifname, self.offloads)

    def _layout(self) -> Layout:
        def host(p: rl.RailPlan) -> Host:
            return Host(f"{p.netns}/r{p.rail}", ns.netns_gateway_spec(p.netns, cpus=p.cpus), p.addr, p.ifname, p.netns)

        sides: dict[str, list[tuple[Host, ...]]] = {}
        for role, n in zip(("prefill", "decode"), self.topology):
            sides[role] = [tuple(host(self._agent(role, i, r)) for r in range(self.rails)) for i in range(n)]
        return Layout(name=f"netns:{self.tag}-{self.index}", fabric=ns.FABRIC_NAME, prefill=tuple(sides["prefill"]),
                      decode=tuple(sides["decode"]), details=self.details())

    def details(self) -> dict[str, Any]:
        """What a report records about this layout (per rail: subnet, links, CPUs)."""
        per_rail = []
        for r in range(self.rails):
            agents = [a for a in self.plan if a.rail == r]
            per_rail.append({
                "rail": r, "subnet": rl.rail_subnet(self.index, r),
                "bridge": rl.bridge_ifname(self.prefix, r) if self.bridged else None,
                "agents": [{"role": a.role, "instance": a.instance, "netns": a.netns, "interface": a.ifname,
                            "addr": a.addr, "cpus": a.cpus,
                            "port": rl.port_ifname(self.prefix, a.role, a.instance, r) if self.bridged else None}
                           for a in agents],
            })
        return {
            "mtu": self.mtu,
            "offloads": {k: ("on" if v else "off") for k, v in self.offloads.items()},
            "rate_mbit": self.rate_mbit,
            # where the tbf sits: both ends of each rail's veth, or the bridge ports towards decode
            "rate_on": None if self.rate_mbit is None else (
                "bridge port towards each decode instance" if self.bridged else "both ends of every rail"),
            "rails": self.rails,
            "topology": list(self.topology),
            "netns": list(self.namespaces),
            "bridge_netns": self.ns_bridge,
            "per_rail": per_rail,
            "cpu_split": self.cpu_split,
            "cpus_allowed": self.allowed,
        }

    # --- teardown ------------------------------------------------------------------------

    def destroy(self) -> None:
        """Kill processes left inside, delete every namespace (veths and bridges go with them). Idempotent."""
        if self._destroyed:
            return
        errors = []
        for name in reversed(self._made):
            try:
                ns.remove_netns(name)
            except Exception as exc:  # keep going: remove the others too
                errors.append(f"{name}: {exc}")
        self._destroyed = True
        if errors:
            raise KvFabricError("netns layout teardown failed: " + "; ".join(errors))

    def interfaces(self) -> list[dict[str, Any]]:
        """Every agent's interface with its rail, role, instance and CPUs (instance side only)."""
        return [{"name": a.ifname, "netns": a.netns, "rail": a.rail, "role": a.role, "instance": a.instance,
                 "cpus": a.cpus} for a in self.plan]

    def link_ends(self) -> list[tuple[str, str]]:
        """(netns, ifname) of every link end, bridge ports and bridges included (for links_down)."""
        ends = [(a.netns, a.ifname) for a in self.plan]
        if self.ns_bridge:
            ends += [(self.ns_bridge, rl.port_ifname(self.prefix, a.role, a.instance, a.rail)) for a in self.plan]
            ends += [(self.ns_bridge, rl.bridge_ifname(self.prefix, r)) for r in range(self.rails)]
        return ends


# --- what a case records (module functions: a layout's flow pair carries the facts in details) ---

def _agent_facts(pair_details: dict[str, Any], netns: str | None, ifname: str | None) -> dict[str, Any] | None:
    for rail in pair_details.get("per_rail") or ():
        for a in rail["agents"]:
            if a["netns"] == netns and a["interface"] == ifname:
                return {"rail": rail["rail"], **a}
    return None


def pair_interfaces(pair: Any) -> list[dict[str, Any]]:
    """The two agents' interfaces of a layout's flow pair, with rail, role, instance, CPUs and the
    driver, firmware and MTU its namespace's probe reported for that rail's NIC."""
    fps = pair.details.get("fingerprint") or {}
    out = []
    for h in (pair.prefill, pair.decode):
        a = _agent_facts(pair.details, h.netns, h.interface) or {}
        nics = (fps.get(f"{a.get('role')}{a.get('instance')}") or {}).get("rails") or []
        nic = (nics[a["rail"]] if a.get("rail") is not None and a["rail"] < len(nics) else None) or {}
        out.append({"name": h.interface or "lo", "netns": h.netns, "rail": a.get("rail"), "role": a.get("role"),
                    "instance": a.get("instance"), "cpus": a.get("cpus"), "mtu": nic.get("mtu"),
                    "driver": nic.get("driver"), "firmware": nic.get("firmware")})
    return out


def bridge_ends(pair: Any) -> list[tuple[str, str]]:
    """(bridge netns, ifname) of the flow's two bridge ports and its rail's bridge."""
    bns = pair.details.get("bridge_netns")
    out: list[tuple[str, str]] = []
    for h in (pair.prefill, pair.decode):
        a = _agent_facts(pair.details, h.netns, h.interface)
        if a is None or not bns or not a.get("port"):
            continue
        out.append((bns, a["port"]))
        bridge = next((r["bridge"] for r in pair.details["per_rail"] if r["rail"] == a["rail"]), None)
        if bridge and (bns, bridge) not in out:
            out.append((bns, bridge))
    return out


def probe_layout(layout: Layout, timeout_s: float) -> dict[str, Any]:
    """One probe per instance namespace (its first rail's agent spec), reporting every rail's NIC:
    {"prefill0": fingerprint with "rails": [nic of rail 0, rail 1, ...], "decode0": ...}."""
    from . import hosts

    out: dict[str, Any] = {}
    for role, side in (("prefill", layout.prefill), ("decode", layout.decode)):
        for i, agents in enumerate(side):
            out[f"{role}{i}"] = hosts.fingerprint(agents[0], timeout_s,
                                                  rails=[h.interface for h in agents if h.interface])
    return out
