"""Test helpers for stream transports: a target served from a thread, raw-socket peers."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from pytest_kvfabric.transports import framing, handshake
from pytest_kvfabric.transports.base import XFER_DTYPE, Transport

TOKEN = "test-secret"
SENTINEL = 0xA5


def pattern(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def batch(src, dst, nbytes, notify=None, first_xfer: int = 0) -> np.ndarray:
    n = len(nbytes)
    b = np.zeros(n, XFER_DTYPE)
    b["xfer"] = np.arange(first_xfer, first_xfer + n)
    b["src_off"], b["dst_off"], b["nbytes"] = src, dst, nbytes
    b["notify"] = -1 if notify is None else notify
    return b


class ServedTarget:
    """Runs target.progress() in a thread, collecting what it reports (all waits bounded)."""

    def __init__(self, transport: type[Transport], region_len: int, **options: Any) -> None:
        self.region = transport.allocate(region_len, {})
        self.arr = np.frombuffer(self.region, np.uint8)
        self.arr[:] = SENTINEL
        options.setdefault("token", TOKEN)
        self.target = transport.target(self.region, options)
        self.descriptor = self.target.listen("127.0.0.1", 5.0)
        self.placed: list[np.ndarray] = []
        self.notifies: list[np.ndarray] = []
        self.history: list[tuple[int, int]] = []  # (len(placed so far), len(notifies so far)) per call
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ServedTarget":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for _ in range(1_000_000):
                if self._stop.is_set():
                    return
                p, n = self.target.progress(0.02)
                if len(p) or len(n):
                    self.placed.append(p)
                    self.notifies.append(n)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.error = exc

    def stop(self, wait_closed_s: float = 5.0) -> None:
        deadline = time.monotonic() + wait_closed_s
        while not self.target.peers_closed() and time.monotonic() < deadline and self.error is None:
            time.sleep(0.005)
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "target thread did not stop"

    def all_placed(self) -> np.ndarray:
        from pytest_kvfabric.transports.base import PLACED_DTYPE

        return np.concatenate(self.placed) if self.placed else np.empty(0, PLACED_DTYPE)

    def all_notifies(self) -> np.ndarray:
        from pytest_kvfabric.transports.base import NOTIFY_DTYPE

        return np.concatenate(self.notifies) if self.notifies else np.empty(0, NOTIFY_DTYPE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.target.close()


@contextmanager
def connected(transport: type[Transport], served: ServedTarget, src_region: memoryview,
              options: dict[str, Any] | None = None, descriptor: dict[str, Any] | None = None,
              stop_wait_s: float = 5.0, close_target: bool = False) -> Iterator[Any]:
    """An initiator over src_region, connected to `served` (or to `descriptor`). On exit it is
    closed and the target thread stopped (bounded), so the caller can check what the target
    saw; close_target also closes the target."""
    ini = transport.initiator(src_region, {"token": TOKEN, **(options or {})})
    try:
        if served._thread.ident is None and descriptor is None:  # not started: drive the handshake
            connect_driving(ini, served.target, served.descriptor)
        else:
            ini.connect(descriptor or served.descriptor, 5.0)
        yield ini
    finally:
        ini.close()
        served.stop(stop_wait_s)
        if close_target:
            served.close()


@contextmanager
def listening_target(transport: type[Transport], region_len: int) -> Iterator[tuple[Any, dict[str, Any], np.ndarray]]:
    """A target over a SENTINEL-filled region, listening on loopback and never progressed by
    a thread (the test drives it, e.g. against a RawPeer): (target, descriptor, region array)."""
    region = transport.allocate(region_len, {})
    arr = np.frombuffer(region, np.uint8)
    arr[:] = SENTINEL
    tgt = transport.target(region, {"token": TOKEN})
    try:
        yield tgt, tgt.listen("127.0.0.1", 5), arr
    finally:
        tgt.close()


def wait_all(initiator, n: int, timeout_s: float = 30.0) -> np.ndarray:
    """Poll until n completions arrived (bounded)."""
    from pytest_kvfabric.transports.base import COMPLETION_DTYPE

    got = [np.empty(0, COMPLETION_DTYPE)]
    total = 0
    deadline = time.monotonic() + timeout_s
    while total < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {total} of {n} completions within {timeout_s} s"
        c = initiator.poll(min(left, 1.0))
        got.append(c)
        total += len(c)
    return np.concatenate(got)


def round_trip(transport, sizes, src_offs, dst_offs, region_len, connections=1, notify=None,
               batch_size=None, **opts):
    """Post the writes, wait for every completion, return (served target, initiator, completions).

    The source region holds a seeded pattern; the caller checks the destination."""
    served = ServedTarget(transport, region_len, connections=connections, **opts).start()
    src_region = transport.allocate(region_len, {})
    src = np.frombuffer(src_region, np.uint8)
    src[:] = pattern(region_len, 1)
    with connected(transport, served, src_region, {"connections": connections, **opts}) as ini:
        b = batch(src_offs, dst_offs, sizes, notify)
        step = batch_size or len(b)
        comps = []
        for i in range(0, len(b), step):
            ini.post(b[i : i + step], 30.0)
            comps.append(ini.poll(0))
        done = np.concatenate(comps)
        comps = [done, wait_all(ini, len(b) - len(done))]
        assert ini.outstanding() == 0
        completions = np.concatenate(comps)
        data_path, stats = ini.data_path(), ini.stats()
    if served.error is not None:
        served.close()
        raise served.error
    return served, src, completions, data_path, stats


class RawPeer:
    """A hand-driven initiator on a plain blocking socket (to send what a real one never would).

    The target sends its CHALLENGE when it accepts, i.e. inside some progress() call that the
    test may only make later in this thread: hello() answers it from a helper thread, and what
    the test sends meanwhile is queued behind the HELLO (in order)."""

    def __init__(self, descriptor: dict, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection((descriptor["host"], descriptor["port"]), timeout=timeout_s)
        self.nonce: bytes | None = None
        self._lock = threading.Lock()
        self._queued: list[bytes] | None = None  # bytes held back until the HELLO is out
        self._answer: threading.Thread | None = None
        self._close_after = False  # close() came while the HELLO waited: close once it is out
        self.hello_error: BaseException | None = None

    def challenge(self) -> bytes:
        """Read the target's CHALLENGE frame (exactly it); return its nonce."""
        if self.nonce is None:
            data = b""
            want = framing.HEADER_SIZE + framing.NONCE_BYTES
            while len(data) < want:
                chunk = self.sock.recv(want - len(data))
                assert chunk, f"target closed after {len(data)} bytes of its CHALLENGE"
                data += chunk
            h = framing.decode_header(data[: framing.HEADER_SIZE])
            assert h.type == framing.CHALLENGE, h
            self.nonce = data[framing.HEADER_SIZE :]
        return self.nonce

    def hello(self, token: str = TOKEN, index: int = 0, connections: int = 1,
              initiator: str = "raw") -> "RawPeer":
        """Answer the CHALLENGE with a HELLO proving `token` (a wrong token: a wrong proof)."""
        self._queued = []

        def answer() -> None:
            try:
                frame = handshake.encode_hello(token, self.challenge(), initiator, index, connections)
            except BaseException as exc:  # noqa: BLE001 - reported by wait_hello()
                self.hello_error = exc
                frame = b""
            with self._lock:
                queued, self._queued = self._queued or [], None
                try:
                    self.sock.sendall(frame + b"".join(queued))
                except OSError as exc:
                    self.hello_error = self.hello_error or exc
                if self._close_after:
                    self._linger_close()

        self._answer = threading.Thread(target=answer, daemon=True)
        self._answer.start()
        return self

    def _linger_close(self) -> None:
        """Close as a polite peer does: FIN after the data, then read (and drop) what the
        target still sends until its EOF, so that unread ACKs do not turn the close into an
        RST that the target would see instead of the end of the data (bounded: 5 s)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(5)
            for _ in range(10_000):
                if not self.sock.recv(65536):
                    break
        except OSError:
            pass
        self.sock.close()

    def wait_hello(self, timeout_s: float = 10.0) -> None:
        if self._answer is not None:
            self._answer.join(timeout_s)
            assert not self._answer.is_alive(), "no CHALLENGE from the target"
        if self.hello_error is not None:
            raise self.hello_error

    def send(self, data: bytes) -> None:
        with self._lock:
            if self._queued is not None:
                self._queued.append(data)
                return
        self.sock.sendall(data)

    def write(self, dst_off: int, payload: bytes, seq: int, notify: int | None = None) -> None:
        self.send(framing.encode_write(dst_off, len(payload), seq, notify) + payload)

    def read_frames(self, timeout_s: float = 5.0) -> list[tuple[framing.Header, bytes]]:
        """Read until the target closes (or timeout); return the frames it sent (after the
        CHALLENGE)."""
        if self._answer is not None:
            self._answer.join(timeout_s)
        self.sock.settimeout(timeout_s)
        reader = framing.ControlReader()
        frames = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not data:
                break
            frames += list(reader.feed(data))
        return frames

    def close(self) -> None:
        with self._lock:
            if self._queued is not None:  # the HELLO is not out yet: close right after it
                self._close_after = True
                return
        self.sock.close()


def progress_until_error(target, timeout_s: float = 5.0) -> tuple[BaseException | None, np.ndarray]:
    """Drive target.progress() in this thread until it raises; return (error, what was placed)."""
    placed = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            p, _n = target.progress(0.05)
        except Exception as exc:  # noqa: BLE001
            return exc, (np.concatenate(placed) if placed else np.empty(0))
        placed.append(p)
    return None, (np.concatenate(placed) if placed else np.empty(0))


class SilentTarget:
    """A listening socket that answers one connection's handshake with a CHALLENGE (so an
    initiator's connect() completes) and then never reads nor acknowledges a byte."""

    def __init__(self) -> None:
        self._ls = socket.create_server(("127.0.0.1", 0))
        self.port = self._ls.getsockname()[1]
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._ls.settimeout(10)
        try:
            conn, _ = self._ls.accept()
        except OSError:
            return
        conn.sendall(handshake.encode_challenge(b"\0" * framing.NONCE_BYTES))
        self._conn = conn

    def accepted(self) -> socket.socket:
        self._thread.join(10)
        assert self._conn is not None, "no connection to the silent target"
        return self._conn

    def close(self) -> None:
        self._ls.close()
        self._thread.join(10)
        if self._conn is not None:
            self._conn.close()


def connect_driving(initiator, target, descriptor: dict, timeout_s: float = 5.0) -> None:
    """initiator.connect() needs the target's CHALLENGE, which the target sends from inside
    progress(): connect from a helper thread while this thread drives the target (bounded).
    Whatever the target placed meanwhile is returned by later progress() calls only if the
    caller posts after this returns (nothing is posted during connect)."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            initiator.connect(descriptor, timeout_s)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            err.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout_s + 5
    while t.is_alive() and time.monotonic() < deadline:
        target.progress(0.01)
    t.join(1)
    assert not t.is_alive(), "connect did not return"
    if err:
        raise err[0]
