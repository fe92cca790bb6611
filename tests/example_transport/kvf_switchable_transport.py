"""A plug-in transport whose availability a test controls: kernel TCP that reports itself
missing while the environment variable KVF_SWITCHABLE_DOWN is set (its value is the reason).

It stands for a NIC feature an upgrade can take away (devmem, RDMA): the gate tests record a
baseline while it is up, then take it down and check that the gated run fails, naming it.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from pytest_kvfabric.transports.base import Capability
from pytest_kvfabric.transports.tcp import TcpTransport

NAME = "tcp-switchable"
DOWN_ENV = "KVF_SWITCHABLE_DOWN"


class SwitchableTransport(TcpTransport):
    name = NAME
    description = "kernel TCP that a test can make unavailable (KVF_SWITCHABLE_DOWN=reason)"

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        reason = os.environ.get(DOWN_ENV)
        if reason:
            return Capability.missing(reason)
        return super().probe(options)
