"""open_pair(): the one entry point the plugin's session fixture calls to get this worker's pair,
and the table of fabrics it picks from (a name -> Fabric registry, not an if-chain).

The built-ins load lazily (the netns fabric needs pyroute2 only when used); a plug-in adds one
with register_fabric(). Teardown on every way out: see teardown.py.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import KvFabricError
from .alloc import FabricUnavailable, FabricUsageError
from .base import Fabric, HostPair, Layout, PairRequest
from .netns_options import NETNS_OPTION_KEYS

# name -> "module:class" of the built-in fabrics, in the order help texts list them.
_BUILTIN = {"local": "local:LocalFabric", "netns": "netns_fabric:NetnsFabric", "hosts": "hosts:HostsFabric"}
FABRICS = tuple(_BUILTIN)  # the built-in fabric names (choices of --kv-fabric and `kvfabric sweep --fabric`)
_registered: dict[str, Fabric] = {}


def register_fabric(fabric: Fabric) -> None:
    """Make `fabric` selectable by its name (a plug-in's own fabric; a built-in name is refused)."""
    if fabric.name in _BUILTIN:
        raise FabricUsageError(f"fabric {fabric.name!r} is built in; choose another name")
    _registered[fabric.name] = fabric


def fabric_names() -> tuple[str, ...]:
    """Every selectable fabric: the built-ins, then registered ones."""
    return FABRICS + tuple(n for n in _registered if n not in _BUILTIN)


def get_fabric(name: str) -> Fabric:
    """The Fabric called `name` (a HostPair's `fabric` field); FabricUsageError lists the valid ones."""
    fabric = _registered.get(name)
    if fabric is not None:
        return fabric
    where = _BUILTIN.get(name)
    if where is None:
        raise FabricUsageError(f"unknown fabric {name!r}; valid: {', '.join(fabric_names())}")
    module, cls = where.split(":")
    fabric = getattr(importlib.import_module(f"{__package__}.{module}"), cls)()
    _registered[name] = fabric
    return fabric


def known_fabric(name: str) -> Fabric | None:
    """The Fabric called `name`, or None for a name only a pytest plug-in's
    `pytest_kvfabric_fabrics` hook knows (it opens pairs itself; see hookspecs.py)."""
    try:
        return get_fabric(name)
    except FabricUsageError:
        return None


def probes_here(name: str) -> bool:
    """Whether transports are probed in this process for pairs of fabric `name` (loopback);
    elsewhere the agents' own hosts answer. A hook-only fabric probes on its hosts."""
    fabric = known_fabric(name)
    return bool(fabric is not None and fabric.probes_here)


def fabric_for(pair: HostPair) -> Fabric:
    """The Fabric that made `pair`."""
    return get_fabric(pair.fabric)


def open_pair(fabric: str, *, worker: int, hosts_file: str | None = None,
              netns_options: dict[str, Any] | None = None, nworkers: int | None = None,
              timeout_s: float = 10.0, netns_prefix: str | None = None) -> tuple[HostPair, Callable[[], None]]:
    """(HostPair, closer) for this worker.

    Raises FabricUnavailable (skip reason; NetnsUnavailable is one), FabricUsageError (bad options,
    more workers than pairs), ProfileError (inventory) or HostUnreachable (host + cause): all
    KvFabricError with a one-line message."""
    return get_fabric(fabric).open(PairRequest(worker=worker, hosts_file=hosts_file,
                                               netns_options=dict(netns_options or {}), nworkers=nworkers,
                                               timeout_s=timeout_s, netns_prefix=netns_prefix))


def open_layout(fabric: str, request: PairRequest) -> tuple[Layout, Callable[[], None]]:
    """(Layout, closer) for a run of several agents per side (rails) or several instances
    (topology). A fabric without `open_layout` serves only the plain pair; asking it for more is
    a FabricUsageError that names the fabric and what it cannot place."""
    fab = get_fabric(fabric)
    opener = getattr(fab, "open_layout", None)
    if opener is not None:
        return opener(request)
    if request.rails != 1 or tuple(request.topology) != (1, 1):
        raise FabricUsageError(
            f"fabric {fabric!r} cannot place rails={request.rails} topology={tuple(request.topology)} "
            "(it opens a single prefill/decode pair only)")
    pair, closer = fab.open(request)
    return Layout.of_pair(pair), closer


def layout_interfaces(layout: Layout) -> list[dict[str, Any]]:
    """Every agent's data-plane interface in a layout, one row per (role, instance, rail): name,
    netns, host, CPUs it was pinned to, and the driver, firmware and MTU its fabric probed
    (details["fingerprint"]: "<role><i>" -> {"rails": [nic, ...]}, or a plain pair's
    role -> {"nic": nic}). What a case records in its fingerprint for every rail."""
    fps = layout.details.get("fingerprint") or {}
    agents_facts = {(a["role"], a["instance"], rail["rail"]): a
                    for rail in layout.details.get("per_rail") or () for a in rail["agents"]}
    out = []
    for role, side in (("prefill", layout.prefill), ("decode", layout.decode)):
        for i, agents in enumerate(side):
            fp = fps.get(f"{role}{i}") or (fps.get(role) if len(side) == 1 else None) or {}
            nics = fp.get("rails") or [fp.get("nic")]
            for r, h in enumerate(agents):
                nic = (nics[r] if r < len(nics) else None) or {}
                out.append({"name": h.interface or "lo", "netns": h.netns, "host": h.name, "role": role,
                            "instance": i, "rail": r, "cpus": agents_facts.get((role, i, r), {}).get("cpus"),
                            "mtu": nic.get("mtu"), "driver": nic.get("driver"),
                            "driver_version": nic.get("driver_version"), "firmware": nic.get("firmware"),
                            "numa_node": nic.get("numa_node")})
    return out


__all__ = ["Layout", "open_layout", "layout_interfaces", "FABRICS", "NETNS_OPTION_KEYS", "Fabric", "fabric_for", "fabric_names", "get_fabric", "known_fabric",
           "open_pair", "probes_here",
           "register_fabric", "FabricUnavailable", "FabricUsageError", "KvFabricError"]
