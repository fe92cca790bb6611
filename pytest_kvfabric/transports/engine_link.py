"""Base halves for transports that wrap a third-party transfer engine (NIXL, Mooncake, ...).

Such engines move the bytes themselves (one-sided WRITEs) and tell the target only through
their own notifications. What every engine-backed transport needs on top, and what this
module gives it once:

- Announcements: each posted batch is one engine transfer whose notification carries the
  batch's records (xfer, dst_off, nbytes, notify request). The engine delivers a
  notification after the batch's bytes are placed, so the target reports exactly those
  records as PLACED, and the requests they end as NOTIFY, when the notification arrives.
- A side link (one TCP connection the initiator opens to the target, next to the engine's
  own): a JSON hello (token, engine metadata), guard requests before a batch reuses
  destination bytes (as the rdma transport does: the decode side must verify pages before
  they are overwritten, and the engine writes without the target's CPU), and a goodbye
  carrying the number of batches posted and whether every write completed (an initiator
  that failed mid-run makes the target fail at once instead of waiting for its timeout).

Subclasses implement only the engine calls (`engine_*` methods below); the descriptor
travels through the controller (Target.listen() -> Initiator.connect()), no etcd.
Frames on the side link: 1 byte kind + 4-byte big-endian length; J json, G guard, A ack, B bye.
"""
from __future__ import annotations

import hmac
import json
import select
import socket
import struct
import threading
import time
from abc import abstractmethod
from typing import Any, Mapping

import numpy as np

from ..errors import ProtocolError, TransportError
from .base import COMPLETION_DTYPE, NOTIFY_DTYPE, PLACED_DTYPE, Initiator, Target, check_region
from .rdma.placement import WrittenRanges
from .rdma.side import recv_exact

RECORD_DTYPE = np.dtype([("xfer", "<u8"), ("dst_off", "<u8"), ("nbytes", "<u8"), ("notify", "<i8")])
MAGIC = b"KVF1"
_HEAD = struct.Struct("<4sQI")  # magic, batch sequence number, record count
_FRAME = struct.Struct("!cI")
_KINDS = (b"J", b"G", b"A", b"B")
_U64 = struct.Struct("!Q")
_MAX_FRAME = 64 << 20
GUARD_SLICE_S = 0.005  # how often a guard wait reaps the engine (drives its progress)


def pack_announcement(seq: int, batch: np.ndarray) -> bytes:
    """The notification payload for one posted batch (XFER_DTYPE rows)."""
    rec = np.zeros(len(batch), RECORD_DTYPE)
    for name in RECORD_DTYPE.names:
        rec[name] = batch[name]
    return _HEAD.pack(MAGIC, seq, len(rec)) + rec.tobytes()


def unpack_announcement(payload: bytes, region_nbytes: int) -> tuple[int, np.ndarray]:
    """(batch seq, records) from a notification; ProtocolError if malformed or out of region."""
    if len(payload) < _HEAD.size:
        raise ProtocolError(f"engine notification of {len(payload)} bytes is shorter than its header")
    magic, seq, count = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise ProtocolError(f"engine notification with unknown magic {magic!r}")
    if len(payload) != _HEAD.size + count * RECORD_DTYPE.itemsize:
        raise ProtocolError(f"engine notification of batch {seq}: {len(payload)} bytes for {count} records")
    rec = np.frombuffer(payload, RECORD_DTYPE, count, _HEAD.size)
    for r in rec:
        why = check_region(region_nbytes, int(r["dst_off"]), int(r["nbytes"]))
        if why:
            raise ProtocolError(f"transfer {int(r['xfer'])}: {why}")
    return int(seq), rec


