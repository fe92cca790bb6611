"""The rdma side connection: framing, the HELLO's validation, and accepting the initiator.

Frames: 1 byte kind + 4-byte big-endian length + payload. Kinds: J json, R records,
G guard request, A guard ack, B bye.

The target listens on its data-plane address, where anyone can connect first. So the
acceptor keeps accepting (up to MAX_PENDING connections at once, each given HELLO_TIMEOUT_S
to say hello) and lets through only the connection whose HELLO carries the run's token;
strangers get {"error": ...} and are closed, and their refusals are kept (bounded) to name
them if the real initiator never comes. A HELLO is bounded in size (MAX_HELLO bytes) and in
JSON nesting (MAX_DEPTH) before it is parsed, and every field is checked.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import ProtocolError
from ..framing import json_depth_exceeds

FRAME = struct.Struct("!cI")
FRAME_KINDS = (b"J", b"R", b"G", b"A", b"B")
MAX_FRAME = 64 << 20
MAX_HELLO = 64 << 10
MAX_DEPTH = 4  # {"qpns": [..]} needs 2
MAX_PENDING = 32
HELLO_TIMEOUT_S = 10.0
MAX_REFUSALS_KEPT = 16
_MTUS = (256, 512, 1024, 2048, 4096)


def send_frame(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    sock.sendall(FRAME.pack(kind, len(payload)) + payload)


def recv_exact(sock: socket.socket, n: int, what: str = "side connection") -> bytes:
    """Exactly n bytes from a blocking socket; ConnectionError naming `what` if it closes first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError(f"{what} closed")
        got += k
    return bytes(buf)


def check_header(kind: bytes, length: int, limit: int = MAX_FRAME) -> None:
    if kind not in FRAME_KINDS:
        raise ProtocolError(f"bad side-connection frame kind {kind!r}")
    if length > limit:
        raise ProtocolError(f"side-connection frame {kind!r} of {length} bytes exceeds {limit}")


def recv_frame(sock: socket.socket, limit: int = MAX_FRAME) -> tuple[bytes, bytes]:
    kind, length = FRAME.unpack(recv_exact(sock, FRAME.size))
    check_header(kind, length, limit)
    return kind, recv_exact(sock, length)


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ProtocolError(f"HELLO field {what}: expected an integer in [{lo}, {hi}], got {v!r:.40}")
    return v


def parse_hello(payload: bytes, n_qps: int) -> dict[str, Any]:
    """The initiator's HELLO, checked field by field (raises ProtocolError naming the field)."""
    if len(payload) > MAX_HELLO:
        raise ProtocolError(f"HELLO of {len(payload)} bytes exceeds {MAX_HELLO}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("HELLO is not UTF-8") from None
    if json_depth_exceeds(text, MAX_DEPTH):  # the same scan as the stream HELLO's
        raise ProtocolError(f"HELLO nests deeper than {MAX_DEPTH} levels")
    try:
        hello = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"HELLO is not JSON: {exc}") from None
    if not isinstance(hello, dict):
        raise ProtocolError("HELLO is not a JSON object")
    if not isinstance(hello.get("token"), str):
        raise ProtocolError("HELLO has no token")
    for key in ("qpns", "psns"):
        v = hello.get(key)
        if not isinstance(v, list) or len(v) != n_qps:
            raise ProtocolError(f"HELLO field {key}: expected a list of {n_qps} integers (option qps)")
        hello[key] = [_int(x, key, 0 if key == "psns" else 1, (1 << 24) - 1) for x in v]
    try:
        gid = ipaddress.IPv6Address(str(hello.get("gid")))
    except ValueError:
        raise ProtocolError(f"HELLO field gid: not a GID: {hello.get('gid')!r:.60}") from None
    hello["gid"] = gid.exploded
    hello["lid"] = _int(hello.get("lid", 0), "lid", 0, 0xFFFF)
    mtu = hello.get("active_mtu")
    if mtu is not None and mtu not in _MTUS:
        raise ProtocolError(f"HELLO field active_mtu: expected one of {_MTUS}, got {mtu!r:.20}")
    return hello


def token_ok(hello: dict[str, Any], token: str) -> bool:
    return hmac.compare_digest(hello["token"].encode(), token.encode())


@dataclass
class _Pending:
    sock: socket.socket
    peer: str
    since: float
    buf: bytearray = field(default_factory=bytearray)


