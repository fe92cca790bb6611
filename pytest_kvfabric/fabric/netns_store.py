"""The store's own network namespace on the netns fabric: a third "host" beside the pair.

    client's namespace ──veth (the pair's link)── via namespace ──veth── store namespace
                          10.203.<i>.0/24                          10.213.<i>.0/24

The store namespace hangs off one of the pair's namespaces (`via`: the side across the pair's
link from the store's client), which forwards between its two veths; the client's namespace gets a
route to the store's subnet through it. So every fetched or offloaded byte crosses the pair's
veth, the link the prefill-to-decode writes use, and then the store's own veth.

Naming and cleanup follow fabric/netns.py: the namespace is ``<via namespace>s`` (so it carries
the session's prefix), its creator record is written before it exists in the same format
(``<pid> <starttime>`` in /run/kvfabric/<name>.pid), so `cleanup_stale` removes it when its
creator is gone; `destroy` kills what runs inside and deletes it (its veth goes with it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import KvFabricError
from .base import Host, HostPair
from .netns import IFNAMSIZ, NETNS_DIR, PID_DIR, PREFIXLEN, netns_gateway_spec, remove_netns

STORE_NET = "10.213"  # 10.213.<pair index>.0/24: the store's veth, inside our namespaces only


class StoreNetnsError(KvFabricError):
    """The store's namespace could not be built; names the step and the cause."""


def _creator_record(name: str) -> None:
    """Who made the namespace, before it exists (netns.py's record format: pid and start time)."""
    PID_DIR.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    (PID_DIR / f"{name}.pid").write_text(f"{pid} {start}\n")


def pair_index(pair: HostPair) -> int:
    """The pair's index from its subnet (10.203.<index>.0/24)."""
    try:
        return int(str(pair.details["subnet"]).split(".")[2])
    except (KeyError, IndexError, ValueError):
        raise StoreNetnsError(f"netns pair {pair.name} names no subnet to derive the store's from") from None


class StoreNetns:
    """Create with `StoreNetns(pair, via).create()`; `host` is where the store agent runs."""

    def __init__(self, pair: HostPair, via: str) -> None:
        if via not in ("prefill", "decode"):
            raise ValueError(f"via must be prefill or decode, got {via!r}")
        self.pair = pair
        self.via: Host = getattr(pair, via)
        self.other: Host = pair.decode if via == "prefill" else pair.prefill
        if not self.via.netns or not self.via.interface or not self.other.netns:
            raise StoreNetnsError(f"pair {pair.name} is not a netns pair (no namespace on its hosts)")
        index = pair_index(pair)
        self.name = f"{self.via.netns}s"
        self.if_via, self.if_store = f"{self.via.interface}v", f"{self.via.interface}s"
        if max(len(self.if_via), len(self.if_store)) > IFNAMSIZ:
            raise StoreNetnsError(f"store veth name {self.if_store!r} longer than {IFNAMSIZ} characters")
        self.subnet = f"{STORE_NET}.{index}.0/{PREFIXLEN}"
        self.addr_via, self.addr_store = f"{STORE_NET}.{index}.1", f"{STORE_NET}.{index}.2"
        self.mtu = int(pair.details.get("mtu") or 1500)
        self.host: Host | None = None

    def create(self) -> "StoreNetns":
        try:
            self._build()
        except BaseException as exc:
            self.destroy()
            if isinstance(exc, KvFabricError):
                raise
            if isinstance(exc, Exception):
                raise StoreNetnsError(f"cannot create the store's namespace {self.name}: {exc}") from exc
            raise
        return self

    def _build(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2 import netns as pr_netns

        if (NETNS_DIR / self.name).exists():
            raise StoreNetnsError(f"netns {self.name} already exists (another store of this pair?)")
        _creator_record(self.name)
        pr_netns.create(self.name)
        with IPRoute(netns=self.via.netns) as ipr:
            ipr.link("add", ifname=self.if_via, kind="veth", peer={"ifname": self.if_store, "net_ns_fd": self.name})
        for ns, ifname, addr in ((self.via.netns, self.if_via, self.addr_via), (self.name, self.if_store, self.addr_store)):
            with IPRoute(netns=ns) as ipr:
                if ns == self.name:
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.link("set", index=idx, mtu=self.mtu)
                ipr.addr("add", index=idx, address=addr, prefixlen=PREFIXLEN)
                ipr.link("set", index=idx, state="up")
        with IPRoute(netns=self.name) as ipr:  # everything else through the via namespace
            ipr.route("add", dst="0.0.0.0/0", gateway=self.addr_via)
        with IPRoute(netns=self.other.netns) as ipr:  # the client's side reaches the store through via
            ipr.route("add", dst=self.subnet, gateway=self.via.data_addr)
        # Forwarding is a per-namespace sysctl (no netlink call): set it from inside the via namespace.
        ip = shutil.which("ip") or "ip"
        subprocess.run([ip, "netns", "exec", self.via.netns, sys.executable, "-c",
                        "open('/proc/sys/net/ipv4/ip_forward', 'w').write('1')"],
                       check=True, capture_output=True, timeout=30)
        self.host = Host(self.name, netns_gateway_spec(self.name), self.addr_store, self.if_store, self.name)

    def destroy(self) -> None:
        """Delete the store's namespace (and its veth) and the client side's route. Idempotent."""
        try:
            from pyroute2 import IPRoute

            with IPRoute(netns=self.other.netns) as ipr:
                ipr.route("del", dst=self.subnet, gateway=self.via.data_addr)
        except Exception:  # noqa: BLE001 - already gone with its namespace, or never added
            pass
        remove_netns(self.name)

    def describe(self) -> dict[str, Any]:
        return {"netns": self.name, "via": self.via.netns, "veth": [self.if_via, self.if_store],
                "subnet": self.subnet, "store_addr": self.addr_store}
