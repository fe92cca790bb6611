"""Strangers on a stream target's data port: what a hostile or confused process on the data
network can do without the run token. Plain sockets, every wait bounded.

Importable (tests call the functions in a thread) and runnable as a script, so a test can
start it inside a network namespace: ``python stranger_peers.py HOST PORT [HALF_OPEN] [HOLD_S]``
prints one JSON line: the strangers it opened, by kind.
"""
from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script inside a namespace: find the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_kvfabric.transports import framing, handshake  # noqa: E402

NESTED = 60_000


def wait_listening(host: str, port: int, timeout_s: float = 30.0) -> socket.socket:
    """Connect as soon as the port listens (refused attempts never reach a target)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.create_connection((host, port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _quiet(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:  # the target dropped us: that is the point
        pass


def random_bytes(s: socket.socket) -> None:
    data = bytearray(random.Random(64).randbytes(64))
    data[0:2] = b"GE"  # never the frame magic
    s.sendall(bytes(data))


def wrong_token_hello(s: socket.socket) -> None:
    want = framing.HEADER_SIZE + framing.NONCE_BYTES
    got = b""
    s.settimeout(10)
    while len(got) < want:
        chunk = s.recv(want - len(got))
        if not chunk:
            return
        got += chunk
    s.sendall(handshake.encode_hello("not-the-token", got[framing.HEADER_SIZE:], "stranger", 0, 1))


def token_in_clear_hello(s: socket.socket) -> None:
    s.sendall(framing.encode_hello({"token": "guess", "initiator": "old", "index": 0, "connections": 1}))


def nested_json_hello(s: socket.socket) -> None:
    s.settimeout(5)
    s.sendall(framing.HEADER.pack(framing.MAGIC, framing.VERSION, framing.HELLO, NESTED, 0, 0, 0)
              + b"[" * NESTED)


def half_open_hello(s: socket.socket) -> None:
    s.sendall(framing.HEADER.pack(framing.MAGIC, framing.VERSION, framing.HELLO, 100, 0, 0, 0) + b'{"ini')


def trickle(s: socket.socket, stop: threading.Event, every_s: float) -> None:
    """One byte of a HELLO header per `every_s`, until stopped or dropped."""
    hdr = framing.HEADER.pack(framing.MAGIC, framing.VERSION, framing.HELLO, 100, 0, 0, 0)
    for i in range(len(hdr)):
        if stop.wait(every_s):
            return
        try:
            s.send(hdr[i : i + 1])
        except OSError:
            return


class Harassment:
    """Open every kind of stranger once, plus `half_open` half-sent HELLOs; hold them until
    close(). `opened` counts what connected, by the kind the target should report."""

    def __init__(self, host: str, port: int, half_open: int = 20, trickle_every_s: float = 0.2) -> None:
        self.socks: list[socket.socket] = []
        self.opened: dict[str, int] = {}
        self._stop = threading.Event()
        first = wait_listening(host, port)
        first.close()  # connect-and-close
        self._count("closed")
        for kind, act in (("bad_frame", random_bytes), ("bad_proof", wrong_token_hello),
                          ("bad_hello", token_in_clear_hello), ("bad_hello", nested_json_hello)):
            s = socket.create_connection((host, port), timeout=5)
            self.socks.append(s)
            self._count(kind)
            _quiet(act, s)
        idle = socket.create_connection((host, port), timeout=5)
        self.socks.append(idle)
        self._count("slow")  # idle: dropped at the HELLO deadline, or still pending at the end
        slow = socket.create_connection((host, port), timeout=5)
        self.socks.append(slow)
        self._count("slow")
        self._trickler = threading.Thread(target=trickle, args=(slow, self._stop, trickle_every_s), daemon=True)
        self._trickler.start()
        for _ in range(half_open):
            s = socket.create_connection((host, port), timeout=5)
            self.socks.append(s)
            self._count("half_open")
            _quiet(half_open_hello, s)

    def _count(self, kind: str) -> None:
        self.opened[kind] = self.opened.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.opened.values())

    def close(self) -> None:
        self._stop.set()
        self._trickler.join(5)
        for s in self.socks:
            s.close()


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    half_open = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    hold_s = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    h = Harassment(host, port, half_open)
    print(json.dumps(h.opened), flush=True)
    time.sleep(hold_s)
    h.close()
