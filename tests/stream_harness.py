"""Test helpers for stream transports: a target served from a thread, raw-socket peers."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from pytest_kvfabric.transports import framing
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
    """A hand-driven initiator on a plain blocking socket (to send what a real one never would)."""

    def __init__(self, descriptor: dict, timeout_s: float = 5.0) -> None:
        self.sock = socket.create_connection((descriptor["host"], descriptor["port"]), timeout=timeout_s)

    def hello(self, token: str | None = TOKEN, index: int = 0, connections: int = 1,
              initiator: str = "raw") -> "RawPeer":
        params: dict[str, Any] = {"index": index, "connections": connections, "initiator": initiator}
        if token is not None:
            params["token"] = token
        self.sock.sendall(framing.encode_hello(params))
        return self

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def write(self, dst_off: int, payload: bytes, seq: int, notify: int | None = None) -> None:
        self.sock.sendall(framing.encode_write(dst_off, len(payload), seq, notify) + payload)

    def read_frames(self, timeout_s: float = 5.0) -> list[tuple[framing.Header, bytes]]:
        """Read until the target closes (or timeout); return the frames it sent."""
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
