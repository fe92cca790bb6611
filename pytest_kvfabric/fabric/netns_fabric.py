"""The `netns` Fabric: namespaces on this machine, one pair (netns.py) or a layout of rails and
instances (netns_layout.py). Kept apart from both so each builder stays free of the other."""
from __future__ import annotations

import os
from typing import Any

from . import alloc
from . import netns_layout as nl_mod
from . import rails as rl
from .alloc import FabricUsageError
from .base import HostPair, Layout, PairRequest
from .netns import (PREFIX, NetnsPair, NetnsUnavailable, cleanup_stale, links_down,
                    netns_unavailable_reason)
from .netns_layout import NetnsLayout
from .netns_options import netns_kwargs
from .teardown import guarded


class NetnsFabric:
    """Two namespaces on this host: one kernel (shared clock), but the agents' view of the
    network (and a transport's probe) is the namespace's, not this process's."""

    name = "netns"
    shares_clock = True
    probes_here = False
    needs_inventory = False

    def open(self, request: PairRequest) -> tuple[HostPair, Any]:
        from . import hosts

        prefix = request.netns_prefix or PREFIX
        try:
            kw = netns_kwargs(request.netns_options)
        except ValueError as exc:
            raise FabricUsageError(str(exc)) from None
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        cleanup_stale(prefix)
        np = NetnsPair.create(str(os.getpid()), alloc.netns_index(request.worker), prefix=prefix, **kw)
        closer = guarded(np.destroy)
        try:  # also proves the gateway spec starts an interpreter inside each namespace
            np.pair.details["fingerprint"] = {r: hosts.fingerprint(getattr(np.pair, r), request.timeout_s)
                                              for r in hosts.ROLES}
        except BaseException:
            closer()
            raise
        return np.pair, closer

    def open_layout(self, request: PairRequest) -> tuple[Layout, Any]:
        """Rails and instances (netns_layout.py); the plain pair when there is one of each."""
        if request.rails == 1 and tuple(request.topology) == (1, 1):
            pair, closer = self.open(request)
            return Layout.of_pair(pair), closer
        try:
            kw = netns_kwargs(request.netns_options)
            rl.check_shape(request.rails, request.topology)
        except ValueError as exc:
            raise FabricUsageError(str(exc)) from None
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        prefix = request.netns_prefix or PREFIX
        cleanup_stale(prefix)
        nl = NetnsLayout.create(str(os.getpid()), alloc.netns_index(request.worker), request.rails,
                                tuple(request.topology), prefix=prefix, **kw)
        closer = guarded(nl.destroy)
        try:  # one probe per namespace: proves its gateway spec, records every rail's NIC
            assert nl.layout is not None
            nl.layout.details["fingerprint"] = nl_mod.probe_layout(nl.layout, request.timeout_s)
        except BaseException:
            closer()
            raise
        return nl.layout, closer

    def interfaces(self, pair: HostPair) -> list[dict[str, Any]]:
        if "per_rail" in pair.details:  # a flow of a layout: its two agents' rail interfaces
            return nl_mod.pair_interfaces(pair)
        split = pair.details.get("cpu_split") or {}  # --kv-netns-cpu-split: the CPUs each side had
        return [{"name": h.interface or "lo", "netns": h.netns, "cpus": split.get(role)}
                for role, h in (("prefill", pair.prefill), ("decode", pair.decode))]

    def link_cause(self, pair: HostPair) -> str | None:
        ends = [(h.netns, h.interface) for h in (pair.prefill, pair.decode) if h.interface]
        if pair.details.get("bridge_netns"):  # the bridge ports of a layout's flow too
            ends += nl_mod.bridge_ends(pair)
        down = links_down(ends)
        return "; ".join(down) or None
