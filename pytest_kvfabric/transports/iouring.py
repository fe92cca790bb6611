"""The `iouring` transport: the stream wire format of `framing` (wire-compatible with `tcp`),
moved by io_uring through the `liburing` package.

Initiator: every ready batch becomes one chain handed to the kernel by ONE io_uring_submit:
one SENDMSG (or SENDMSG_ZC) carries up to WRITES_PER_SQE writes, its iovec being [32-byte
header, payload slice of the source region] per write, so Python does no work per write on
the send path. Several SQEs of a chain are linked (IOSQE_IO_LINK) because io_uring does not
order independent sends on one stream socket; with MSG_WAITALL the kernel finishes short sends
itself, so a link only breaks on a real error. A chain holds at most `inflight` writes; the
next ready writes go out as the next chain once it completes. A write completes when the
target's cumulative ACK covers it and, in send_zc mode, when the notification CQE of its SQE
says the kernel released the source pages.

Target: per connection one RECVMSG (no MSG_WAITALL) into [rest of the payload, next header]
straight in the region, like tcp's recvmsg_into; each header is accepted by the connection's
`wire.TargetWire` (the one acceptance of every stream transport) and write_guard called before
the receive of its payload is queued. Cumulative ACKs go back as io_uring SENDs, one in flight per
connection.

One-sided READ (`wire_read`): the initiator's READ headers ride in the same chains as its
writes; the target answers each with linked SENDMSGs of [READ_DATA header, region slice] per
piece and the ACK covering the read, and arms the connection's next header receive only once
they completed (one send in flight per connection, frames served in order). The initiator
receives READ_DATA payload straight into its region (a RECV at the piece's offset).

Memory: the package's prep functions accept only whole bytes/bytearray objects, so we do not
override Transport.allocate: `_uring.Ring` writes each SQE itself, pointing into the
default mmap region (see _uring.py, quirk 2). No payload byte is copied in Python.
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import Capability, Transport
from .iouring_initiator import IoUringInitiator
from .iouring_probe import probe as _probe
from .iouring_target import IoUringTarget
from .params import IOURING_PARAMS

__all__ = ["IoUringInitiator", "IoUringTarget", "IoUringTransport"]


class IoUringTransport(Transport):
    name = "iouring"
    params = IOURING_PARAMS
    description = "io_uring SEND / SEND_ZC batches and RECV into the destination, via liburing"
    initiator_cls = IoUringInitiator
    target_cls = IoUringTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        return _probe(options)

    @classmethod
    def probe_read(cls, options: Mapping[str, Any] | None = None) -> Capability:
        cap = _probe(options)
        if not cap.available:
            return cap
        return Capability.ok(
            "one-sided READ over the stream: READ headers in the initiator's SENDMSG chains; the "
            "target answers with linked io_uring SENDMSGs of READ_DATA pieces from its region "
            "(kernel copy); the initiator RECVs the payload straight into its region",
            zero_copy=False)
