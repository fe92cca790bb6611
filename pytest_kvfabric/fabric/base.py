"""HostPair: where a scenario's two agents run. INTERFACE shared by runner, plugin and fabrics.

An agent is started with `execnet.makegateway(host.gateway_spec)`; the channel is
authenticated by construction (popen pipes locally and in namespaces, SSH across hosts).
The data plane binds/connects to `data_addr` (an address the fabric assigned or the
inventory named); `interface` is the data-plane interface, for counters and NIC evidence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What every piece of code sent through gateway.remote_exec runs first. Before numpy loads:
# agents and probes do no BLAS work, and OpenBLAS's worker threads spin for ~0.1 s of CPU
# after start-up, which the other agent on a small host needs.
_REMOTE_PRELUDE = """
import os, sys
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
try:
    import pytest_kvfabric  # noqa: F401
except ImportError:
    sys.path.insert(0, %r)
"""


def remote_source(body: str) -> str:
    """Source for gateway.remote_exec: the common prelude (this checkout importable where the
    package is not installed; OpenBLAS single-threaded), then body."""
    return _REMOTE_PRELUDE % str(Path(__file__).resolve().parents[2]) + body


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
    fabric: str  # "local" | "netns" | "hosts"
    prefill: Host
    decode: Host
    details: dict[str, Any] = field(default_factory=dict)  # MTU, offloads, shaping...
