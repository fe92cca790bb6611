"""The sans-I/O frame format: round trips and every way a frame can be wrong."""
from __future__ import annotations

import re
import struct

import pytest

from pytest_kvfabric.errors import ProtocolError
from pytest_kvfabric.transports import framing, wire
from pytest_kvfabric.transports.framing import (
    ACK, BYE, ERROR, HEADER_SIZE, HELLO, MAX_CONTROL_PAYLOAD, NOTIFY, WRITE, ControlReader,
    Header,
)


def raw(magic=b"KV", version=1, type_=WRITE, nbytes=0, dst_off=0, seq=0, imm=0) -> bytes:
    return struct.pack("<2sBBIQQQ", magic, version, type_, nbytes, dst_off, seq, imm)


def test_header_is_32_bytes():
    assert HEADER_SIZE == 32
    assert len(framing.encode_ack(1)) == 32


@pytest.mark.parametrize(
    "h",
    [
        Header(WRITE, 4096, dst_off=12345, seq=7, imm=3),
        Header(WRITE, 0, dst_off=0, seq=1, imm=0),
        Header(WRITE, framing.MAX_WRITE, dst_off=2**64 - 1, seq=2**64 - 1, imm=2**64 - 1),
        Header(ACK, 0, seq=99),
        Header(BYE, 0),
        Header(NOTIFY, 0, seq=5, imm=9),
        Header(HELLO, 10),
        Header(ERROR, MAX_CONTROL_PAYLOAD),
    ],
)
def test_encode_decode_round_trip(h: Header):
    assert framing.decode_header(framing.encode(h)) == h


def test_encode_write_notify():
    h = framing.decode_header(framing.encode_write(64, 100, seq=3, notify_request=0))
    assert (h.type, h.dst_off, h.nbytes, h.seq, h.imm, h.notify_request) == (WRITE, 64, 100, 3, 1, 0)
    h = framing.decode_header(framing.encode_write(64, 100, seq=3, notify_request=-1))
    assert h.imm == 0 and h.notify_request is None
    h = framing.decode_header(framing.encode_write(0, 1, seq=1))
    assert h.notify_request is None


def test_encode_write_rejects_oversized_length():
    with pytest.raises(ValueError, match="outside"):
        framing.encode_write(0, framing.MAX_WRITE + 1, seq=1)
    with pytest.raises(ValueError):
        framing.encode_write(0, -1, seq=1)


def test_hello_and_error_round_trip():
    frame = framing.encode_hello({"token": "t", "index": 2})
    h = framing.decode_header(frame[:HEADER_SIZE])
    assert h.type == HELLO and h.nbytes == len(frame) - HEADER_SIZE
    assert framing.decode_hello(frame[HEADER_SIZE:]) == {"token": "t", "index": 2}
    frame = framing.encode_error("write outside region ü")
    h = framing.decode_header(frame[:HEADER_SIZE])
    assert h.type == ERROR and frame[HEADER_SIZE:].decode() == "write outside region ü"


def test_encode_control_too_large():
    with pytest.raises(ValueError, match="control payload"):
        framing.encode_hello({"x": "y" * MAX_CONTROL_PAYLOAD})
    # an error reason is truncated, not refused: the peer must learn something
    assert len(framing.encode_error("e" * (MAX_CONTROL_PAYLOAD + 10))) == HEADER_SIZE + MAX_CONTROL_PAYLOAD


@pytest.mark.parametrize(
    "buf, match",
    [
        (raw(magic=b"XV"), "bad frame magic"),
        (raw(magic=b"\x00\x00"), "bad frame magic"),
        (raw(version=2), "unsupported frame version 2"),
        (raw(version=0), "unsupported frame version 0"),
        (raw(type_=0), "unknown frame type 0"),
        (raw(type_=11), "unknown frame type 11"),
        (raw(type_=framing.CHALLENGE, nbytes=31), "CHALLENGE of 31 bytes"),
        (raw(type_=255), "unknown frame type 255"),
        (raw()[:31], "truncated frame header: 31 of 32"),
        (b"", "truncated frame header: 0 of 32"),
        (raw() + b"x", "truncated frame header: 33 of 32"),
        (raw(type_=HELLO, nbytes=MAX_CONTROL_PAYLOAD + 1), "HELLO payload of 65537 bytes exceeds"),
        (raw(type_=ERROR, nbytes=2**32 - 1), "ERROR payload"),
        (raw(type_=ACK, nbytes=1), "ACK frame with non-empty payload"),
        (raw(type_=BYE, nbytes=8), "BYE frame with non-empty payload"),
        (raw(type_=NOTIFY, nbytes=4), "NOTIFY frame with non-empty payload"),
    ],
)
def test_decode_header_malformed(buf: bytes, match: str):
    with pytest.raises(ProtocolError, match=match):
        framing.decode_header(buf)


