"""The iouring initiator: posted writes become SENDMSG (or SENDMSG_ZC) chains, one
io_uring_submit each; a write completes on the target's cumulative ACK (and, in send_zc mode,
its SQE's notification). See iouring.py for the whole transport."""
from __future__ import annotations

import collections
import errno
import os
import secrets
import socket
import time
from typing import Any, Mapping

import numpy as np

from ..errors import ProtocolError, TransportError
from . import framing, wire
from .base import COMPLETION_DTYPE, Initiator, check_region
from .iouring_common import (
    ACK_BUF_BYTES,
    HDR_DTYPE,
    IOVEC_DTYPE,
    K_ACK_RECV,
    K_PAYLOAD,
    K_READ_RECV,
    MSGHDR_DTYPE,
    NO_COMPLETIONS,
    ROW_DTYPE,
    SEND_FLAGS,
    SEQ_MASK,
    SQE_BYTES_CAP,
    SQE_DTYPE,
    WRITES_PER_SQE,
    load_uring,
    ring_options,
    strerror,
    user_data,
)
from .stream_common import connect_with_hello, set_tcp_options, tcp_info


class IoUringInitiator(Initiator):
    def __init__(self, region: memoryview, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.mode, self.queue_depth, self.inflight = ring_options(self.options)
        self.defer_taskrun = bool(self.options.get("defer_taskrun", True))
        self._zc = self.mode == "send_zc"
        self._u = load_uring()
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
        self._mv = region.cast("B") if region.format != "B" else region
        # what we accept from the target (ACKs, ERROR, READ_DATA whose payload lands in the region)
        self._wire = wire.InitiatorWire(self._mv)
        self._reads = False  # the target's descriptor offers one-sided reads
        self._outstanding = 0
        self.counters = {"writes": 0, "bytes": 0, "chains": 0, "send_sqes": 0, "waits": 0, "zc_notifications": 0,
                         "copied_notifications": 0, "reads_posted": 0, "read_payload_recvs": 0}

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
        self._reads = bool(descriptor.get("reads"))
        try:
            self._ring = self._u.Ring(self.queue_depth, defer_taskrun=self.defer_taskrun)
        except OSError as exc:
            sock.close()
            raise TransportError(f"iouring ring setup failed: {exc}") from None
        self._arm_ack_recv()
        self._ring.submit()

    def _arm_ack_recv(self) -> None:
        self._ring.prep_recv(self._sock.fileno(), self._ackbuf_addr, ACK_BUF_BYTES,
                             user_data(0, 0, K_ACK_RECV))

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
        rows["type"] = framing.WRITE
        self._next_seq += n
        self._waiting.append((seq0, batch["xfer"].astype(np.uint64)))  # a copy: the caller may reuse batch
        self._pending.append(rows)
        self._outstanding += len(batch)
        self._pump()

    def post_read(self, batch: np.ndarray, timeout_s: float) -> None:
        """READ frames go into the same chains as the writes (one sequence): the target answers
        with READ_DATA pieces, then the ACK covering the read, which completes it."""
        self._raise_if_failed()
        if self._ring is None:
            raise TransportError("iouring initiator: post_read() before connect()")
        if len(batch) == 0:
            return
        if not self._reads:
            raise TransportError("iouring initiator: the target serves no one-sided reads "
                                 "(its descriptor does not offer them)")
        local, nbytes = batch["local_off"], batch["nbytes"]
        end = local + nbytes
        bad = (end > self._src_len) | (nbytes > framing.MAX_WRITE)
        if bad.any():
            i = int(np.argmax(bad))
            raise TransportError(
                f"iouring initiator: read xfer {int(batch['xfer'][i])} into [{int(local[i])}, "
                f"{int(end[i])}) outside the local region of {self._src_len} bytes or longer "
                f"than {framing.MAX_WRITE}")
        n = len(batch)
        rows = np.zeros(n, ROW_DTYPE)
        rows["dst_off"] = batch["remote_off"]
        rows["nbytes"] = nbytes
        rows["notify"] = -1
        seq0 = self._next_seq
        rows["seq"] = np.arange(seq0, seq0 + n, dtype=np.uint64)
        rows["type"] = framing.READ
        self._next_seq += n
        for seq, lo, nb in zip(range(seq0, seq0 + n), local.tolist(), nbytes.tolist()):
            self._wire.reads.add(seq, lo, nb)
        self._waiting.append((seq0, batch["xfer"].astype(np.uint64)))
        self._pending.append(rows)
        self._outstanding += n
        self.counters["reads_posted"] += n
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
        hdr["type"] = rows["type"]
        hdr["nbytes"] = rows["nbytes"]
        hdr["dst_off"] = rows["dst_off"]
        hdr["seq"] = rows["seq"]
        hdr["imm"] = np.where(rows["notify"] >= 0, rows["notify"] + 1, 0).astype(np.uint64)
        # iovecs [header, payload slice of the source region] per write (no copy in Python);
        # one SENDMSG(_ZC) carries up to WRITES_PER_SQE writes (UIO_MAXIOV = 1024 iovecs), so
        # a whole chain is one or two SQEs: the kernel walks the iovecs, Python does not.
        is_write = rows["type"] == framing.WRITE
        payload = np.where(is_write, rows["nbytes"], 0)  # a READ frame is its header alone
        per_sqe = WRITES_PER_SQE if int(payload.sum()) <= SQE_BYTES_CAP else 1
        idx = np.arange(k, dtype=np.uint64)
        iov = np.zeros((k, 2), IOVEC_DTYPE)
        iov["base"][:, 0] = np.uint64(hdr.ctypes.data) + idx * np.uint64(framing.HEADER_SIZE)
        iov["len"][:, 0] = framing.HEADER_SIZE
        iov["base"][:, 1] = np.uint64(self._src_addr) + rows["src_off"]
        iov["len"][:, 1] = payload
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
        self.counters["writes"] += int(is_write.sum())
        self.counters["bytes"] += int(payload.sum())
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
                self._fail(f"receiving acks failed: {strerror(r0)}{gone}")
            self._fail(f"send of writes up to seq {(ud0 >> 4) & SEQ_MASK} failed: {strerror(r0)}{gone}")
        for ud, res, flags in cqes:
            kind = ud & 15
            if kind == K_PAYLOAD:
                seq = (ud >> 4) & SEQ_MASK
                if flags & notif_flag:
                    # ZC notification: res is a usage bitmask, not a length (quirk 3 in load_uring).
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
            elif kind == K_READ_RECV:
                self._on_read_payload(res)

    def _on_acks(self, n: int) -> None:
        if n == 0:
            self._fail("target closed the connection (peer gone)")
        bad = self._wire.feed(memoryview(self._ackbuf)[:n], self._next_seq - 1)
        self._acked = self._wire.acked
        if isinstance(bad, wire.PeerError):
            self._fail(f"target rejected the stream: {bad.reason}")
        elif bad is not None:
            self._fail(bad.reason, ProtocolError)
        self._arm_next_recv()

    def _arm_next_recv(self) -> None:
        """The rest of a READ_DATA piece straight into the region, or the next frames."""
        rd = self._wire.reads
        if rd.want_left:
            self.counters["read_payload_recvs"] += 1
            self._ring.prep_recv(self._sock.fileno(), self._src_addr + rd.want_off, rd.want_left,
                                 user_data(0, 0, K_READ_RECV))
        else:
            self._arm_ack_recv()

    def _on_read_payload(self, n: int) -> None:
        if n <= 0:
            left = self._wire.reads.want_left
            self._fail(f"target closed the connection with {left} bytes of a READ_DATA piece "
                       f"missing{'' if n == 0 else ': ' + strerror(n)} (peer gone)")
        self._wire.reads.placed(n)
        self._arm_next_recv()

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
            return NO_COMPLETIONS
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
        out: dict[str, Any] = {"transport": "iouring", "mode": self.mode, **c, "reads": self._reads,
                               "bytes_read": self._wire.reads.bytes_read,
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
