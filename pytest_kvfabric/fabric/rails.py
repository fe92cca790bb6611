"""Rails and instances of a fabric layout: names, addresses and CPU sets. Pure (no I/O).

A rail is one NIC (interface) and the agent process that drives it; rank k uses rail k mod N.
A layout has P prefill and D decode instances, each with one agent per rail (base.Layout).

CPU sets (the rule every fabric follows; `rail_cpu_sets` is the whole of it):
- A rail's agent runs on the CPUs of its NIC's NUMA node where the host has one
  (/sys/class/net/IF/device/numa_node >= 0): the node's CPUs this process may use are split
  among the rails on that node.
- Rails whose NIC has no NUMA node (a veth, a virtual NIC, a one-node host) split the CPUs this
  process may use among themselves, in contiguous slices that differ in size by at most one.
- With fewer CPUs than rails, rails share cores (rail r gets CPU r mod C): on a 2-core host, 4
  rails run two to a core, and the aggregate figures show the CPUs, not the rails.
- A set equal to every allowed CPU is no pinning at all (the agent is started without taskset).

netns layouts (netns_layout.py): one namespace per instance, ``<prefix><tag>-<index>p<i>`` and
``...d<j>``; with more than one instance, a namespace of the fabric's own, ``...b``, holds one
Linux bridge per rail, so every instance's rail-r link meets in rail r's bridge (fan-in shares
one queue: the bridge port towards a decode instance). Interface names need only be unique
inside their namespace (no link of ours ever sits in the root namespace).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_RAILS = 16  # second octet 204..219: one /16 per rail
MAX_INSTANCES = 100  # per side: prefill hosts .1-.100, decode .129-.228 in a rail's /24
RAIL_NET_BASE = 204  # rail r's subnets are 10.<204 + r>.<index>.0/24
PREFIXLEN = 24
IFNAMSIZ = 15
ROLE_LETTER = {"prefill": "p", "decode": "d"}


def check_shape(rails: int, topology: Sequence[int]) -> tuple[int, tuple[int, int]]:
    """(rails, (P, D)) validated; ValueError names the field and the valid range."""
    if isinstance(rails, bool) or not isinstance(rails, int) or not 1 <= rails <= MAX_RAILS:
        raise ValueError(f"rails must be an integer in 1..{MAX_RAILS}, got {rails!r}")
    topo = tuple(topology)
    if len(topo) != 2 or any(isinstance(n, bool) or not isinstance(n, int) for n in topo):
        raise ValueError(f"topology must be (prefill instances, decode instances), got {topology!r}")
    for side, n in zip(("prefill", "decode"), topo):
        if not 1 <= n <= MAX_INSTANCES:
            raise ValueError(f"topology: {side} instances must be in 1..{MAX_INSTANCES}, got {n}")
    return rails, (topo[0], topo[1])


def bridged(topology: Sequence[int]) -> bool:
    """Whether a netns layout needs a bridge: more than one instance on either side."""
    return tuple(topology) != (1, 1)


def instance_netns(prefix: str, tag: str, index: int, role: str, i: int) -> str:
    return f"{prefix}{tag}-{index}{ROLE_LETTER[role]}{i}"


def bridge_netns(prefix: str, tag: str, index: int) -> str:
    return f"{prefix}{tag}-{index}b"


def _ifname(name: str) -> str:
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} longer than {IFNAMSIZ} characters (shorten the prefix)")
    return name


def rail_ifname(prefix: str, role: str, i: int, rail: int) -> str:
    """Instance i's rail-`rail` interface, inside the instance's namespace (e.g. kvf-p0r1)."""
    return _ifname(f"{prefix}{ROLE_LETTER[role]}{i}r{rail}")


def port_ifname(prefix: str, role: str, i: int, rail: int) -> str:
    """The bridge-side end of that link, inside the bridge namespace (e.g. kvf-bp0r1)."""
    return _ifname(f"{prefix}b{ROLE_LETTER[role]}{i}r{rail}")


def bridge_ifname(prefix: str, rail: int) -> str:
    return _ifname(f"{prefix}br{rail}")


def rail_subnet(index: int, rail: int) -> str:
    _check_index_rail(index, rail)
    return f"10.{RAIL_NET_BASE + rail}.{index}.0/{PREFIXLEN}"


def rail_addr(index: int, rail: int, role: str, i: int) -> str:
    """Instance i's address on rail `rail`: prefill i -> .1+i, decode j -> .129+j."""
    _check_index_rail(index, rail)
    if not 0 <= i < MAX_INSTANCES:
        raise ValueError(f"instance {i} out of range 0..{MAX_INSTANCES - 1}")
    host = (1 if role == "prefill" else 129) + i
    return f"10.{RAIL_NET_BASE + rail}.{index}.{host}"


