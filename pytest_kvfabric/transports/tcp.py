"""`tcp`: kernel TCP, scatter-gather sendmsg from the pool, recv_into straight into the pool.

Options (all optional): connections (parallel connections per endpoint pair, default 1),
token (auth secret the controller hands both agents), sndbuf / rcvbuf (SO_SNDBUF /
SO_RCVBUF bytes), nodelay (default True: TCP_NODELAY), close_timeout_s, writev (default
True: batched WRITEV frames when the target advertises them), writev_max_bytes (payload cap
of one WRITEV frame, default 4 MiB).
"""
from __future__ import annotations

import socket
import sys
from typing import Any, Mapping

from .stream_initiator import StreamInitiator
from .stream_target import StreamTarget
from .params import STREAM_PARAMS
from .base import Capability, Transport

DATA_PATH = (
    "kernel TCP, copied send and receive (sendmsg scatter-gather from the pool, "
    "recv_into the pool)"
)


READ_PATH = (
    "one-sided READ over the stream: a READ request frame, answered by READ_DATA pieces "
    "(<= 4 MiB each) sent with sendmsg from the target's region (kernel copy) and received "
    "into the initiator's region"
)


class TcpTarget(StreamTarget):
    transport_name = "tcp"

    def data_path(self) -> dict[str, Any]:
        d = super().data_path()
        d["description"] = DATA_PATH
        return d


class TcpInitiator(StreamInitiator):
    transport_name = "tcp"

    def data_path(self) -> dict[str, Any]:
        d = super().data_path()
        d["description"] = DATA_PATH
        return d


class TcpTransport(Transport):
    name = "tcp"
    params = STREAM_PARAMS
    description = "kernel TCP stream, copied send and receive"
    initiator_cls = TcpInitiator
    target_cls = TcpTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        if not sys.platform.startswith("linux"):
            return Capability.missing(f"tcp transport needs Linux (this is {sys.platform})")
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            return Capability.missing(f"cannot create a TCP socket: {exc}")
        s.close()
        return Capability.ok(DATA_PATH, zero_copy=False)

    @classmethod
    def probe_read(cls, options: Mapping[str, Any] | None = None) -> Capability:
        cap = cls.probe(options)
        return Capability.ok(READ_PATH, zero_copy=False) if cap.available else cap