def test_check_write_accepts_exact_fit():
    wire.check_write(framing.decode_header(raw(nbytes=10, dst_off=90, seq=4)), 100, 4)
    wire.check_write(framing.decode_header(raw(nbytes=0, dst_off=100, seq=1)), 100, 1)


@pytest.mark.parametrize(
    "hdr, region_len, expected_seq, match",
    [
        (raw(nbytes=11, dst_off=90, seq=1), 100, 1, r"write \[90, 101\) outside registered region of 100"),
        (raw(nbytes=1, dst_off=2**64 - 1, seq=1), 100, 1, "outside registered region"),
        (raw(nbytes=0, dst_off=101, seq=1), 100, 1, "outside registered region"),
        (raw(nbytes=1, seq=3), 100, 2, "out of sequence: seq 3, expected 2"),
        (raw(nbytes=1, seq=1), 100, 2, "out of sequence: seq 1, expected 2"),
        (raw(type_=ACK), 100, 1, "expected WRITE, got ACK"),
    ],
)
def test_check_write_rejects(hdr, region_len, expected_seq, match):
    with pytest.raises(ProtocolError, match=match):
        wire.check_write(framing.decode_header(hdr), region_len, expected_seq)


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"not json", b"[1, 2]", b"3"])
def test_decode_hello_malformed(payload: bytes):
    with pytest.raises(ProtocolError, match="HELLO payload"):
        framing.decode_hello(payload)


STREAM = (
    framing.encode_ack(1)
    + framing.encode_error("boom")
    + framing.encode_ack(5)
    + framing.encode_bye()
    + framing.encode_hello({"a": 1})
    + framing.encode_ack(2**64 - 1)
)
EXPECTED = [(ACK, 1, b""), (ERROR, 0, b"boom"), (ACK, 5, b""), (BYE, 0, b""),
            (HELLO, 0, b'{"a": 1}'), (ACK, 2**64 - 1, b"")]


def _feed_all(reader: ControlReader, chunks) -> list:
    out = []
    for chunk in chunks:
        out += [(h.type, h.seq, p) for h, p in reader.feed(chunk)]
    return out


def test_control_reader_whole_stream():
    r = ControlReader()
    assert _feed_all(r, [STREAM]) == EXPECTED
    assert r.pending == 0


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_control_reader_split_at_every_byte(cut: int):
    r = ControlReader()
    assert _feed_all(r, [STREAM[:cut], STREAM[cut:]]) == EXPECTED
    assert r.pending == 0


