"""Sans-I/O handshake of the stream transports (tcp, zerocopy, iouring, devmem): who may write.

Bytes in, a verdict out; sockets live in the transports, which all drive these objects, so
every rule for an unauthenticated peer ("a stranger") lives here once.

The exchange (frames of `framing`):

    target -> initiator   CHALLENGE  payload = NONCE_BYTES fresh random bytes (one per connection)
    initiator -> target   HELLO      {"initiator", "index", "connections", "proof"}

``proof = HMAC-SHA256(key=run token, msg=DOMAIN + nonce + canonical JSON of the other fields)``,
hex. The token never crosses the data network (on the hosts fabric, anyone on that network can
read it); a recorded HELLO is useless on another connection (fresh nonce), and its fields cannot
be altered (they are under the MAC). Used on every fabric: one code path, and a stranger on the
loopback cannot learn the token either.

A connection is a stranger until its HELLO proves the token. A stranger never fails a run: the
target drops it (with an ERROR frame where the socket still takes one) and counts why in
`Admission`, which also bounds what strangers can hold: at most MAX_PENDING unauthenticated
connections and HELLO_TIMEOUT_S from accept to a proven HELLO (a peer trickling one byte per
second is dropped at the deadline). When every place is taken, the oldest pending connection is
dropped to admit a newcomer only if it has had GRACE_S to prove itself; otherwise the newcomer is
refused at the door with a BUSY error instead of a CHALLENGE, and a real initiator retries within
its connect timeout (`TargetBusy`). Evicting the oldest unconditionally let 64 quick connects
push out the run's own initiator between its CHALLENGE and its HELLO (seen under load).
Once authenticated, a peer is the run's own initiator: what it does wrong fails the run, as before.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any, Hashable

from ..errors import ProtocolError
from . import framing

DOMAIN = b"kvfabric-hello-v1\n"  # domain separation: this MAC proves a HELLO and nothing else
HELLO_TIMEOUT_S = 5.0  # accept -> proven HELLO; a real initiator needs one round trip
MAX_PENDING = 64  # unauthenticated connections held at once (a real initiator connects in sequence)
GRACE_S = 1.0  # a pending connection this young is not evicted: one round trip under heavy load
BUSY = "busy: every place for an unauthenticated connection is taken; retry"  # ERROR text, no CHALLENGE
MAX_IDENT_CHARS = 128
MAX_CONNECTIONS = 4096

# Why a stranger was dropped (keys of the report's `strangers` breakdown).
CLOSED, BAD_FRAME, BAD_HELLO, BAD_PROOF, TIMEOUT, EVICTED, REFUSED = (
    "closed", "bad_frame", "bad_hello", "bad_proof", "hello_timeout", "evicted", "refused",
)
REASONS = (CLOSED, BAD_FRAME, BAD_HELLO, BAD_PROOF, TIMEOUT, EVICTED, REFUSED)

_HS = framing.HEADER_SIZE


def proof(token: str, nonce: bytes, fields: dict[str, Any]) -> str:
    """HMAC-SHA256 over the nonce and the HELLO's other fields, keyed by the run token."""
    msg = DOMAIN + nonce + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def encode_challenge(nonce: bytes) -> bytes:
    if len(nonce) != framing.NONCE_BYTES:
        raise ValueError(f"nonce of {len(nonce)} bytes (expected {framing.NONCE_BYTES})")
    return framing.HEADER.pack(framing.MAGIC, framing.VERSION, framing.CHALLENGE,
                               framing.NONCE_BYTES, 0, 0, 0) + nonce


def encode_hello(token: str, nonce: bytes, initiator: str, index: int, connections: int) -> bytes:
    """The initiator's answer to a CHALLENGE."""
    fields = {"initiator": initiator, "index": index, "connections": connections}
    return framing.encode_hello({**fields, "proof": proof(token, nonce, fields)})


class Hello:
    """A proven HELLO: the fields the target may now trust (ranges are the caller's to check)."""

    __slots__ = ("initiator", "index", "connections")

    def __init__(self, initiator: str, index: int, connections: int) -> None:
        self.initiator, self.index, self.connections = initiator, index, connections