def _check_index_rail(index: int, rail: int) -> None:
    if not 0 <= index <= 255:
        raise ValueError(f"layout index {index} out of range 0..255")
    if not 0 <= rail < MAX_RAILS:
        raise ValueError(f"rail {rail} out of range 0..{MAX_RAILS - 1}")


def rank_rail(rank: int, rails: int) -> int:
    """The rail rank `rank` uses: k mod N (GPU k talks to GPU k of the other node over rail k)."""
    return rank % rails


def split_even(cpus: Sequence[int], n: int) -> list[list[int]]:
    """`cpus` (sorted, deduplicated) in n contiguous slices whose sizes differ by at most one;
    with fewer CPUs than n, slice r is [cpus[r mod C]] (slices share cores)."""
    if n < 1:
        raise ValueError(f"need at least one slice, got {n}")
    cs = sorted(set(cpus))
    if not cs:
        raise ValueError("no CPUs to assign")
    if len(cs) < n:
        return [[cs[r % len(cs)]] for r in range(n)]
    base, extra = divmod(len(cs), n)
    out, start = [], 0
    for r in range(n):
        size = base + (1 if r < extra else 0)
        out.append(cs[start:start + size])
        start += size
    return out


def rail_cpu_sets(cpus: Sequence[int], rails: int, rail_nodes: Sequence[int | None] | None = None,
                  node_cpus: Mapping[int, Sequence[int]] | None = None) -> list[list[int]]:
    """CPU set of each rail's agent (the rule in this module's docstring).

    cpus: what this process may use; rail_nodes[r]: rail r's NIC NUMA node or None;
    node_cpus: each node's CPUs. A node whose CPUs this process may not use counts as no node."""
    allowed = sorted(set(cpus))
    if not allowed:
        raise ValueError("no CPUs to assign")
    nodes = list(rail_nodes) if rail_nodes is not None else [None] * rails
    if len(nodes) != rails:
        raise ValueError(f"{len(nodes)} NUMA nodes given for {rails} rails")
    local: dict[int | None, list[int]] = {}
    for r, node in enumerate(nodes):
        usable = sorted(set((node_cpus or {}).get(node, ())) & set(allowed)) if node is not None else []
        local.setdefault(node if usable else None, []).append(r)
    out: list[list[int]] = [[] for _ in range(rails)]
    for node, members in local.items():
        pool = allowed if node is None else sorted(set((node_cpus or {})[node]) & set(allowed))
        for r, s in zip(members, split_even(pool, len(members))):
            out[r] = s
    return out


def parse_cpulist(text: str) -> list[int]:
    """sysfs cpulist ("0-3,8,10-11") -> [0, 1, 2, 3, 8, 10, 11]; ValueError on anything else."""
    out: set[int] = set()
    for part in text.strip().split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"not a CPU list: {text!r}")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a or b - a > 4096:
            raise ValueError(f"not a CPU list: {text!r}")
        out.update(range(a, b + 1))
    return sorted(out)


def pin_or_none(cpus: Sequence[int], allowed: Sequence[int]) -> list[int] | None:
    """`cpus`, or None when it is every allowed CPU (pinning to everything is no pinning)."""
    return None if set(cpus) >= set(allowed) else sorted(cpus)


@dataclass(frozen=True)
class RailPlan:
    """Where one agent sits in a netns layout (pure facts; the fabric creates them)."""

    role: str
    instance: int
    rail: int
    netns: str
    ifname: str
    addr: str
    cpus: list[int] | None


def netns_plan(prefix: str, tag: str, index: int, rails: int, topology: Sequence[int],
               cpus: Sequence[int], cpu_split: bool = False) -> list[RailPlan]:
    """Every agent of a netns layout, prefill instances first, then decode, rails in order.

    cpu_split: prefill agents share the lower half of `cpus`, decode agents the upper half (as
    the plain pair's --kv-netns-cpu-split), each half split among the rails; otherwise both
    sides of rail r share rail r's set of all `cpus`."""
    rails, (np_, nd) = check_shape(rails, topology)
    allowed = sorted(set(cpus))
    if cpu_split:
        if len(allowed) < 2:
            raise ValueError(f"cpu_split needs at least 2 CPUs available to this process, found {len(allowed)}")
        half = len(allowed) // 2
        sets = {"prefill": rail_cpu_sets(allowed[:half], rails), "decode": rail_cpu_sets(allowed[half:], rails)}
    else:
        shared = rail_cpu_sets(allowed, rails)
        sets = {"prefill": shared, "decode": shared}
    out = []
    for role, n in (("prefill", np_), ("decode", nd)):
        for i in range(n):
            ns = instance_netns(prefix, tag, index, role, i)
            for r in range(rails):
                out.append(RailPlan(role, i, r, ns, rail_ifname(prefix, role, i, r), rail_addr(index, r, role, i),
                                    pin_or_none(sets[role][r], allowed)))
    return out
