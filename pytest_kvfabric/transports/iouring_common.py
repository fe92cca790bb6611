"""What the iouring initiator and target share (see iouring.py for the transport): the
numpy/struct layouts of the kernel's structures, the user_data encoding of a CQE, the ring
options and the lazy import of the liburing wrapper."""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any, Mapping

import numpy as np

from ..errors import TransportError
from . import framing
from .base import COMPLETION_DTYPE
from .iouring_probe import check_options

HDR_DTYPE = np.dtype(
    [("magic", "S2"), ("version", "u1"), ("type", "u1"), ("nbytes", "<u4"),
     ("dst_off", "<u8"), ("seq", "<u8"), ("imm", "<u8")]
)
assert HDR_DTYPE.itemsize == framing.HEADER_SIZE
IOVEC_DTYPE = np.dtype([("base", "<u8"), ("len", "<u8")])
MSGHDR_DTYPE = np.dtype(  # struct msghdr, x86-64
    [("name", "<u8"), ("namelen", "<u4"), ("pad0", "<u4"), ("iov", "<u8"), ("iovlen", "<u8"),
     ("control", "<u8"), ("controllen", "<u8"), ("flags", "<i4"), ("pad1", "<u4")]
)
SQE_DTYPE = np.dtype(  # struct io_uring_sqe (see load_uring.SQE)
    [("opcode", "u1"), ("flags", "u1"), ("ioprio", "<u2"), ("fd", "<i4"), ("off", "<u8"),
     ("addr", "<u8"), ("len", "<u4"), ("msg_flags", "<u4"), ("user_data", "<u8"),
     ("buf_index", "<u2"), ("personality", "<u2"), ("file_index", "<i4"), ("addr3", "<u8"),
     ("pad", "<u8")]
)
assert (MSGHDR_DTYPE.itemsize, SQE_DTYPE.itemsize) == (56, 64)

# user_data = [conn id (16 bits)] [seq (44 bits)] [kind (4 bits)]
K_HDR, K_PAYLOAD, K_ACK_RECV, K_ACK_SEND, K_HELLO = 1, 2, 3, 4, 5
K_READ_SEND, K_READ_RECV = 6, 7  # a READ's response SENDMSG (target); READ_DATA payload RECV (initiator)
PIECES_PER_SQE = 255  # READ_DATA pieces per response SENDMSG: 2 iovecs each + the ACK <= UIO_MAXIOV,
# and <= 255 * 4 MiB of payload stays under sendmsg's MAX_RW_COUNT
SEQ_MASK = (1 << 44) - 1
SEND_FLAGS = socket.MSG_NOSIGNAL | socket.MSG_WAITALL
WRITES_PER_SQE = 512  # 2 iovecs per write, UIO_MAXIOV = 1024
SQE_BYTES_CAP = 1 << 30  # a chain above this goes one write per SQE (sendmsg's MAX_RW_COUNT < 2 GiB)
ACK_BUF_BYTES = 64 * 1024
# While writes keep coming the target acks (cumulatively) every ACK_EVERY writes or ACK_BYTES
# placed, whichever comes first (tcp's target acks once per <= 8 MiB drained); it acks all it
# placed before it sleeps or returns, so an idle stream's completions are never held back.
ACK_EVERY = 128
ACK_BYTES = 8 << 20
DEFAULT_QUEUE_DEPTH = 512
ROW_DTYPE = np.dtype([("src_off", "<u8"), ("dst_off", "<u8"), ("nbytes", "<u8"), ("notify", "<i8"),
                      ("seq", "<u8"), ("type", "u1")])  # a posted WRITE (or READ) waiting for its chain
NO_COMPLETIONS = np.empty(0, COMPLETION_DTYPE)
HDR_SIZE = framing.HEADER_SIZE
IOV2 = struct.Struct("<QQQQ")  # struct iovec[2]
MSGHDR = struct.Struct("<QIIQQQQiI")  # struct msghdr (x86-64), see MSGHDR_DTYPE
WAITALL = socket.MSG_WAITALL


def user_data(conn: int, seq: int, kind: int) -> int:
    return (conn << 48) | ((seq & SEQ_MASK) << 4) | kind


def strerror(res: int) -> str:
    return f"{errno.errorcode.get(-res, -res)} ({os.strerror(-res)})"


def load_uring():  # imported lazily: the registry must not import liburing until asked
    from . import _uring

    return _uring


def ring_options(options: Mapping[str, Any]) -> tuple[str, int, int]:
    bad = check_options(options)
    if bad:
        raise TransportError(bad)
    qd = int(options.get("queue_depth", DEFAULT_QUEUE_DEPTH))
    if qd < 8:
        raise TransportError(f"iouring option queue_depth={qd}: must be at least 8")
    per_chain = qd - 2  # room for one SQE per write (a chain over SQE_BYTES_CAP) and the ack recv
    inflight = min(int(options.get("inflight", per_chain)), per_chain)
    return options.get("mode", "send"), qd, inflight
