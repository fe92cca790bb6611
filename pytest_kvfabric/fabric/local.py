"""Loopback fabric: both agents are separate processes on this host, data plane on 127.0.0.1."""
from __future__ import annotations

import sys

from .base import Host, HostPair


def local_pair() -> HostPair:
    spec = f"popen//python={sys.executable}"
    return HostPair(
        name="local",
        fabric="local",
        prefill=Host("prefill", spec, "127.0.0.1", "lo"),
        decode=Host("decode", spec, "127.0.0.1", "lo"),
        details={"mtu": 65536},
    )
