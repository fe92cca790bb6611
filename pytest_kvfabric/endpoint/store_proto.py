"""The store's lookup protocol, sans I/O: bytes in, messages out (h11 style); sockets live in
store_server.py / store_client.py.

A message is a 4-byte little-endian length and that many bytes of UTF-8 JSON holding an object
with an "op" (requests) or "ok" (answers). Requests (keys are object ids of the StorePlan, which
both sides rebuild from the scenario, so no key crosses as text):

    {"op": "get", "keys": [int...]}     -> {"ok": true, "found": [[tier, offset] | null, ...]}
        hits are staged into DRAM and pinned; offset is where to READ them in the store's region
    {"op": "release", "keys": [int...]} -> {"ok": true}          unpin after the READs completed
    {"op": "put", "keys": [int...]}     -> {"ok": true, "offs": [int...]}   room to WRITE them
    {"op": "commit", "keys": [int...]}  -> {"ok": true, "errors": [str...]} verify what was written
    {"op": "bye"}                       -> {"ok": true}          the client is done
A refused request answers {"ok": false, "error": str}.
"""
from __future__ import annotations

import json
import struct
from typing import Any

from ..errors import ProtocolError

MAX_MESSAGE_BYTES = 1 << 20  # a get of 50,000 keys fits; anything larger is a broken peer
MAX_KEYS = 50_000
OPS = ("get", "release", "put", "commit", "bye")
_LEN = struct.Struct("<I")


def encode(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"store message of {len(body)} B exceeds {MAX_MESSAGE_BYTES} B")
    return _LEN.pack(len(body)) + body


def check_request(msg: Any) -> str | None:
    """Why a decoded request is not acceptable, or None."""
    if not isinstance(msg, dict) or msg.get("op") not in OPS:
        return f"not a store request (op must be one of {', '.join(OPS)})"
    if msg["op"] == "bye":
        return None
    keys = msg.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS:
        return f"{msg['op']}: keys must be a list of at most {MAX_KEYS} object ids"
    if not all(type(k) is int and k >= 0 for k in keys):
        return f"{msg['op']}: every key must be a non-negative integer object id"
    return None


class Decoder:
    """Feed bytes, take whole messages; a malformed or oversized frame raises ProtocolError."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out = []
        while len(self._buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(self._buf)
            if n > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"store message announces {n} B (limit {MAX_MESSAGE_BYTES} B)")
            if len(self._buf) < _LEN.size + n:
                break
            body = bytes(self._buf[_LEN.size:_LEN.size + n])
            del self._buf[:_LEN.size + n]
            try:
                out.append(json.loads(body))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ProtocolError(f"store message is not JSON: {exc}") from None
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
