"""A tiny third-party transport: kernel TCP that refuses to leave the host.

It is what the "Writing a transport" section of the docs shows: subclass (or write from
scratch) Target, Initiator and Transport, give it a name and a probe, and declare it under
the entry-point group ``pytest_kvfabric.transports``.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any, Mapping

from pytest_kvfabric.errors import TransportError
from pytest_kvfabric.transports.base import Capability
from pytest_kvfabric.transports.tcp import TcpInitiator, TcpTarget, TcpTransport

DATA_PATH = "kernel TCP over the loopback device only"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class LoopbackOnlyTarget(TcpTarget):
    transport_name = "tcp-loopback-only"

    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        if not _is_loopback(bind_host):
            raise TransportError(f"tcp-loopback-only: refusing to listen on {bind_host}")
        return super().listen(bind_host, timeout_s)


class LoopbackOnlyInitiator(TcpInitiator):
    transport_name = "tcp-loopback-only"

    def connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> None:
        if not _is_loopback(str(descriptor.get("host", ""))):
            raise TransportError(f"tcp-loopback-only: refusing to connect to {descriptor.get('host')}")
        super().connect(descriptor, timeout_s)

    def data_path(self) -> dict[str, Any]:
        return {**super().data_path(), "transport": self.transport_name, "description": DATA_PATH}


class LoopbackOnlyTransport(TcpTransport):
    name = "tcp-loopback-only"
    description = "kernel TCP, loopback only (example third-party transport)"
    initiator_cls = LoopbackOnlyInitiator
    target_cls = LoopbackOnlyTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
        except OSError as exc:
            return Capability.missing(f"cannot bind a TCP socket on 127.0.0.1: {exc}")
        return Capability.ok(DATA_PATH)
