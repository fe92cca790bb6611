"""Sans-I/O wire format shared by the stream transports (tcp, zerocopy, iouring, devmem).

Pure functions over bytes: how frames are laid out and encoded, and whether one header is
well formed. What a connection accepts, in what order (sequence, bounds, WRITEV tables, BYE)
is `wire`'s. Sockets live in the transports. Every frame starts with a fixed
32-byte little-endian header:

    magic "KV" | version u8 | type u8 | nbytes u32 | dst_off u64 | seq u64 | imm u64

- HELLO  (initiator -> target): payload = nbytes of UTF-8 JSON (connection parameters).
- WRITE  (initiator -> target): payload = nbytes of KV data to place at dst_off; seq is the
  per-connection write sequence number (1, 2, 3, ...); imm = request id + 1 to announce that
  request once placed (like RDMA WRITE_WITH_IMM), 0 for none.
- ACK    (target -> initiator): cumulative: every WRITE with seq <= `seq` is placed.
- NOTIFY (target -> initiator): unused on the wire today; reserved.
- ERROR  (either way): payload = nbytes of UTF-8 reason; the sender closes after it.
- BYE    (initiator -> target): clean end of stream; nothing may follow it.
- CHALLENGE (target -> initiator): sent on accept, before anything else; payload = a fresh
  NONCE_BYTES nonce that the initiator's HELLO proves knowledge of the run token against
  (HMAC, see `handshake`): the token itself never crosses the data network.
- WRITEV (initiator -> target): several writes in one frame, so the target places them with
  one scatter receive. Header: nbytes = total payload bytes, dst_off = entry count N
  (1..MAX_WRITEV_ENTRIES), seq = sequence number of the first write (the entries carry
  seq, seq+1, ... and each counts as one write for ACKs), imm = 0. Then a table of N
  24-byte entries ``dst_off u64 | nbytes u32 | reserved u32 (0) | imm u64`` (imm per write,
  as in WRITE), then the N payloads back to back. Entries of one frame must not overlap:
  the target guards and validates all of them before it reads a payload byte.
  Sent only to targets whose descriptor says ``"writev": true``.
- READ (initiator -> target): a one-sided read request, no payload: nbytes = length,
  dst_off = offset in the target's region, seq = the next sequence number of the connection
  (reads and writes share it, so the target serves a connection's frames in order), imm = 0.
  Sent only to targets whose descriptor says ``"reads": true``.
- READ_DATA (target -> initiator): a piece of a READ's response: nbytes = payload bytes
  (<= MAX_READ_CHUNK; a longer read is split), dst_off = offset of the piece within the read,
  seq = the READ's seq, imm = 0; the payload follows. The pieces of a read come in order, then
  the cumulative ACK covering its seq. `wire_read` has the rules.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import ProtocolError

MAGIC = b"KV"
VERSION = 1
HEADER = struct.Struct("<2sBBIQQQ")
HEADER_SIZE = HEADER.size  # 32
MAX_CONTROL_PAYLOAD = 64 * 1024  # HELLO / ERROR payload bound: a peer cannot make us buffer more
MAX_WRITE = 0xFFFFFFFF

HELLO, WRITE, ACK, NOTIFY, ERROR, BYE, WRITEV, CHALLENGE, READ, READ_DATA = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
TYPE_NAMES = {
    HELLO: "HELLO", WRITE: "WRITE", ACK: "ACK", NOTIFY: "NOTIFY", ERROR: "ERROR", BYE: "BYE",
    WRITEV: "WRITEV", CHALLENGE: "CHALLENGE", READ: "READ", READ_DATA: "READ_DATA",
}
# One READ_DATA frame carries at most this much (as a WRITEV frame at the default
# writev_max_bytes): the target splits a longer read, so no frame is unbounded.
MAX_READ_CHUNK = 4 << 20
NONCE_BYTES = 32  # CHALLENGE payload: 256 random bits per connection
# A HELLO is a flat JSON object of four short fields (~150 bytes): these bounds refuse a
# stranger's oversized or deeply nested one before json.loads sees it (no RecursionError).
MAX_HELLO_PAYLOAD = 1024
MAX_JSON_DEPTH = 4
WRITEV_ENTRY = struct.Struct("<QIIQ")
WRITEV_ENTRY_SIZE = WRITEV_ENTRY.size  # 24
MAX_WRITEV_ENTRIES = 1024  # IOV_MAX: one recvmsg_into takes the whole frame's slices


@dataclass(frozen=True)
class Header:
    type: int
    nbytes: int
    dst_off: int = 0
    seq: int = 0
    imm: int = 0

    @property
    def notify_request(self) -> int | None:
        """Request id to announce, or None."""
        return self.imm - 1 if self.imm else None


def encode(h: Header) -> bytes:
    return HEADER.pack(MAGIC, VERSION, h.type, h.nbytes, h.dst_off, h.seq, h.imm)


def encode_write(dst_off: int, nbytes: int, seq: int, notify_request: int | None = None) -> bytes:
    if not 0 <= nbytes <= MAX_WRITE:
        raise ValueError(f"write length {nbytes} outside 0..{MAX_WRITE}")
    imm = 0 if notify_request is None or notify_request < 0 else notify_request + 1
    return HEADER.pack(MAGIC, VERSION, WRITE, nbytes, dst_off, seq, imm)


def encode_ack(seq: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, ACK, 0, 0, seq, 0)


def encode_bye() -> bytes:
    return HEADER.pack(MAGIC, VERSION, BYE, 0, 0, 0, 0)


def _control(type_: int, payload: bytes) -> bytes:
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"control payload {len(payload)} bytes > {MAX_CONTROL_PAYLOAD}")
    return HEADER.pack(MAGIC, VERSION, type_, len(payload), 0, 0, 0) + payload


def encode_hello(params: dict[str, Any]) -> bytes:
    return _control(HELLO, json.dumps(params, sort_keys=True).encode())


def encode_error(reason: str) -> bytes:
    return _control(ERROR, reason.encode("utf-8", "replace")[:MAX_CONTROL_PAYLOAD])


def decode_header(buf: bytes | bytearray | memoryview) -> Header:
    """Parse exactly one header; raise ProtocolError naming what is wrong."""
    if len(buf) != HEADER_SIZE:
        raise ProtocolError(f"truncated frame header: {len(buf)} of {HEADER_SIZE} bytes")
    magic, version, type_, nbytes, dst_off, seq, imm = HEADER.unpack(buf)
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise ProtocolError(f"unsupported frame version {version} (expected {VERSION})")
    if type_ not in TYPE_NAMES:
        raise ProtocolError(f"unknown frame type {type_}")
    if type_ in (HELLO, ERROR) and nbytes > MAX_CONTROL_PAYLOAD:
        raise ProtocolError(
            f"{TYPE_NAMES[type_]} payload of {nbytes} bytes exceeds {MAX_CONTROL_PAYLOAD}"
        )
    if type_ in (ACK, BYE, NOTIFY) and nbytes != 0:
        raise ProtocolError(f"{TYPE_NAMES[type_]} frame with non-empty payload ({nbytes} bytes)")
    if type_ == CHALLENGE and nbytes != NONCE_BYTES:
        raise ProtocolError(f"CHALLENGE of {nbytes} bytes (expected {NONCE_BYTES})")
    if type_ == WRITEV:
        if not 1 <= dst_off <= MAX_WRITEV_ENTRIES:
            raise ProtocolError(
                f"WRITEV with {dst_off} entries (expected 1..{MAX_WRITEV_ENTRIES})"
            )
        if imm != 0:
            raise ProtocolError(f"WRITEV header with non-zero imm {imm}")
    if type_ in (READ, READ_DATA) and imm != 0:
        raise ProtocolError(f"{TYPE_NAMES[type_]} header with non-zero imm {imm}")
    if type_ == READ_DATA and nbytes > MAX_READ_CHUNK:
        raise ProtocolError(f"READ_DATA frame of {nbytes} bytes exceeds {MAX_READ_CHUNK}")
    return Header(type_, nbytes, dst_off, seq, imm)


def encode_writev(
    first_seq: int, dst_offs: list[int], nbytes: list[int], imms: list[int]
) -> bytes:
    """WRITEV header + descriptor table (the payloads follow it on the wire, not in here).

    imms are wire values (request id + 1, 0 for none), one per entry.
    """
    n = len(dst_offs)
    if not 1 <= n <= MAX_WRITEV_ENTRIES or len(nbytes) != n or len(imms) != n:
        raise ValueError(f"WRITEV needs 1..{MAX_WRITEV_ENTRIES} entries of equal-length lists")
    total = 0
    parts = [b""]
    pack = WRITEV_ENTRY.pack
    for d, nb, imm in zip(dst_offs, nbytes, imms):
        if not 0 <= nb <= MAX_WRITE:
            raise ValueError(f"write length {nb} outside 0..{MAX_WRITE}")
        total += nb
        parts.append(pack(d, nb, 0, imm))
    if total > MAX_WRITE:
        raise ValueError(f"WRITEV payload of {total} bytes > {MAX_WRITE}")
    parts[0] = HEADER.pack(MAGIC, VERSION, WRITEV, total, n, first_seq, 0)
    return b"".join(parts)


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True if brackets outside strings nest deeper than `limit` (checked before json.loads,
    whose recursion a few thousand `[` would exhaust)."""
    depth = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > limit:
                return True
        elif ch == "]" or ch == "}":
            depth -= 1
    return False