class TargetHandshake:
    """One accepted connection until its HELLO is proven: feed() it what the socket gave.

    want() says how many bytes the current piece still needs, so a transport can read exactly
    that and never consume a byte past the HELLO. feed() never raises: it ends in `hello`
    (proven) or in `kind` + `reason` (a stranger, to drop).
    """

    __slots__ = ("nonce", "_token", "_hdr", "_body", "_need", "hello", "kind", "reason")

    def __init__(self, token: str, nonce: bytes | None = None) -> None:
        self.nonce = nonce if nonce is not None else secrets.token_bytes(framing.NONCE_BYTES)
        self._token = token
        self._hdr = bytearray()
        self._body: bytearray | None = None
        self._need = 0
        self.hello: Hello | None = None
        self.kind = ""
        self.reason = ""

    def challenge(self) -> bytes:
        return encode_challenge(self.nonce)

    @property
    def done(self) -> bool:
        return self.hello is not None or bool(self.kind)

    def want(self) -> int:
        if self.done:
            return 0
        if self._body is None:
            return _HS - len(self._hdr)
        return self._need - len(self._body)

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Consume at most want() bytes of `data`; return how many were consumed."""
        used = 0
        n = len(data)
        while used < n and not self.done:
            take = min(self.want(), n - used)
            if self._body is None:
                self._hdr += data[used : used + take]
                used += take
                if len(self._hdr) == _HS:
                    self._on_header()
            else:
                self._body += data[used : used + take]
                used += take
                if len(self._body) == self._need:
                    self._on_body()
        return used

    def closed(self) -> None:
        """The peer closed (or reset) the connection before a proven HELLO."""
        if not self.done:
            self._reject(CLOSED, f"closed after {len(self._hdr) + len(self._body or b'')} bytes, "
                                 "before completing HELLO")

    def _reject(self, kind: str, reason: str) -> None:
        self.kind, self.reason = kind, reason

    def _on_header(self) -> None:
        try:
            h = framing.decode_header(bytes(self._hdr))
        except ProtocolError as exc:
            return self._reject(BAD_FRAME, f"before HELLO: {exc}")
        if h.type != framing.HELLO:
            return self._reject(BAD_FRAME, f"expected HELLO, got {framing.TYPE_NAMES[h.type]}")
        if not 0 < h.nbytes <= framing.MAX_HELLO_PAYLOAD:
            return self._reject(BAD_HELLO, f"HELLO payload of {h.nbytes} bytes (expected 1.."
                                           f"{framing.MAX_HELLO_PAYLOAD})")
        self._need = h.nbytes
        self._body = bytearray()

    def _on_body(self) -> None:
        assert self._body is not None
        try:
            params = framing.decode_hello(bytes(self._body))
        except ProtocolError as exc:
            return self._reject(BAD_HELLO, str(exc))
        given = params.get("proof")
        ident, index, nconn = params.get("initiator"), params.get("index"), params.get("connections")
        if not isinstance(given, str):
            return self._reject(BAD_HELLO, "HELLO without a proof of the run token (an initiator "
                                           "of another kvfabric version?)")
        if not (isinstance(ident, str) and 0 < len(ident) <= MAX_IDENT_CHARS):
            return self._reject(BAD_HELLO, f"HELLO field initiator must be a string of 1.."
                                           f"{MAX_IDENT_CHARS} characters")
        if type(index) is not int or type(nconn) is not int:  # bool is an int: refused too
            return self._reject(BAD_HELLO, "HELLO fields index/connections are not integers")
        if set(params) != {"initiator", "index", "connections", "proof"}:
            extra = sorted(set(params) - {"initiator", "index", "connections", "proof"})
            return self._reject(BAD_HELLO, f"HELLO with unknown fields {extra}")
        want = proof(self._token, self.nonce, {"initiator": ident, "index": index, "connections": nconn})
        if not hmac.compare_digest(given.encode("utf-8", "replace"), want.encode()):
            return self._reject(BAD_PROOF, "HELLO with a wrong proof of the run token")
        self.hello = Hello(ident, index, nconn)


def check_hello_ranges(h: Hello) -> str | None:
    """What is wrong with a proven HELLO's index/connections, or None."""
    if not (1 <= h.connections <= MAX_CONNECTIONS and 0 <= h.index < h.connections):
        return f"HELLO index {h.index} / connections {h.connections} out of range"
    return None


