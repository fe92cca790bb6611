"""Probe a transport where its agent will run: on each host of a pair, through its gateway.

A probe answers for the machine it runs on (its NICs, its kernel, its /dev); on the netns and
hosts fabrics that is not the machine pytest runs on, so the probe travels to each host."""
from __future__ import annotations

from typing import Any, Mapping

from ..transports.base import Capability
from .base import Host, HostPair
from .bootstrap import HostUnreachable, open_gateway, remote_source

# What a probe on a host runs: the transport registry's probe, answered over the channel.
PROBE_SOURCE = remote_source("""
from pytest_kvfabric.transports.registry import probe
name, params = channel.receive()
try:
    cap = probe(name, params)
    channel.send({"available": cap.available, "reason": cap.reason, "data_path": cap.data_path})
except Exception as exc:  # a bad parameter is reported, not swallowed
    channel.send({"available": False, "reason": "probe failed: %s: %s" % (type(exc).__name__, exc)})
""")


def host_params(host: Host, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a probe on `host` needs to know about the data plane there (user params win)."""
    out = {"data_addr": host.data_addr, "host": host.data_addr}
    if host.interface:
        out["interface"] = host.interface
    out.update(params)
    return out


def probe_on_host(host: Host, transport: str, params: Mapping[str, Any], timeout_s: float = 30.0) -> Capability:
    try:
        group, gw = open_gateway(host.gateway_spec, timeout_s, host.name)
    except HostUnreachable as exc:
        return Capability.missing(str(exc))
    try:
        ch = gw.remote_exec(PROBE_SOURCE)
        ch.send((transport, host_params(host, params)))
        answer = ch.receive(timeout=timeout_s)
    except Exception as exc:  # execnet raises its own types for remote errors and timeouts
        return Capability.missing(f"probe on host {host.name} did not answer: {type(exc).__name__}: {exc}")
    finally:
        group.terminate(timeout=2.0)
    if answer["available"]:
        return Capability.ok(answer.get("data_path", ""))
    return Capability.missing(answer["reason"])


def probe_pair(pair: HostPair, transport: str, params: Mapping[str, Any], timeout_s: float = 30.0) -> str | None:
    """None if both hosts can run the transport, else the reason naming the host."""
    reasons = []
    for role, host in (("prefill", pair.prefill), ("decode", pair.decode)):
        cap = probe_on_host(host, transport, params, timeout_s)
        if not cap.available:
            reasons.append(f"{role} host {host.name}: {cap.reason}")
    return "; ".join(reasons) or None