def test_control_reader_byte_by_byte():
    r = ControlReader()
    assert _feed_all(r, [STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED
    assert r.pending == 0


def test_control_reader_keeps_partial_frame():
    r = ControlReader()
    assert list(r.feed(framing.encode_ack(3)[:20])) == []
    assert r.pending == 20


@pytest.mark.parametrize(
    "bad, match",
    [
        (raw(type_=WRITE, nbytes=4), "unexpected WRITE frame"),
        (raw(magic=b"XX", type_=ACK), "bad frame magic"),
        (raw(type_=ACK, nbytes=3), "non-empty payload"),
        (raw(type_=11), "unknown frame type 11"),
    ],
)
def test_control_reader_malformed_after_good_frames(bad: bytes, match: str):
    r = ControlReader()
    seen = []
    with pytest.raises(ProtocolError, match=match):
        for h, _p in r.feed(framing.encode_ack(1) + bad):
            seen.append(h.seq)
    assert seen == [1]  # the good frame before the bad one was delivered


# --- WRITEV: several writes in one frame -------------------------------------------------------

def _wv(entries, seq=1, total=None, count=None, imm=0):
    """Header + table by hand (entries: (dst_off, nbytes, reserved, imm))."""
    tab = b"".join(framing.WRITEV_ENTRY.pack(*e) for e in entries)
    total = sum(e[1] for e in entries) if total is None else total
    count = len(entries) if count is None else count
    return raw(type_=framing.WRITEV, nbytes=total, dst_off=count, seq=seq, imm=imm), tab


def test_writev_round_trip():
    frame = framing.encode_writev(7, [0, 100, 300], [100, 0, 50], [0, 5, 0])
    assert len(frame) == HEADER_SIZE + 3 * framing.WRITEV_ENTRY_SIZE
    h = framing.decode_header(frame[:HEADER_SIZE])
    assert (h.type, h.nbytes, h.dst_off, h.seq, h.imm) == (framing.WRITEV, 150, 3, 7, 0)
    ds, ns, ims = wire.decode_writev_table(h, frame[HEADER_SIZE:], region_len=350, expected_seq=7)
    assert (ds, ns, ims) == ([0, 100, 300], [100, 0, 50], [0, 5, 0])


def test_writev_entry_is_24_bytes_and_bounded_by_iov_max():
    assert framing.WRITEV_ENTRY_SIZE == 24
    assert framing.MAX_WRITEV_ENTRIES == 1024
    n = framing.MAX_WRITEV_ENTRIES
    frame = framing.encode_writev(1, list(range(0, 2 * n, 2)), [2] * n, [0] * n)
    h = framing.decode_header(frame[:HEADER_SIZE])
    assert h.dst_off == n
    assert len(wire.decode_writev_table(h, frame[HEADER_SIZE:], 2 * n, 1)[0]) == n


@pytest.mark.parametrize(
    "args, match",
    [
        (([], [], []), "1..1024"),
        (([0] * 1025, [1] * 1025, [0] * 1025), "1..1024"),
        (([0, 1], [1], [0, 0]), "equal-length"),
        (([0], [framing.MAX_WRITE + 1], [0]), "outside"),
        (([0, 2**33], [framing.MAX_WRITE, framing.MAX_WRITE], [0, 0]), "payload of"),
    ],
)
def test_encode_writev_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        framing.encode_writev(1, *args)


@pytest.mark.parametrize(
    "hdr, match",
    [
        (raw(type_=framing.WRITEV, nbytes=0, dst_off=0, seq=1), "WRITEV with 0 entries"),
        (raw(type_=framing.WRITEV, nbytes=0, dst_off=1025, seq=1), "WRITEV with 1025 entries"),
        (raw(type_=framing.WRITEV, nbytes=8, dst_off=1, seq=1, imm=3), "non-zero imm 3"),
    ],
    ids=["no-entries", "too-many-entries", "header-imm"],
)
def test_writev_bad_header(hdr, match):
    with pytest.raises(ProtocolError, match=match):
        framing.decode_header(hdr)


@pytest.mark.parametrize(
    "entries, kw, table_cut, match",
    [
        ([(0, 10, 0, 0), (10, 10, 0, 0)], {}, 24, "truncated WRITEV table: 24 of 48 bytes"),
        ([(0, 10, 0, 0)], {"count": 2}, None, "truncated WRITEV table: 24 of 48 bytes"),
        ([(0, 10, 0, 0), (4090, 10, 0, 0)], {}, None,
         "write [4090, 4100) outside registered region of 4096 bytes (seq 2, WRITEV entry 1)"),
        ([(2**64 - 4, 8, 0, 0)], {}, None, "outside registered region"),
        ([(0, 10, 0, 0), (20, 10, 0, 0)], {"total": 21}, None,
         "WRITEV entries total 20 bytes but the header says 21"),
        ([(0, 10, 0, 0), (20, 10, 0, 0), (5, 10, 0, 0)], {}, None, "WRITEV entries 0 and 2 overlap at 5"),
        ([(100, 10, 0, 0), (100, 10, 0, 0)], {}, None, "overlap at 100"),
        ([(0, 10, 7, 0)], {}, None, "reserved field is 7"),
        ([(0, 10, 0, 0)], {"seq": 3}, None, "write out of sequence: seq 3, expected 1"),
    ],
    ids=["table-truncated", "count-larger-than-table", "entry-out-of-region", "offset-overflow",
         "total-mismatch", "overlap", "same-offset", "reserved", "sequence"],
)
def test_writev_table_faults(entries, kw, table_cut, match):
    hdr, tab = _wv(entries, **kw)
    if table_cut is not None:
        tab = tab[:table_cut]
    h = framing.decode_header(hdr)
    with pytest.raises(ProtocolError, match=re.escape(match)):
        wire.decode_writev_table(h, tab, region_len=4096, expected_seq=1)


def test_writev_empty_and_adjacent_entries_are_not_overlap():
    hdr, tab = _wv([(0, 10, 0, 0), (10, 0, 0, 0), (10, 5, 0, 2), (5, 0, 0, 0)])
    ds, ns, ims = wire.decode_writev_table(framing.decode_header(hdr), tab, 15, 1)
    assert ns == [10, 0, 5, 0] and ims == [0, 0, 2, 0]


def test_writev_table_rejects_other_types():
    with pytest.raises(ProtocolError, match="expected WRITEV, got WRITE"):
        wire.decode_writev_table(framing.decode_header(raw(nbytes=1)), b"", 10, 0)


def test_control_reader_rejects_writev():
    frame = framing.encode_writev(1, [0], [4], [0])
    with pytest.raises(ProtocolError, match="unexpected WRITEV frame on a control stream"):
        list(ControlReader().feed(frame))