class InitiatorHandshake:
    """The initiator's side: feed() the target's first frame until `hello_bytes` (what to send)
    or `error` (the target refused us, or sent something that is not a CHALLENGE)."""

    __slots__ = ("_token", "_fields", "_buf", "_need", "_type", "hello_bytes", "error", "busy")

    def __init__(self, token: str, initiator: str, index: int, connections: int) -> None:
        self._token = token
        self._fields = (initiator, index, connections)
        self._buf = bytearray()
        self._need = _HS
        self._type = 0
        self.hello_bytes: bytes | None = None
        self.error = ""
        self.busy = False  # refused at the door (every place taken): worth another try

    def want(self) -> int:
        """Bytes to read next (never past the first frame); 0 when done."""
        if self.hello_bytes is not None or self.error:
            return 0
        return self._need - len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Consume what the first frame still needs of `data`; return how many bytes."""
        used = 0
        while used < len(data) and self.want():
            used += self._step(data[used:])
        return used

    def _step(self, data: bytes | bytearray | memoryview) -> int:
        take = min(self.want(), len(data))
        self._buf += data[:take]
        if take and len(self._buf) == self._need:
            if not self._type:
                try:
                    h = framing.decode_header(bytes(self._buf))
                except ProtocolError as exc:
                    self.error = f"sent something that is not a CHALLENGE: {exc}"
                    return take
                if h.type not in (framing.CHALLENGE, framing.ERROR):
                    self.error = f"sent {framing.TYPE_NAMES[h.type]} instead of a CHALLENGE"
                    return take
                self._type = h.type
                self._need = h.nbytes  # decode_header bounded it (CHALLENGE: exactly the nonce)
                del self._buf[:]
                if self._need:
                    return take
            payload = bytes(self._buf)
            if self._type == framing.CHALLENGE:
                self.hello_bytes = encode_hello(self._token, payload, *self._fields)
            else:
                text = payload.decode("utf-8", "replace")
                self.busy = text == BUSY
                self.error = "rejected us: " + text
        return take


class Admission:
    """Unauthenticated connections of one target: the cap, the HELLO deadline, the counts.

    Keys are whatever the transport uses to find a connection (fd, connection id).
    """

    def __init__(self, max_pending: int = MAX_PENDING, timeout_s: float = HELLO_TIMEOUT_S,
                 grace_s: float = GRACE_S) -> None:
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.grace_s = min(grace_s, timeout_s / 2)  # never a grace that outlives the deadline
        # key -> arrival time, in arrival order (= deadline order: every deadline is arrival + timeout_s)
        self._pending: dict[Hashable, float] = {}
        self.counts = {r: 0 for r in REASONS}
        self.next_deadline = float("inf")  # earliest deadline: a float compare per loop pass

    def arrive(self, key: Hashable, now: float) -> list[Hashable]:
        """A connection was accepted; returns the keys to drop, already counted: pending ones
        evicted to make room (oldest first, each past its grace), or `key` itself, refused
        (send it BUSY, no CHALLENGE), when every pending one is still within its grace."""
        evicted = []
        while len(self._pending) >= self.max_pending:
            old = next(iter(self._pending))
            if now - self._pending[old] < self.grace_s:  # the oldest is still young
                self.counts[REFUSED] += 1
                return [*evicted, key]
            self.drop(old, EVICTED)
            evicted.append(old)
        self._pending[key] = now
        self._update()
        return evicted

    def expired(self, now: float) -> list[Hashable]:
        """Pending keys whose HELLO deadline passed, already counted (arrival order = deadline order)."""
        out = []
        for key, born in self._pending.items():
            if born + self.timeout_s > now:
                break
            out.append(key)
        for key in out:
            self.drop(key, TIMEOUT)
        return out

    def admitted(self, key: Hashable) -> None:
        self._pending.pop(key, None)
        self._update()

    def drop(self, key: Hashable, kind: str) -> None:
        """Count a stranger once (a key no longer pending is not counted again)."""
        if self._pending.pop(key, None) is not None:
            self.counts[kind] += 1
            self._update()

    def is_pending(self, key: Hashable) -> bool:
        return key in self._pending

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _update(self) -> None:
        self.next_deadline = next(iter(self._pending.values())) + self.timeout_s if self._pending else float("inf")

    def report(self) -> dict[str, Any]:
        """For data_path(): still-pending strangers are counted as rejected (the report is
        taken at the end of a run; they are closed with the target)."""
        why = {k: v for k, v in self.counts.items() if v}
        if self._pending:
            why["pending"] = len(self._pending)
        return {"strangers_rejected": sum(why.values()), "strangers": why}


def reject_frame(reason: str) -> bytes:
    """The ERROR frame a stranger gets (reason first: the peer learns why)."""
    return framing.encode_error(f"rejected: {reason}")