class Announcements:
    """Target side (pure): batches announced so far, and what each one placed."""

    def __init__(self, region_nbytes: int) -> None:
        self.region_nbytes = region_nbytes
        self.upto = 0  # every batch with seq < upto has been announced
        self._seen: set[int] = set()
        self.batches = 0

    def add(self, payloads: list[bytes], t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        placed: list[np.ndarray] = []
        for payload in payloads:
            seq, rec = unpack_announcement(payload, self.region_nbytes)
            if seq < self.upto or seq in self._seen:
                raise ProtocolError(f"batch {seq} announced twice")
            self._seen.add(seq)
            while self.upto in self._seen:
                self._seen.discard(self.upto)
                self.upto += 1
            self.batches += 1
            placed.append(rec)
        if not placed:
            return np.zeros(0, PLACED_DTYPE), np.zeros(0, NOTIFY_DTYPE)
        rec = np.concatenate(placed)
        p = np.zeros(len(rec), PLACED_DTYPE)
        for name in ("xfer", "dst_off", "nbytes"):
            p[name] = rec[name]
        p["t_ns"] = t_ns
        reqs = rec["notify"][rec["notify"] >= 0]
        n = np.zeros(len(reqs), NOTIFY_DTYPE)
        n["request"] = reqs
        n["t_ns"] = t_ns
        return p, n


def send_frame(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(_FRAME.pack(kind, len(payload)) + payload)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes]:
    kind, length = _FRAME.unpack(recv_exact(sock, _FRAME.size, "side link"))
    if length > _MAX_FRAME or kind not in _KINDS:
        raise ProtocolError(f"bad side-link frame {kind!r} of {length} bytes")
    return kind, recv_exact(sock, length, "side link")


class EngineTarget(Target):
    """Decode side of an engine-backed transport. Subclasses implement the engine_* methods."""

    name = "engine"  # set by subclasses: used in messages and data_path
    poll_sleep_s = 0.0002  # between empty notification polls (engines offer no blocking wait)

    @abstractmethod
    def engine_open(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        """Start the engine, register self.region; return descriptor fields for the initiator."""

    def engine_peer(self, hello: Mapping[str, Any]) -> dict[str, Any]:
        """Accept the initiator's hello (e.g. load its metadata); return reply fields."""
        return {}

    @abstractmethod
    def engine_notifications(self) -> list[bytes]:
        """Announcement payloads that arrived since the last call (never blocks)."""

    @abstractmethod
    def engine_data_path(self) -> dict[str, Any]:
        ...

    @abstractmethod
    def engine_close(self) -> None:
        ...

    def listen(self, bind_host: str, timeout_s: float) -> dict[str, Any]:
        self.token = str(self.options.get("token", ""))
        self.ann = Announcements(len(self.region))
        self._lock = threading.Lock()
        self._inbox: list[tuple[bytes, bytes]] = []
        self._guards: list[tuple[int, int, np.ndarray]] = []
        self._guard_count = 0
        self._conn: socket.socket | None = None
        self._error: str | None = None
        self._bye: int | None = None
        self._stop = threading.Event()
        desc = self.engine_open(bind_host, timeout_s)
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        self._lsock = socket.socket(family, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((bind_host, 0))
        self._lsock.listen(1)
        self._lsock.settimeout(0.2)
        self._thread = threading.Thread(target=self._side, name=f"kvfabric-{self.name}-side", daemon=True)
        self._thread.start()
        return {"transport": self.name, "host": bind_host, "side_port": self._lsock.getsockname()[1],
                "region_nbytes": len(self.region), **desc}

    def _side(self) -> None:
        deadline = time.monotonic() + float(self.options.get("accept_timeout_s", 600.0))
        conn = None
        while conn is None and not self._stop.is_set():
            if time.monotonic() > deadline:
                self._error = f"no initiator opened the {self.name} side link in time"
                return
            try:
                conn, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
        if conn is None:
            return
        try:
            conn.settimeout(30.0)
            kind, payload = recv_frame(conn)
            hello = json.loads(payload) if kind == b"J" else {}
            if not hmac.compare_digest(str(hello.get("token", "")), self.token):
                send_frame(conn, b"J", json.dumps({"error": "bad token"}).encode())
                raise ProtocolError("initiator presented a bad token")
            try:
                reply = self.engine_peer(hello)
            except Exception as exc:
                send_frame(conn, b"J", json.dumps({"error": str(exc)}).encode())
                raise
            send_frame(conn, b"J", json.dumps({"ok": True, **reply}).encode())
            conn.settimeout(0.2)
            self._conn = conn
            while not self._stop.is_set():
                try:
                    kind, payload = recv_frame(conn)
                except socket.timeout:
                    continue
                with self._lock:
                    self._inbox.append((kind, payload))
                if kind == b"B":
                    return
        except (OSError, ValueError, ProtocolError, TransportError) as exc:
            if not self._stop.is_set() and self._bye is None:
                self._error = f"{self.name} side link: {exc}"
        finally:
            if self._conn is None:
                conn.close()

    def _take_frames(self) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for kind, payload in inbox:
            if kind == b"G":
                if len(payload) < 2 * _U64.size or (len(payload) - 2 * _U64.size) % RECORD_DTYPE.itemsize:
                    raise ProtocolError(f"malformed guard frame of {len(payload)} bytes")
                seq, upto = _U64.unpack_from(payload)[0], _U64.unpack_from(payload, _U64.size)[0]
                self._guards.append((seq, upto, np.frombuffer(payload, RECORD_DTYPE, offset=2 * _U64.size)))
            elif kind == b"B":
                if len(payload) < _U64.size + 1:
                    raise ProtocolError(f"malformed bye frame of {len(payload)} bytes")
                self._bye = _U64.unpack_from(payload)[0]
                if payload[_U64.size] == 0:  # the initiator closed with writes unfinished
                    why = payload[_U64.size + 1:].decode(errors="replace") or "no reason given"
                    self._error = (f"{self.name} initiator failed ({why}); it closed with writes unfinished "
                                   f"({self._bye} batches posted, {self.ann.batches} announced)")

    def progress(self, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        sleep = self.poll_sleep_s
        while True:
            self._take_frames()
            if self._error:
                raise TransportError(self._error)
            payloads = self.engine_notifications()
            if payloads:
                return self.ann.add(payloads, time.monotonic_ns())
            if self._guards and self.ann.upto >= self._guards[0][1]:
                self._serve_guard()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return np.zeros(0, PLACED_DTYPE), np.zeros(0, NOTIFY_DTYPE)
            time.sleep(min(sleep, left))
            sleep = min(sleep * 2, 0.002)

    def _serve_guard(self) -> None:
        """Every batch posted before the reuse is announced (and was returned as PLACED by an
        earlier progress() call): verify what the reusing writes will overwrite, then ack."""
        seq, _, rec = self._guards.pop(0)
        if self.write_guard is not None:
            for r in rec:
                self.write_guard(int(r["dst_off"]), int(r["nbytes"]))
        self._guard_count += 1
        try:
            send_frame(self._conn, b"A", _U64.pack(seq))  # type: ignore[arg-type]
        except (OSError, AttributeError) as exc:
            raise TransportError(f"{self.name} side link: cannot acknowledge guard {seq}: {exc}") from exc

    def peers_closed(self) -> bool:
        if self._bye is None:
            self._take_frames()
        return self._bye is not None and self.ann.batches >= self._bye

    def data_path(self) -> dict[str, Any]:
        out = self.engine_data_path()
        out.setdefault("transport", self.name)
        out["batches_announced"] = self.ann.batches if hasattr(self, "ann") else 0
        out["guard_round_trips"] = getattr(self, "_guard_count", 0)
        out["placement_proof"] = ("the engine's notification after each batch, carrying its records; "
                                  "pages verified by the decode side")
        return out

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._lsock.close()
            self._thread.join(timeout=2.0)
            if self._conn is not None:
                self._conn.close()
        self.engine_close()


class EngineInitiator(Initiator):
    """Prefill side of an engine-backed transport. Subclasses implement the engine_* methods."""

    name = "engine"

    @abstractmethod
    def engine_connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """Start the engine, register self.region, reach the target; return hello fields."""

    def engine_accepted(self, reply: Mapping[str, Any]) -> None:
        """The target accepted the hello (its reply fields)."""

    @abstractmethod
    def engine_submit(self, seq: int, batch: np.ndarray, announcement: bytes, timeout_s: float) -> None:
        """Start one engine transfer writing the batch, with `announcement` as its notification."""

    @abstractmethod
    def engine_reap(self, timeout_s: float) -> list[tuple[int, int]]:
        """(seq, t_ns) of batches completed since the last call, waiting at most timeout_s
        for the first; raises TransportError for a failed transfer."""

    @abstractmethod
    def engine_data_path(self) -> dict[str, Any]:
        ...

    @abstractmethod
    def engine_close(self) -> None:
        ...

    def connect(self, descriptor: Mapping[str, Any], timeout_s: float) -> None:
        self.remote = dict(descriptor)
        self.remote_nbytes = int(descriptor["region_nbytes"])
        self._pending: dict[int, np.ndarray] = {}  # seq -> xfer ids
        self._count = 0
        self._seq = 0
        self._done: list[np.ndarray] = []
        self._written = WrittenRanges()
        self._guard_seq = 0
        hello = self.engine_connect(descriptor, timeout_s)
        host, port = str(descriptor["host"]), int(descriptor["side_port"])
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
            self.sock.settimeout(timeout_s)
            send_frame(self.sock, b"J", json.dumps({"token": str(self.options.get("token", "")), **hello}).encode())
            kind, payload = recv_frame(self.sock)
            reply = json.loads(payload)
        except (OSError, ValueError) as exc:
            raise TransportError(f"{self.name} side link to {host}:{port}: {exc}") from exc
        if not reply.get("ok"):
            raise TransportError(f"{self.name} target refused the connection: {reply.get('error')}")
        self.engine_accepted(reply)

    def post(self, batch: np.ndarray, timeout_s: float) -> None:
        try:
            self._post(batch, timeout_s)
        except TransportError as exc:
            self.failure = str(exc)  # told to the target in the goodbye
            raise

    def _post(self, batch: np.ndarray, timeout_s: float) -> None:
        if len(batch) == 0:
            return
        deadline = time.monotonic() + max(timeout_s, 0.0)
        for limit, off, what in ((self.remote_nbytes, "dst_off", "remote"), (len(self.region), "src_off", "local")):
            over = np.flatnonzero(batch[off] + batch["nbytes"] > limit)
            if len(over):
                i = int(over[0])
                raise TransportError(f"{self.name}: transfer {int(batch['xfer'][i])}: {what} range "
                                     f"[{int(batch[off][i])}, {int(batch[off][i] + batch['nbytes'][i])}) "
                                     f"outside the {limit}-byte {what} region")
        reuse = np.array([self._written.add(a, a + n) for a, n in
                          zip(batch["dst_off"].tolist(), batch["nbytes"].tolist())], dtype=bool)
        if reuse.any():
            self._guard(batch[reuse], deadline)
        seq = self._seq
        self._seq += 1
        self._pending[seq] = batch["xfer"].copy()
        self._count += len(batch)
        self.engine_submit(seq, batch, pack_announcement(seq, batch), max(deadline - time.monotonic(), 0.0))

    def _guard(self, batch: np.ndarray, deadline: float) -> None:
        """Ask the target to verify what these writes overwrite, once every batch posted
        before is announced there; wait for its ack."""
        self._guard_seq += 1
        rec = np.zeros(len(batch), RECORD_DTYPE)
        for name in RECORD_DTYPE.names:
            rec[name] = batch[name]
        try:
            send_frame(self.sock, b"G", _U64.pack(self._guard_seq) + _U64.pack(self._seq) + rec.tobytes())
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"{self.name}: the target did not acknowledge reuse of destination "
                                         f"pages (guard {self._guard_seq}) in time")
                # The ack needs the target to have every earlier batch's notification, and an
                # engine without its own progress (NIXL's UCX with our polls) delivers them only
                # while this side keeps reaping: wait in short slices and reap in between
                # (seen: the guard and the target waiting on each other until the deadline).
                # (select, not a short socket timeout: a timeout inside a frame would cut it in two.)
                if not select.select([self.sock], [], [], min(left, GUARD_SLICE_S))[0]:
                    self._reap(0.0)
                    continue
                self.sock.settimeout(left)
                try:
                    kind, payload = recv_frame(self.sock)
                except socket.timeout:
                    continue
                if kind == b"A" and _U64.unpack(payload)[0] == self._guard_seq:
                    return
        except (OSError, ConnectionError) as exc:
            raise TransportError(f"{self.name} side link lost: {exc}") from exc

    def poll(self, timeout_s: float) -> np.ndarray:
        try:
            return self._poll(timeout_s)
        except TransportError as exc:
            self.failure = str(exc)
            raise

    def _reap(self, timeout_s: float) -> None:
        """Move the engine's completed batches (waiting at most timeout_s) into self._done."""
        for seq, t_ns in self.engine_reap(timeout_s):
            xfers = self._pending.pop(seq)
            out = np.zeros(len(xfers), COMPLETION_DTYPE)
            out["xfer"] = xfers
            out["t_ns"] = t_ns
            self._count -= len(xfers)
            self._done.append(out)

    def _poll(self, timeout_s: float) -> np.ndarray:
        if not self._done and self._count:
            self._reap(timeout_s)
        if not self._done:
            return np.zeros(0, COMPLETION_DTYPE)
        out, self._done = np.concatenate(self._done), []
        return out

    def outstanding(self) -> int:
        return self._count

    def data_path(self) -> dict[str, Any]:
        out = self.engine_data_path()
        out.setdefault("transport", self.name)
        out["batches_posted"] = getattr(self, "_seq", 0)
        return out

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            try:
                tail = b"\x01" if self._count == 0 else b"\x00" + getattr(self, "failure", "").encode()[:4096]
                send_frame(sock, b"B", _U64.pack(self._seq) + tail)
            except OSError:
                pass
            sock.close()
            self.sock = None
        self.engine_close()


__all__ = ["RECORD_DTYPE", "Announcements", "EngineInitiator", "EngineTarget", "pack_announcement",
           "recv_frame", "send_frame", "unpack_announcement"]