def decode_hello(payload: bytes) -> dict[str, Any]:
    """Parse a HELLO payload, bounded in size and nesting before the JSON parser runs."""
    if len(payload) > MAX_HELLO_PAYLOAD:
        raise ProtocolError(f"HELLO payload of {len(payload)} bytes exceeds {MAX_HELLO_PAYLOAD}")
    try:
        text = payload.decode("utf-8")
        if json_depth_exceeds(text, MAX_JSON_DEPTH):
            raise ProtocolError(f"HELLO payload nests deeper than {MAX_JSON_DEPTH} levels")
        params = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"HELLO payload is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ProtocolError("HELLO payload is not a JSON object")
    return params


class ControlReader:
    """Incremental parser for header-only and control frames (ACK, ERROR, BYE...).

    feed() takes whatever bytes the socket gave and yields complete (Header, payload)
    pairs; a partial frame stays buffered. Used by initiators to read acks.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[tuple[Header, bytes]]:
        self._buf += data
        pos = 0
        buf = self._buf
        try:
            while len(buf) - pos >= HEADER_SIZE:
                # bytes, not a memoryview: a view alive in the traceback of a ProtocolError
                # would make the `del buf[:pos]` below raise BufferError and mask it.
                h = decode_header(bytes(buf[pos : pos + HEADER_SIZE]))
                payload_len = h.nbytes if h.type in (HELLO, ERROR, CHALLENGE) else 0
                if h.type in (WRITE, WRITEV, READ, READ_DATA):
                    raise ProtocolError(
                        f"unexpected {TYPE_NAMES[h.type]} frame on a control stream"
                    )
                end = pos + HEADER_SIZE + payload_len
                if len(buf) < end:
                    break
                payload = bytes(buf[pos + HEADER_SIZE : end])
                pos = end
                yield h, payload
        finally:
            del buf[:pos]

    @property
    def pending(self) -> int:
        return len(self._buf)
