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

Memory: the package's prep functions accept only whole bytes/bytearray objects, so we do not
override Transport.allocate: `_uring.Ring` writes each SQE itself, pointing into the
default mmap region (see _uring.py, quirk 2). No payload byte is copied in Python.
"""
from __future__ import annotations

import array
import collections
import errno
import os
import secrets
import socket
import struct
import time
from typing import Any, Mapping

import numpy as np

from ..errors import ProtocolError, TransportError
from . import framing, handshake, wire
from .stream_common import connect_with_hello, set_tcp_options, tcp_info
from .params import IOURING_PARAMS
from .base import (
    COMPLETION_DTYPE,
    NOTIFY_DTYPE,
    PLACED_DTYPE,
    Capability,
    Initiator,
    Target,
    Transport,
    check_region,
)
from .iouring_probe import check_options
from .iouring_probe import probe as _probe

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
SQE_DTYPE = np.dtype(  # struct io_uring_sqe (see _uring.SQE)
    [("opcode", "u1"), ("flags", "u1"), ("ioprio", "<u2"), ("fd", "<i4"), ("off", "<u8"),
     ("addr", "<u8"), ("len", "<u4"), ("msg_flags", "<u4"), ("user_data", "<u8"),
     ("buf_index", "<u2"), ("personality", "<u2"), ("file_index", "<i4"), ("addr3", "<u8"),
     ("pad", "<u8")]
)
assert (MSGHDR_DTYPE.itemsize, SQE_DTYPE.itemsize) == (56, 64)

# user_data = [conn id (16 bits)] [seq (44 bits)] [kind (4 bits)]
K_HDR, K_PAYLOAD, K_ACK_RECV, K_ACK_SEND, K_HELLO = 1, 2, 3, 4, 5
_SEQ_MASK = (1 << 44) - 1
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
                      ("seq", "<u8")])  # a posted write waiting for its chain
_NO_COMPLETIONS = np.empty(0, COMPLETION_DTYPE)
_HDR_SIZE = framing.HEADER_SIZE
_IOV2 = struct.Struct("<QQQQ")  # struct iovec[2]
_MSGHDR = struct.Struct("<QIIQQQQiI")  # struct msghdr (x86-64), see MSGHDR_DTYPE
_WAITALL = socket.MSG_WAITALL


def _ud(conn: int, seq: int, kind: int) -> int:
    return (conn << 48) | ((seq & _SEQ_MASK) << 4) | kind


def _strerror(res: int) -> str:
    return f"{errno.errorcode.get(-res, -res)} ({os.strerror(-res)})"


def _uring():  # imported lazily: the registry must not import liburing until asked
    from . import _uring

    return _uring


def _ring_options(options: Mapping[str, Any]) -> tuple[str, int, int]:
    bad = check_options(options)
    if bad:
        raise TransportError(bad)
    qd = int(options.get("queue_depth", DEFAULT_QUEUE_DEPTH))
    if qd < 8:
        raise TransportError(f"iouring option queue_depth={qd}: must be at least 8")
    per_chain = qd - 2  # room for one SQE per write (a chain over SQE_BYTES_CAP) and the ack recv
    inflight = min(int(options.get("inflight", per_chain)), per_chain)
    return options.get("mode", "send"), qd, inflight


class IoUringInitiator(Initiator):
    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.mode, self.queue_depth, self.inflight = _ring_options(self.options)
        self.defer_taskrun = bool(self.options.get("defer_taskrun", True))
        self._zc = self.mode == "send_zc"
        self._u = _uring()
        self._src_addr = self._u.buffer_address(region)
        self._src_len = region.nbytes
        self._ring: Any = None
        self._sock: socket.socket | None = None
        self._error: TransportError | None = None
        self._next_seq = 1
        self._acked = 0
        self._pending: collections.deque[np.ndarray] = collections.deque()  # rows not yet sent
        # per posted batch: (seq of its first write, its xfer ids), oldest first
        self._waiting: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        # SEND_ZC SQEs whose notification is due: last seq -> first seq of the writes they carry
        self._zc_wait: dict[int, int] = {}
        self._chain_left = 0
        # (last seq, header/iovec/msghdr/SQE arrays) of chains the kernel may still read
        self._chain_keep: collections.deque[tuple[int, tuple]] = collections.deque()
        self._ackbuf = bytearray(ACK_BUF_BYTES)
        self._ackbuf_addr = self._u.buffer_address(self._ackbuf)
        self._wire = wire.InitiatorWire()  # what we accept from the target (ACKs, ERROR)
        self._outstanding = 0
        self.counters = {"writes": 0, "bytes": 0, "chains": 0, "send_sqes": 0, "waits": 0, "zc_notifications": 0,
                         "copied_notifications": 0}

    # -- setup ----------------------------------------------------------------------------
    def connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> None:
        host, port = descriptor["host"], int(descriptor["port"])
        # The handshake of the stream transports (tcp/zerocopy), so either side interoperates with them.
        token = str(self.options.get("token") or descriptor.get("token") or "")
        what = f"iouring connect to {host}:{port}"
        sock = connect_with_hello(host, port, lambda s: set_tcp_options(s, self.options), token,
                                  f"{secrets.token_hex(8)}-{os.getpid()}", 0, 1,
                                  time.monotonic() + timeout_s, what, what + " failed")
        try:
            sock.settimeout(None)  # blocking fd: io_uring arms poll instead of failing EAGAIN
        except OSError as exc:
            sock.close()
            raise TransportError(f"{what} failed: {exc}") from None
        self._sock = sock
        try:
            self._ring = self._u.Ring(self.queue_depth, defer_taskrun=self.defer_taskrun)
        except OSError as exc:
            sock.close()
            raise TransportError(f"iouring ring setup failed: {exc}") from None
        self._arm_ack_recv()
        self._ring.submit()

    def _arm_ack_recv(self) -> None:
        self._ring.prep_recv(self._sock.fileno(), self._ackbuf_addr, ACK_BUF_BYTES,
                             _ud(0, 0, K_ACK_RECV))

    # -- data path ------------------------------------------------------------------------
    def post(self, batch: np.ndarray, timeout_s: float) -> None:
        self._raise_if_failed()
        if self._ring is None:
            raise TransportError("iouring initiator: post() before connect()")
        if len(batch) == 0:
            return
        src_off, nbytes = batch["src_off"], batch["nbytes"]
        end = src_off + nbytes
        if int(end.max()) > self._src_len:
            i = int(np.argmax(end > self._src_len))
            raise TransportError(
                f"write {int(batch['xfer'][i])}: source "
                f"{check_region(self._src_len, int(src_off[i]), int(nbytes[i]))}")
        if int(nbytes.max()) > framing.MAX_WRITE:
            raise TransportError(f"write larger than {framing.MAX_WRITE} bytes")
        n = len(batch)
        rows = np.empty(n, ROW_DTYPE)
        rows["src_off"] = src_off
        rows["dst_off"] = batch["dst_off"]
        rows["nbytes"] = nbytes
        rows["notify"] = batch["notify"]
        seq0 = self._next_seq
        rows["seq"] = np.arange(seq0, seq0 + n, dtype=np.uint64)
        self._next_seq += n
        self._waiting.append((seq0, batch["xfer"].astype(np.uint64)))  # a copy: the caller may reuse batch
        self._pending.append(rows)
        self._outstanding += len(batch)
        self._pump()

    def _take(self, limit: int) -> np.ndarray:
        parts, n = [], 0
        while self._pending and n < limit:
            head = self._pending[0]
            k = min(limit - n, len(head))
            parts.append(head[:k])
            n += k
            if k == len(head):
                self._pending.popleft()
            else:
                self._pending[0] = head[k:]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _pump(self) -> None:
        """Submit the next chain if the previous one is done: one io_uring_submit per chain."""
        if self._chain_left or not self._pending or self._error is not None:
            return
        rows = self._take(self.inflight)
        k = len(rows)
        hdr = np.zeros(k, HDR_DTYPE)
        hdr["magic"] = framing.MAGIC
        hdr["version"] = framing.VERSION
        hdr["type"] = framing.WRITE
        hdr["nbytes"] = rows["nbytes"]
        hdr["dst_off"] = rows["dst_off"]
        hdr["seq"] = rows["seq"]
        hdr["imm"] = np.where(rows["notify"] >= 0, rows["notify"] + 1, 0).astype(np.uint64)
        # iovecs [header, payload slice of the source region] per write (no copy in Python);
        # one SENDMSG(_ZC) carries up to WRITES_PER_SQE writes (UIO_MAXIOV = 1024 iovecs), so
        # a whole chain is one or two SQEs: the kernel walks the iovecs, Python does not.
        per_sqe = WRITES_PER_SQE if int(rows["nbytes"].sum()) <= SQE_BYTES_CAP else 1
        idx = np.arange(k, dtype=np.uint64)
        iov = np.zeros((k, 2), IOVEC_DTYPE)
        iov["base"][:, 0] = np.uint64(hdr.ctypes.data) + idx * np.uint64(framing.HEADER_SIZE)
        iov["len"][:, 0] = framing.HEADER_SIZE
        iov["base"][:, 1] = np.uint64(self._src_addr) + rows["src_off"]
        iov["len"][:, 1] = rows["nbytes"]
        first = np.arange(0, k, per_sqe)  # row index of each SQE's first write
        last = np.minimum(first + per_sqe, k) - 1
        g = len(first)
        msg = np.zeros(g, MSGHDR_DTYPE)
        msg["iov"] = np.uint64(iov.ctypes.data) + first.astype(np.uint64) * np.uint64(2 * IOVEC_DTYPE.itemsize)
        msg["iovlen"] = 2 * (last - first + 1)
        sqes = np.zeros(g, SQE_DTYPE)
        sqes["opcode"] = self._u.OP_SENDMSG_ZC if self._zc else self._u.OP_SENDMSG
        # send mode: only the chain's last SQE posts a CQE when all goes well (a failure posts
        # its own CQE and ECANCELED ones behind it). SENDMSG_ZC refuses CQE_SKIP_SUCCESS.
        sqes["flags"] = self._u.IOSQE_IO_LINK | (0 if self._zc else self._u.IOSQE_CQE_SKIP_SUCCESS)
        sqes["flags"][-1] = 0  # the chain ends here
        sqes["ioprio"] = self._u.SEND_ZC_REPORT_USAGE if self._zc else 0
        sqes["fd"] = self._sock.fileno()
        sqes["addr"] = np.uint64(msg.ctypes.data) + np.arange(g, dtype=np.uint64) * np.uint64(MSGHDR_DTYPE.itemsize)
        sqes["len"] = 1
        sqes["msg_flags"] = SEND_FLAGS
        seqs = rows["seq"]
        sqes["user_data"] = (seqs[last] << np.uint64(4)) | np.uint64(K_PAYLOAD)  # the SQE's last seq
        # Alive until the kernel is done with them: the chain's sends complete (send) or, with
        # SENDMSG_ZC, until every notification of the chain arrived (skbs reference the pages).
        self._chain_keep.append((int(seqs[-1]), (hdr, iov, msg, sqes)))
        self._ring.put_many(int(sqes.ctypes.data), g)
        if self._zc:  # last seq -> first seq of each SQE whose notification is still due
            self._zc_wait.update(zip(seqs[last].tolist(), seqs[first].tolist()))
        self._chain_left = g if self._zc else 1  # send CQEs still to come for this chain
        self.counters["chains"] += 1
        self.counters["send_sqes"] += g
        self.counters["writes"] += k
        self.counters["bytes"] += int(rows["nbytes"].sum())
        try:
            self._ring.submit()
        except OSError as exc:
            self._fail(f"io_uring_submit failed: {exc}")

    def _fail(self, reason: str, cls: type[TransportError] = TransportError) -> None:
        if self._error is None:
            self._error = cls(f"iouring initiator: {reason}")
        raise self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _reap(self) -> None:
        cqes = self._ring.drain()
        if cqes:
            self._account(cqes)
        self._release_chains()
        self._pump()
        self._ring.submit()

    def _account(self, cqes: list[tuple[int, int, int]]) -> None:
        """A chain posts one CQE (send) or two per SQE (send_zc: send + notification), an SQE
        carrying up to WRITES_PER_SQE writes, so a plain loop over the CQEs is cheap."""
        u = self._u
        notif_flag = u.CQE_F_NOTIF
        failed = [c for c in cqes if c[1] < 0 and not c[2] & notif_flag]
        if failed:  # report the root cause, not the ECANCELED of the links behind it
            ud0, r0, _ = next((x for x in failed if x[1] != -errno.ECANCELED), failed[0])
            gone = " (peer gone)" if -r0 in (errno.ECONNRESET, errno.EPIPE) else ""
            if ud0 & 15 != K_PAYLOAD:
                self._fail(f"receiving acks failed: {_strerror(r0)}{gone}")
            self._fail(f"send of writes up to seq {(ud0 >> 4) & _SEQ_MASK} failed: {_strerror(r0)}{gone}")
        for ud, res, flags in cqes:
            kind = ud & 15
            if kind == K_PAYLOAD:
                seq = (ud >> 4) & _SEQ_MASK
                if flags & notif_flag:
                    # ZC notification: res is a usage bitmask, not a length (quirk 3 in _uring).
                    self.counters["zc_notifications"] += 1
                    if (res & 0xFFFFFFFF) & u.NOTIF_USAGE_ZC_COPIED:
                        self.counters["copied_notifications"] += 1
                    self._zc_wait.pop(seq, None)
                    continue
                self._chain_left -= 1
                if self._zc and not flags & u.CQE_F_MORE:  # no notification will follow
                    self._zc_wait.pop(seq, None)
            elif kind == K_ACK_RECV:
                self._on_acks(res)

    def _on_acks(self, n: int) -> None:
        if n == 0:
            self._fail("target closed the connection (peer gone)")
        bad = self._wire.feed(memoryview(self._ackbuf)[:n], self._next_seq - 1)
        self._acked = self._wire.acked
        if isinstance(bad, wire.PeerError):
            self._fail(f"target rejected the stream: {bad.reason}")
        elif bad is not None:
            self._fail(bad.reason, ProtocolError)
        self._arm_ack_recv()

    def _release_chains(self) -> None:
        keep = self._chain_keep
        if keep and not self._chain_left:
            floor = self._zc_floor()
            while len(keep) > 0 and keep[0][0] < floor and (len(keep) > 1 or not self._chain_left):
                keep.popleft()

    def _zc_floor(self) -> int:
        """Lowest seq an outstanding SEND_ZC notification still covers (writes below it are free)."""
        return min(self._zc_wait.values()) if self._zc_wait else 1 << 62

    def _collect(self) -> np.ndarray:
        """Writes acked (and, in send_zc, released by their notification), in post order."""
        waiting = self._waiting
        limit = min(self._acked, self._zc_floor() - 1)
        if not waiting or waiting[0][0] > limit:
            return _NO_COMPLETIONS
        parts = []
        while waiting and waiting[0][0] <= limit:
            seq0, xfers = waiting[0]
            k = min(len(xfers), limit - seq0 + 1)
            parts.append(xfers[:k])
            if k == len(xfers):
                waiting.popleft()
            else:
                waiting[0] = (seq0 + k, xfers[k:])
        xf = parts[0] if len(parts) == 1 else np.concatenate(parts)
        done = np.empty(len(xf), COMPLETION_DTYPE)
        done["xfer"] = xf
        done["t_ns"] = time.monotonic_ns()
        self._outstanding -= len(xf)
        return done

    def poll(self, timeout_s: float) -> np.ndarray:
        self._raise_if_failed()
        if self._ring is None:
            raise TransportError("iouring initiator: poll() before connect()")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            self._reap()
            done = self._collect()
            remaining = deadline - time.monotonic()
            if len(done) or remaining <= 0:
                return done
            self.counters["waits"] += 1
            self._ring.wait(remaining)

    def outstanding(self) -> int:
        return self._outstanding

    def stats(self) -> dict[str, Any]:
        info = tcp_info(self._sock) if self._sock is not None else {}
        return {"retransmits": info.get("total_retrans"), **self.counters}

    def data_path(self) -> dict[str, Any]:
        c = dict(self.counters)
        notifs, copied = c["zc_notifications"], c["copied_notifications"]
        out: dict[str, Any] = {"transport": "iouring", "mode": self.mode, **c,
                               "tcp_info": tcp_info(self._sock) if self._sock else {},
                               "submits": getattr(self._ring, "submits", 0),
                               "sqes_submitted": getattr(self._ring, "sqes_submitted", 0)}
        if self._zc:
            frac = copied / notifs if notifs else None
            out["copied_fraction"] = frac
            out["zc_completions"] = notifs - copied
            out["copied_completions"] = copied
            out["zero_copy"] = None if frac is None else frac == 0.0
            if frac is None:
                out["description"] = "io_uring SEND_ZC: no notification received yet"
            elif frac == 1.0:
                out["description"] = ("io_uring SEND_ZC, but the kernel copied 100% of the payloads "
                                      "(every notification had IORING_NOTIF_USAGE_ZC_COPIED)")
            else:
                out["description"] = f"io_uring SEND_ZC: kernel copied {frac:.1%} of the payloads"
        else:
            out["zero_copy"] = False
            out["description"] = "io_uring SEND batches: the kernel copies payloads into socket buffers"
        return out

    def close(self) -> None:
        if self._sock is not None and self._error is None and self._ring is not None:
            deadline = time.monotonic() + 2.0
            try:  # let the last chain leave before saying BYE (bounded)
                while (self._chain_left or self._pending) and time.monotonic() < deadline:
                    self._reap()
                    self._ring.wait(deadline - time.monotonic())
                self._sock.settimeout(1.0)
                self._sock.sendall(framing.encode_bye())
            except (OSError, TransportError):
                pass
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._ring is not None:
            self._ring.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Conn:
    __slots__ = ("cid", "sock", "fd", "peer", "hdr", "hello_buf", "hs", "ackbuf", "hdr_addr", "ackbuf_addr",
                 "ud_base", "iov", "msg", "msg_addr", "pay_pos", "hfill", "wire", "pending",
                 "hello_done", "placed_seq", "acked_sent", "placed_bytes", "acked_bytes", "ack_inflight",
                 "bye", "dead")

    def __init__(self, cid: int, sock: socket.socket, peer: Any, addr_of: Any) -> None:
        self.cid, self.sock, self.fd, self.peer = cid, sock, sock.fileno(), peer
        self.hdr = bytearray(framing.HEADER_SIZE)
        self.hello_buf = bytearray()
        self.hs: handshake.TargetHandshake | None = None  # until the HELLO is proven
        self.ackbuf = bytearray(framing.HEADER_SIZE)
        self.hdr_addr = addr_of(self.hdr)
        self.ud_base = cid << 48
        # RECVMSG scatter list [rest of the payload, next header] and its msghdr (stable memory)
        self.iov = bytearray(_IOV2.size)
        self.msg = bytearray(MSGHDR_DTYPE.itemsize)
        self.msg_addr = addr_of(self.msg)
        _MSGHDR.pack_into(self.msg, 0, 0, 0, 0, addr_of(self.iov), 2, 0, 0, 0, 0)
        self.pay_pos = 0  # payload bytes of `pending` already placed
        self.hfill = 0  # bytes of the next header already received
        self.ackbuf_addr = addr_of(self.ackbuf)
        self.wire = wire.TargetWire(0)  # replaced by the target's, with its region length
        self.pending: tuple[int, int, int, int] | None = None  # (seq, dst_off, nbytes, imm)
        self.hello_done = False
        self.placed_seq = 0
        self.acked_sent = 0
        self.placed_bytes = 0  # payload bytes placed / covered by the last ACK sent
        self.acked_bytes = 0
        self.ack_inflight = False
        self.dead = False


class IoUringTarget(Target):
    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.mode, self.queue_depth, _ = _ring_options(self.options)
        self.defer_taskrun = bool(self.options.get("defer_taskrun", True))
        self._u = _uring()
        self._base = self._u.buffer_address(region)
        self._len = region.nbytes
        self._ring: Any = None
        self._lsock: socket.socket | None = None
        self._token = str(self.options.get("token") or "")
        self._conns: dict[int, _Conn] = {}
        self._next_cid = 1
        self.counters = {"placed": 0, "bytes": 0, "rejected": 0, "progress_calls": 0, "waits": 0,
                         "short_reads": 0}
        self._gate = handshake.Admission(
            timeout_s=float(self.options.get("hello_timeout_s") or handshake.HELLO_TIMEOUT_S))
        # Dropped strangers whose RECV is still in flight: kept (socket and buffers) until its
        # CQE says the kernel is done with them; only then is the fd closed (and reusable).
        self._dying: dict[int, _Conn] = {}
        # An error met in a progress() call that had already placed rows: raised on the next call.
        self._deferred_error: Exception | None = None

    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        if self.options.get("zcrx"):
            self._register_zcrx(bind_host)
        lsock = socket.create_server((bind_host, int(self.options.get("port", 0))), backlog=1024)
        lsock.setblocking(False)
        self._lsock = lsock
        host, port = lsock.getsockname()[:2]
        # Same descriptor as stream_target.py: the token travels in it only if we made it up.
        desc = {"host": host, "port": port, "region_len": self._len, "connections": 1}
        if not self._token:
            self._token = desc["token"] = secrets.token_hex(16)
        return desc

    def _register_zcrx(self, bind_host: str) -> None:
        """Try the ZCRX registration on the data-plane queue; never silently fall back."""
        from .iouring_probe import interface_for

        ifname = self.options.get("zcrx_ifname") or interface_for(bind_host)
        rxq = int(self.options.get("zcrx_rxq", 0))
        err, why = self._u.try_zcrx(ifname, rxq)
        if err:
            raise TransportError(f"iouring zcrx: ZCRX unsupported: {why}")
        raise TransportError(f"iouring zcrx: registered on {ifname} queue {rxq}, but the RECV_ZC "
                             "receive path is not implemented yet")

    # -- connections ----------------------------------------------------------------------
    def _accept(self) -> None:
        now = time.monotonic()
        for _ in range(64):
            try:
                sock, peer = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNABORTED: a stranger reset before we took it
                continue
            sock.settimeout(None)
            conn = _Conn(self._next_cid, sock, peer, self._u.buffer_address)
            conn.wire = wire.TargetWire(self._len, writev=False)  # no WRITEV: not advertised
            conn.hs = handshake.TargetHandshake(self._token)
            self._next_cid += 1
            self._conns[conn.cid] = conn
            dropped = self._gate.arrive(conn.cid, now)
            for cid in dropped:
                if cid == conn.cid:  # refused at the door: every pending one is still young
                    self._stranger(conn, handshake.REFUSED, handshake.BUSY, in_flight=False)
                else:
                    self._stranger(self._conns[cid], handshake.EVICTED,
                                   f"too many connections without a proven HELLO (> {self._gate.max_pending})",
                                   in_flight=True)
            if conn.cid in dropped:
                continue
            try:
                set_tcp_options(sock, self.options)
                sock.send(conn.hs.challenge(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError as exc:
                self._stranger(conn, handshake.CLOSED, str(exc), in_flight=False)
                continue
            self._arm_hello(conn)

    def _arm_hello(self, conn: _Conn) -> None:
        """RECV (MSG_WAITALL) of exactly what the handshake wants next: never past the HELLO."""
        want = conn.hs.want()
        conn.hello_buf = bytearray(want)
        self._ring.prep_recv(conn.fd, self._u.buffer_address(conn.hello_buf), want,
                             _ud(conn.cid, 0, K_HELLO), socket.MSG_WAITALL)

    def _on_hello(self, conn: _Conn, res: int) -> None:
        hs = conn.hs
        if res <= 0:
            hs.closed()
            if res < 0:
                hs.reason += f": {_strerror(res)}"
        else:
            hs.feed(memoryview(conn.hello_buf)[:res])
        if hs.hello is not None:
            self._gate.admitted(conn.cid)
            conn.hs = None
            # proven: from here on this is the run's initiator, and its faults are fatal
            h = hs.hello
            if h.connections != 1 or h.index != 0:
                self._reject(conn, ProtocolError(
                    "the iouring target takes one connection per initiator (HELLO asked for "
                    f"index {h.index} of {h.connections})"))
            conn.hello_done = True
            self._arm_header(conn)
        elif hs.kind:
            self._stranger(conn, hs.kind, hs.reason, in_flight=False)  # (called on its CQE)
        else:
            self._arm_hello(conn)

    def _stranger(self, conn: _Conn, kind: str, reason: str, in_flight: bool) -> None:
        """Drop an unauthenticated connection and count it: it never fails the run. With its
        RECV in flight (`in_flight`), the connection is kept until that CQE arrives: the
        kernel may still write into its buffer, and an SQE not yet submitted must not reach
        another connection that reuses the fd number."""
        self._gate.drop(conn.cid, kind)
        if kind != handshake.CLOSED:
            try:  # best effort and never blocking: a stranger may not read
                conn.sock.send(framing.encode_error(reason), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass
        conn.dead = True
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # its pending recv completes; the CQE is ignored
        except OSError:
            pass
        del self._conns[conn.cid]
        if in_flight:
            self._dying[conn.cid] = conn
        else:
            conn.sock.close()

    def _expire(self, now: float) -> None:
        for cid in self._gate.expired(now):
            conn = self._conns.get(cid)
            if conn is not None:  # a pending stranger always has its handshake RECV in flight
                self._stranger(conn, handshake.TIMEOUT,
                               f"no proven HELLO within {self._gate.timeout_s:g} s of connecting",
                               in_flight=True)

    def _arm_header(self, conn: _Conn, sqe_flags: int = 0) -> None:
        """RECV (MSG_WAITALL) of the rest of a header (all of it unless a payload RECVMSG
        brought its first conn.hfill bytes)."""
        self._ring.prep_recv(conn.fd, conn.hdr_addr + conn.hfill, framing.HEADER_SIZE - conn.hfill,
                             _ud(conn.cid, conn.wire.next_seq, K_HDR), socket.MSG_WAITALL, sqe_flags)

    def _drop(self, conn: _Conn) -> None:
        conn.dead = True
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # pending recvs complete; their CQEs are ignored
        except OSError:
            pass

    def _reject(self, conn: _Conn, exc: ProtocolError) -> None:
        """Tell the peer why (best effort), close the connection, raise. No byte was placed."""
        self.counters["rejected"] += 1
        try:
            conn.sock.send(framing.encode_error(str(exc)), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except OSError:
            pass
        self._drop(conn)
        raise ProtocolError(f"iouring target: connection from {conn.peer[0]}:{conn.peer[1]}: {exc}")

    def _peer_failed(self, conn: _Conn, reason: str) -> None:
        self._drop(conn)
        raise TransportError(f"iouring target: connection from {conn.peer[0]}:{conn.peer[1]}: {reason}")

    # -- data path ------------------------------------------------------------------------
    def _placed(self, conn: _Conn, h: tuple, placed: array.array, notifies: list) -> None:
        """A write of no payload (h: the unpacked header the wire accepted) is placed."""
        _m, _v, _t, nbytes, dst_off, seq, imm = h
        now = time.monotonic_ns()
        conn.placed_seq = seq
        conn.placed_bytes += nbytes
        # xfer = the write's 0-based position in its initiator's post order (as the stream
        # target reports it; one connection per initiator here, so seq - 1).
        placed.extend((seq - 1, dst_off, nbytes, now))
        if imm:
            notifies.append((imm - 1, now))
        self.counters["placed"] += 1
        self.counters["bytes"] += nbytes

    def _on_header(self, conn: _Conn, res: int, h: tuple | None, placed: array.array,
                   notifies: list) -> None:
        """The slow path of a header receive of `res` bytes (EOF, errors, BYE, a write without
        payload, faults); h: what wire.write_header accepted, if anything."""
        if res == 0:
            if conn.wire.bye:
                conn.dead = True
                return
            self._peer_failed(conn, f"closed without BYE after write seq {conn.wire.next_seq - 1} "
                                    "(peer gone)")
        if res < 0:
            self._peer_failed(conn, f"receive failed: {_strerror(res)}")
        if conn.wire.bye:
            self._reject(conn, ProtocolError(conn.wire.after_bye(res).reason))
        if res < framing.HEADER_SIZE:
            self._reject(conn, ProtocolError(f"truncated frame header: {res} of {framing.HEADER_SIZE} bytes"))
        if h is None:
            ev = conn.wire.header(conn.hdr)
            if isinstance(ev, wire.Bye):
                self._arm_header(conn)  # expect EOF
                return
            if not isinstance(ev, wire.Write):
                self._reject(conn, ProtocolError(ev.reason))
            h = (framing.MAGIC, framing.VERSION, framing.WRITE, ev.nbytes, ev.dst_off, ev.seq, ev.imm)
        if self.write_guard is not None:
            self.write_guard(h[4], h[3])
        if h[3] == 0:
            self._placed(conn, h, placed, notifies)
            self._arm_header(conn)
            return
        self._start_payload(conn, h)

    def _start_payload(self, conn: _Conn, h: tuple) -> None:
        _m, _v, _t, nbytes, dst_off, seq, imm = h
        conn.pending = (seq, dst_off, nbytes, imm)
        conn.pay_pos = 0
        self._arm_payload(conn)

    def _arm_payload(self, conn: _Conn) -> None:
        """RECVMSG without MSG_WAITALL into [rest of the payload, next header]: like tcp's
        recvmsg_into, one receive per write when the stream is ahead of us. Only the header of
        the next frame shares the call; its payload waits until that header is validated."""
        seq, dst_off, nbytes, _imm = conn.pending
        pos = conn.pay_pos
        _IOV2.pack_into(conn.iov, 0, self._base + dst_off + pos, nbytes - pos, conn.hdr_addr, _HDR_SIZE)
        self._ring.put(self._u.OP_RECVMSG, conn.fd, conn.msg_addr, 1,
                       conn.ud_base | ((seq & _SEQ_MASK) << 4) | K_PAYLOAD)

    def _header_in(self, conn: _Conn, placed: array.array, notifies: list) -> None:
        """conn.hdr holds a whole header. Fast path: a WRITE the wire accepts, with a payload;
        anything else takes _on_header. write_guard runs before the payload receive."""
        h = conn.wire.write_header(conn.hdr)
        if h is not None and h[3]:
            if self.write_guard is not None:
                self.write_guard(h[4], h[3])
            self._start_payload(conn, h)
        else:
            self._on_header(conn, _HDR_SIZE, h, placed, notifies)

    def _reap(self, placed: array.array, notifies: list) -> None:
        conns, monotonic_ns, counters = self._conns, time.monotonic_ns, self.counters
        pack_iov, put = _IOV2.pack_into, self._ring.put
        base, guard, op_recvmsg = self._base, self.write_guard, self._u.OP_RECVMSG
        for ud, res, _flags in self._ring.drain():
            kind, cid = ud & 15, ud >> 48
            conn = conns.get(cid)
            if conn is None or conn.dead:
                if conn is None and cid in self._dying:  # a dropped stranger's last RECV is done
                    self._dying.pop(cid).sock.close()
                continue
            if kind == K_PAYLOAD:
                seq, dst_off, nbytes, imm = conn.pending
                rem = nbytes - conn.pay_pos
                if res <= 0:
                    what = _strerror(res) if res < 0 else f"{conn.pay_pos} of {nbytes} bytes"
                    self._peer_failed(conn, f"write seq {seq} cut short: {what} (peer gone)")
                if res < rem:  # short read: the receive queue ran dry mid-payload
                    counters["short_reads"] += 1
                    conn.pay_pos += res
                    self._arm_payload(conn)
                    continue
                conn.pending = None
                now = monotonic_ns()
                conn.placed_seq = seq
                conn.placed_bytes += nbytes
                # xfer = the write's 0-based position in its initiator's post order (as
                # stream_target.py reports it; one connection per initiator here, so seq - 1).
                placed.extend((seq - 1, dst_off, nbytes, now))  # flat: no tuple kept per write
                if imm:
                    notifies.append((imm - 1, now))
                counters["placed"] += 1
                counters["bytes"] += nbytes
                hfill = res - rem  # bytes of the next header that came with it
                if hfill == _HDR_SIZE:
                    # _header_in, inlined (this runs once per write): the wire accepts the header
                    h = conn.wire.write_header(conn.hdr)
                    if h is not None and h[3]:
                        _m, _v, _t, nbytes, dst_off, seq, imm = h
                        if guard is not None:
                            guard(dst_off, nbytes)
                        conn.pending = (seq, dst_off, nbytes, imm)
                        conn.pay_pos = 0
                        pack_iov(conn.iov, 0, base + dst_off, nbytes, conn.hdr_addr, _HDR_SIZE)
                        put(op_recvmsg, conn.fd, conn.msg_addr, 1, conn.ud_base | ((seq & _SEQ_MASK) << 4) | K_PAYLOAD)
                    else:
                        self._on_header(conn, _HDR_SIZE, h, placed, notifies)
                else:
                    conn.hfill = hfill
                    self._arm_header(conn)
            elif kind == K_HDR:
                got = res + conn.hfill if res > 0 else res
                conn.hfill = 0
                if got == _HDR_SIZE and not conn.wire.bye:
                    self._header_in(conn, placed, notifies)
                else:
                    self._on_header(conn, got, None, placed, notifies)
            elif kind == K_HELLO:
                self._on_hello(conn, res)
            elif kind == K_ACK_SEND:
                conn.ack_inflight = False
                if res < 0 and not conn.wire.bye:
                    self._peer_failed(conn, f"sending ACK failed: {_strerror(res)}")

    def _send_acks(self, busy: bool = False) -> None:
        for conn in self._conns.values():
            gap = conn.placed_seq - conn.acked_sent
            if conn.dead or conn.ack_inflight or not gap:
                continue
            if busy and gap < ACK_EVERY and conn.placed_bytes - conn.acked_bytes < ACK_BYTES:
                continue
            wire.ack_into(conn.ackbuf, conn.placed_seq)
            self._ring.prep_send(conn.fd, conn.ackbuf_addr, framing.HEADER_SIZE,
                                 _ud(conn.cid, 0, K_ACK_SEND), socket.MSG_NOSIGNAL)
            conn.ack_inflight = True
            conn.acked_sent = conn.placed_seq
            conn.acked_bytes = conn.placed_bytes

    def progress(self, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self._lsock is None:
            raise TransportError("iouring target: progress() before listen()")
        if self._deferred_error is not None:  # met in the call that placed rows: those went out first
            deferred, self._deferred_error = self._deferred_error, None
            raise deferred
        if self._ring is None:  # created by the thread that drives it (SINGLE_ISSUER)
            try:
                self._ring = self._u.Ring(self.queue_depth, defer_taskrun=self.defer_taskrun)
            except OSError as exc:
                raise TransportError(f"iouring ring setup failed: {exc}") from None
        # flat PLACED_DTYPE rows (xfer, dst_off, nbytes, t_ns) in a C array: no Python object kept
        # per write, and the result is a view of it (no conversion)
        placed = array.array("Q")
        notifies: list[tuple[int, int]] = []
        self.counters["progress_calls"] += 1
        deadline = time.monotonic() + max(0.0, timeout_s)
        lfd = self._lsock.fileno()
        accept = True
        reap, send_acks = self._reap, self._send_acks
        submit_and_get_events, cq_ready = self._ring.submit_and_get_events, self._ring.cq_ready
        try:
            for _ in range(1_000_000):  # bounded; exits on placement or deadline
                if accept or not self._conns:
                    self._accept()
                reap(placed, notifies)
                send_acks(True)  # cumulative: while busy, per ACK_EVERY writes or ACK_BYTES
                # One enter per pass: submits the payload+header recvs just queued and runs the
                # deferred work (the header recv linked behind a finished payload recv).
                submit_and_get_events()
                if cq_ready() and len(placed) < 4 * 4096:
                    accept = False
                    continue  # more completions already posted: take them in this call
                self._send_acks()  # about to return or sleep: acknowledge everything placed
                self._ring.submit()
                now = time.monotonic()
                if self._gate.next_deadline <= now:
                    self._expire(now)
                remaining = deadline - now
                if placed or notifies or remaining <= 0:
                    break
                self.counters["waits"] += 1
                accept = lfd in self._ring.wait(remaining, (lfd,))
        except (TransportError, ProtocolError) as exc:
            if not placed:
                raise
            # Rows placed earlier in this call are real placements: report them now (as the
            # stream target does) and raise the error on the next call.
            self._deferred_error = exc
        finally:
            if placed:  # acks for what was placed before an error still go out
                try:
                    self._send_acks()
                    self._ring.submit()
                except OSError:
                    pass
        out = np.frombuffer(placed, dtype=PLACED_DTYPE) if placed else np.empty(0, PLACED_DTYPE)
        return out, np.array(notifies, dtype=NOTIFY_DTYPE)

    def peers_closed(self) -> bool:
        peers = [c for c in self._conns.values() if c.hello_done]  # strangers are no peers
        return bool(peers) and all(c.wire.bye for c in peers)

    def data_path(self) -> dict[str, Any]:
        return {"transport": "iouring", "zero_copy": False, **self.counters, **self._gate.report(),
                "description": "io_uring RECV (MSG_WAITALL) straight into the destination slice; "
                               "the kernel copies from socket buffers (no ZCRX)",
                "submits": getattr(self._ring, "submits", 0)}

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._ring is not None:
            self._ring.close()
        for conn in self._conns.values():
            conn.sock.close()
        for conn in self._dying.values():  # the ring is gone: nothing refers to them any more
            conn.sock.close()
        self._dying = {}
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None


class IoUringTransport(Transport):
    name = "iouring"
    params = IOURING_PARAMS
    description = "io_uring SEND / SEND_ZC batches and RECV into the destination, via liburing"
    initiator_cls = IoUringInitiator
    target_cls = IoUringTarget

    @classmethod
    def probe(cls, options: Mapping[str, Any] | None = None) -> Capability:
        return _probe(options)
