"""open_pair(): the one entry point the plugin's session fixture calls to get this worker's pair.

Teardown happens on every way out we can catch: the returned closer (fixture finalizer, also
after failing tests and on Ctrl-C, which pytest turns into a normal session end), an atexit
hook, and a SIGTERM/SIGHUP handler that tears down and then re-delivers the signal. SIGKILL
cannot be caught: the namespaces stay behind with a dead creator pid, and the next start's
cleanup_stale() removes them (only names with our prefix whose creator is gone).
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from ..errors import KvFabricError
from . import alloc
from .alloc import FabricUnavailable, FabricUsageError
from .base import HostPair

FABRICS = ("local", "netns", "hosts")
NETNS_OPTION_KEYS = ("mtu", "offloads", "rate_mbit", "cpu_split")
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _guarded(close: Callable[[], None]) -> Callable[[], None]:
    """Make `close` idempotent and run it at exit and on SIGTERM/SIGHUP as well."""
    state = {"done": False}
    previous: dict[int, Any] = {}
    owner = os.getpid()  # forked children (pyroute2 forks helpers) inherit handlers: they must not tear down

    def closer() -> None:
        if state["done"] or os.getpid() != owner:
            return
        state["done"] = True  # first: a signal arriving during teardown must not re-enter
        try:
            atexit.unregister(closer)
            if threading.current_thread() is threading.main_thread():
                for sig, old in previous.items():
                    if signal.getsignal(sig) is on_signal:
                        signal.signal(sig, old)
        finally:
            close()

    def on_signal(signum: int, frame: object) -> None:
        try:
            closer()  # no-op in a forked child: it just dies the default way
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # die the way the sender asked

    atexit.register(closer)
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):  # never override someone else's handler
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, on_signal)
    return closer


def _netns_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    from .netns import OFFLOAD_KEYS, parse_offloads

    unknown = sorted(set(options) - set(NETNS_OPTION_KEYS))
    if unknown:
        raise alloc.FabricUsageError(f"unknown netns option(s) {', '.join(unknown)}; valid: {', '.join(NETNS_OPTION_KEYS)}")
    kw: dict[str, Any] = {}
    if options.get("mtu") is not None:
        kw["mtu"] = int(options["mtu"])
    offloads = options.get("offloads")
    if isinstance(offloads, str):
        try:
            offloads = parse_offloads(offloads)
        except ValueError as exc:
            raise alloc.FabricUsageError(f"--kv-netns-offloads: {exc}") from None
    if offloads:
        bad = sorted(set(offloads) - set(OFFLOAD_KEYS))
        if bad:
            raise alloc.FabricUsageError(f"--kv-netns-offloads: unknown offload {bad[0]!r}; valid: {', '.join(OFFLOAD_KEYS)}")
        kw["offloads"] = {k: bool(v) for k, v in offloads.items()}
    if options.get("rate_mbit") is not None:
        kw["rate_mbit"] = float(options["rate_mbit"])
    if options.get("cpu_split"):
        kw["cpu_split"] = True
    return kw


def open_pair(fabric: str, *, worker: int, hosts_file: str | None = None,
              netns_options: dict[str, Any] | None = None, nworkers: int | None = None,
              timeout_s: float = 10.0, netns_prefix: str | None = None) -> tuple[HostPair, Callable[[], None]]:
    """(HostPair, closer) for this worker.

    Raises FabricUnavailable (skip reason; NetnsUnavailable is one), FabricUsageError (bad options,
    more workers than pairs), ProfileError (inventory) or HostUnreachable (host + cause): all
    KvFabricError with a one-line message."""
    if fabric not in FABRICS:
        raise alloc.FabricUsageError(f"unknown fabric {fabric!r}; valid: {', '.join(FABRICS)}")
    if fabric == "local":
        from .local import local_pair

        return local_pair(), lambda: None
    if fabric == "netns":
        from . import hosts, netns

        prefix = netns_prefix or netns.PREFIX
        kw = _netns_kwargs(netns_options or {})
        reason = netns.netns_unavailable_reason()
        if reason:
            raise netns.NetnsUnavailable(reason)
        netns.cleanup_stale(prefix)
        np = netns.NetnsPair.create(str(os.getpid()), alloc.netns_index(worker), prefix=prefix, **kw)
        closer = _guarded(np.destroy)
        try:  # also proves the gateway spec starts an interpreter inside each namespace
            np.pair.details["fingerprint"] = {r: hosts.fingerprint(getattr(np.pair, r), timeout_s)
                                              for r in hosts.ROLES}
        except BaseException:
            closer()
            raise
        return np.pair, closer
    # hosts
    from . import hosts

    if not hosts_file:
        raise alloc.FabricUsageError("--kv-fabric=hosts needs an inventory: --kv-hosts PATH")
    inv = hosts.load_inventory(hosts_file)
    if nworkers is None:
        nworkers = alloc.worker_count(os.environ)
    index = alloc.inventory_index(worker, nworkers, len(inv.pairs), inv.source)
    pair, fps = hosts.check_pair(inv, index, timeout_s)
    pair.details["fingerprint"] = fps
    return pair, lambda: None  # agents over SSH end with their gateways (runner)


__all__ = ["FABRICS", "open_pair", "FabricUnavailable", "FabricUsageError", "KvFabricError"]