class Acceptor:
    """Accept connections until one presents the token (see the module docstring)."""

    def __init__(self, lsock: socket.socket, token: str, n_qps: int, stop: threading.Event,
                 hello_timeout_s: float = HELLO_TIMEOUT_S) -> None:
        self.lsock, self.token, self.n_qps, self.stop = lsock, token, n_qps, stop
        self.hello_timeout_s = hello_timeout_s
        self.refused = 0
        self.refusals: list[str] = []

    def _refuse(self, p: _Pending, why: str, answer: bool = True) -> None:
        self.refused += 1
        if len(self.refusals) < MAX_REFUSALS_KEPT:
            self.refusals.append(f"{p.peer}: {why}")
        if answer:
            try:
                p.sock.setblocking(True)
                p.sock.settimeout(0.5)
                send_frame(p.sock, b"J", json.dumps({"error": why}).encode())
            except OSError:
                pass
        p.sock.close()

    def summary(self) -> str:
        if not self.refused:
            return "no connection at all"
        more = f" (and {self.refused - len(self.refusals)} more)" if self.refused > len(self.refusals) else ""
        return f"{self.refused} refused: " + "; ".join(self.refusals) + more

    def accept(self, deadline: float) -> tuple[socket.socket, dict[str, Any]] | None:
        """The token holder's connection (blocking again) and its HELLO; None when stopped.
        Raises ProtocolError at the deadline, naming the refused connections."""
        sel = selectors.DefaultSelector()
        self.lsock.setblocking(False)
        sel.register(self.lsock, selectors.EVENT_READ, None)
        pending: dict[int, _Pending] = {}
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now > deadline:
                    raise ProtocolError("no initiator with the run's token connected to the rdma side "
                                        f"connection in time; {self.summary()}")
                for fd, p in list(pending.items()):
                    if now - p.since > self.hello_timeout_s:
                        sel.unregister(p.sock)
                        del pending[fd]
                        self._refuse(p, f"no HELLO within {self.hello_timeout_s:.0f} s", answer=False)
                for key, _ in sel.select(min(0.2, max(deadline - now, 0.0))):
                    if key.data is None:
                        won = self._accept_new(sel, pending)
                    else:
                        won = self._read(sel, pending, key.data)
                    if won is not None:
                        return won
            return None
        finally:
            for p in pending.values():
                p.sock.close()
            sel.close()

    def _accept_new(self, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        try:
            conn, addr = self.lsock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        p = _Pending(conn, f"{addr[0]}:{addr[1]}", time.monotonic())
        if len(pending) >= MAX_PENDING:  # the oldest silent connection makes room
            oldest = min(pending.values(), key=lambda q: q.since)
            sel.unregister(oldest.sock)
            del pending[oldest.sock.fileno()]
            self._refuse(oldest, f"more than {MAX_PENDING} connections waiting to say hello", answer=False)
        pending[conn.fileno()] = p
        sel.register(conn, selectors.EVENT_READ, p)
        return None

    def _read(self, sel: selectors.BaseSelector, pending: dict[int, _Pending],
              p: _Pending) -> tuple[socket.socket, dict[str, Any]] | None:
        def drop(why: str, answer: bool = True) -> None:
            sel.unregister(p.sock)
            del pending[p.sock.fileno()]
            self._refuse(p, why, answer)

        try:
            data = p.sock.recv(MAX_HELLO + FRAME.size - len(p.buf))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            drop(f"connection error before HELLO: {exc}", answer=False)
            return None
        if not data:
            drop("closed before HELLO", answer=False)
            return None
        p.buf += data
        if len(p.buf) < FRAME.size:
            return None
        kind, length = FRAME.unpack_from(p.buf)
        try:
            if kind != b"J":
                raise ProtocolError(f"first frame is {kind!r}, not a JSON HELLO")
            check_header(kind, length, MAX_HELLO)
        except ProtocolError as exc:
            drop(str(exc))
            return None
        if len(p.buf) < FRAME.size + length:
            return None
        try:
            hello = parse_hello(bytes(p.buf[FRAME.size:FRAME.size + length]), self.n_qps)
            if not token_ok(hello, self.token):
                raise ProtocolError("bad token")
        except ProtocolError as exc:
            drop(str(exc))
            return None
        sel.unregister(p.sock)
        del pending[p.sock.fileno()]
        p.sock.setblocking(True)
        return p.sock, hello
