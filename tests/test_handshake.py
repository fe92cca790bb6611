"""The stream transports' handshake (sans-I/O): challenge, proven HELLO, strangers' admission.

Generated inputs (Hypothesis): whatever bytes a stranger sends, in whatever pieces, the
target's handshake never raises, never reads past a HELLO, and never accepts a HELLO that
does not prove the run token.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_kvfabric.errors import ProtocolError
from pytest_kvfabric.transports import framing, handshake
from pytest_kvfabric.transports.devmem import rx

TOKEN = "run-token"
NONCE = bytes(range(framing.NONCE_BYTES))
HELLO = handshake.encode_hello(TOKEN, NONCE, "ini-1", 2, 4)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _target() -> handshake.TargetHandshake:
    return handshake.TargetHandshake(TOKEN, NONCE)


def _feed_in_pieces(hs: handshake.TargetHandshake, data: bytes, cuts: list[int]) -> int:
    """Feed data cut at `cuts`, as a transport would (each piece at most want() bytes)."""
    used = 0
    for piece in _pieces(data, cuts):
        while piece and not hs.done:
            n = hs.feed(piece[: max(hs.want(), 1)])
            assert 0 <= n <= len(piece)
            used += n
            piece = piece[n:]
        if hs.done:
            break
    return used


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# ---- the proven HELLO ----------------------------------------------------------------------


@SETTINGS
@given(cuts=st.lists(st.integers(0, 10_000), max_size=20), tail=st.binary(max_size=100))
def test_a_proven_hello_is_accepted_in_any_pieces_and_nothing_after_it_is_read(cuts, tail):
    hs = _target()
    used = _feed_in_pieces(hs, HELLO + tail, cuts)
    assert hs.hello is not None and not hs.kind
    assert (hs.hello.initiator, hs.hello.index, hs.hello.connections) == ("ini-1", 2, 4)
    assert used == len(HELLO)  # the bytes after the HELLO belong to the data stream
    assert hs.want() == 0 and hs.feed(b"more") == 0


def test_the_token_never_crosses_the_wire():
    assert TOKEN.encode() not in HELLO
    params = framing.decode_hello(HELLO[framing.HEADER_SIZE:])
    assert set(params) == {"initiator", "index", "connections", "proof"}


@pytest.mark.parametrize("token", ["wrong", "", TOKEN + "x", TOKEN.upper()])
def test_a_wrong_token_is_a_wrong_proof(token):
    hs = _target()
    hs.feed(handshake.encode_hello(token, NONCE, "ini-1", 2, 4))
    assert hs.kind == handshake.BAD_PROOF and hs.hello is None


def test_a_hello_recorded_on_another_connection_does_not_prove_anything():
    other = handshake.TargetHandshake(TOKEN)  # a fresh nonce
    assert other.nonce != NONCE
    other.feed(HELLO)
    assert other.kind == handshake.BAD_PROOF


@SETTINGS
@given(index=st.integers(0, 5000), nconn=st.integers(0, 5000), ident=st.text(min_size=1, max_size=20))
def test_fields_are_under_the_mac(index, nconn, ident):
    """Changing any field of a proven HELLO (with its proof kept) breaks the proof."""
    fields = {"initiator": "ini-1", "index": 2, "connections": 4}
    good = handshake.proof(TOKEN, NONCE, fields)
    forged = {"initiator": ident, "index": index, "connections": nconn}
    hs = _target()
    hs.feed(framing.encode_hello({**forged, "proof": good}))
    if forged == fields:
        assert hs.hello is not None
    else:
        assert hs.kind == handshake.BAD_PROOF


@SETTINGS
@given(pos=st.integers(0, len(HELLO) - 1), byte=st.integers(0, 255))
def test_a_changed_byte_is_refused_or_changes_nothing(pos, byte):
    data = bytearray(HELLO)
    data[pos] = byte
    hs = _target()
    hs.feed(bytes(data))
    if hs.hello is not None:  # e.g. one JSON space for another: the same fields, still proven
        assert (hs.hello.initiator, hs.hello.index, hs.hello.connections) == ("ini-1", 2, 4)
    elif not hs.done:
        # a length byte grown (still within the HELLO bound): the frame is incomplete, so the
        # target waits for the rest; the HELLO deadline (Admission) drops such a stranger
        assert hs.want() > 0 and not hs.kind
    else:
        assert hs.kind in handshake.REASONS and hs.reason


# ---- strangers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, kind, match",
    [
        (b"", handshake.CLOSED, "before completing HELLO"),
        (bytes(range(64)), handshake.BAD_FRAME, "bad frame magic"),
        (framing.encode_write(0, 4, 1) + b"abcd", handshake.BAD_FRAME, "expected HELLO, got WRITE"),
        (framing.encode_bye(), handshake.BAD_FRAME, "expected HELLO, got BYE"),
        (framing.HEADER.pack(b"KV", 1, framing.HELLO, 60_000, 0, 0, 0) + b"[" * 60_000,
         handshake.BAD_HELLO, "HELLO payload of 60000 bytes"),
        (framing.HEADER.pack(b"KV", 1, framing.HELLO, 1000, 0, 0, 0) + b"[" * 1000,
         handshake.BAD_HELLO, "nests deeper than 4"),
        (framing.HEADER.pack(b"KV", 1, framing.HELLO, 0, 0, 0, 0), handshake.BAD_HELLO, "0 bytes"),
        (framing.encode_hello({"token": TOKEN, "initiator": "x", "index": 0, "connections": 1}),
         handshake.BAD_HELLO, "without a proof"),
        (framing.encode_hello({"initiator": "x", "index": True, "connections": 1, "proof": "0"}),
         handshake.BAD_HELLO, "not integers"),
        (framing.encode_hello({"initiator": "x" * 200, "index": 0, "connections": 1, "proof": "0"}),
         handshake.BAD_HELLO, "initiator must be a string"),
        (framing.encode_hello({"initiator": "x", "index": 0, "connections": 1, "proof": "0", "more": 1}),
         handshake.BAD_HELLO, "unknown fields"),
        (framing.HEADER.pack(b"KV", 1, framing.HELLO, 2, 0, 0, 0) + b"\xff\xfe", handshake.BAD_HELLO, "not JSON"),
        (HELLO[:-1], handshake.CLOSED, "before completing HELLO"),
    ],
    ids=["connect-close", "random-64", "write-first", "bye-first", "nested-60k", "nested-1k",
         "empty-hello", "token-in-clear", "bool-index", "long-ident", "extra-field", "bad-utf8",
         "cut-short"],
)
def test_strangers_are_refused_with_a_reason_and_never_raise(data, kind, match):
    hs = _target()
    _feed_in_pieces(hs, data, [])
    hs.closed()  # whatever the stranger did, it then went away (a no-op once refused)
    assert hs.kind == kind and match in hs.reason and hs.hello is None


def test_nested_json_is_refused_before_the_parser_runs():
    with pytest.raises(ProtocolError, match="exceeds 1024"):
        framing.decode_hello(b"[" * 60_000)
    with pytest.raises(ProtocolError, match="nests deeper than 4"):
        framing.decode_hello(b"[" * 1000)
    assert framing.decode_hello(b'{"a": "[[[[[[[[[[[[", "b": [[1]]}') == {"a": "[[[[[[[[[[[[", "b": [[1]]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\', max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='ab[]{}"\\', max_size=3), inner, max_size=3),
    max_leaves=20,
)


def _depth(v) -> int:
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


@SETTINGS
@given(value=json_values, limit=st.integers(0, 6))
def test_json_depth_scan_agrees_with_the_parser(value, limit):
    text = json.dumps(value)
    assert framing.json_depth_exceeds(text, limit) == (_depth(value) > limit)


@SETTINGS
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_any_bytes_end_in_a_verdict_never_an_exception(data, cuts):
    hs = _target()
    used = _feed_in_pieces(hs, data, cuts)
    assert used <= len(data)
    hs.closed()
    assert hs.done and hs.hello is None  # no generated stream proves the token
    assert hs.kind in handshake.REASONS and hs.reason


@SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=1100),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["initiator", "index", "connections", "proof", "token"]),
                        json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    )
)
def test_any_hello_body_ends_in_a_verdict(body):
    hs = _target()
    hs.feed(framing.HEADER.pack(b"KV", 1, framing.HELLO, len(body), 0, 0, 0) + body)
    hs.closed()
    assert hs.hello is None and hs.kind in handshake.REASONS


# ---- the initiator's side ------------------------------------------------------------------


@SETTINGS
@given(cuts=st.lists(st.integers(0, 100), max_size=8))
def test_initiator_answers_a_challenge_in_any_pieces(cuts):
    ini = handshake.InitiatorHandshake(TOKEN, "ini-1", 2, 4)
    for piece in _pieces(handshake.encode_challenge(NONCE), cuts):
        while piece:
            n = ini.feed(piece)
            piece = piece[n:]
            assert n or ini.want() == 0
    assert ini.hello_bytes == HELLO and not ini.error
    tgt = _target()
    tgt.feed(ini.hello_bytes)
    assert tgt.hello is not None


def test_initiator_reports_a_refusal_and_junk():
    ini = handshake.InitiatorHandshake(TOKEN, "i", 0, 1)
    ini.feed(framing.encode_error("too many connections"))
    assert ini.error == "rejected us: too many connections" and ini.hello_bytes is None
    ini = handshake.InitiatorHandshake(TOKEN, "i", 0, 1)
    ini.feed(framing.encode_ack(3))
    assert "sent ACK instead of a CHALLENGE" in ini.error
    ini = handshake.InitiatorHandshake(TOKEN, "i", 0, 1)
    ini.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n....")
    assert "not a CHALLENGE" in ini.error


@SETTINGS
@given(data=st.binary(max_size=300))
def test_initiator_never_raises_on_any_reply(data):
    ini = handshake.InitiatorHandshake(TOKEN, "i", 0, 1)
    used = 0
    while used < len(data) and ini.want():
        used += ini.feed(data[used:])
    assert ini.want() == 0 or used == len(data)


# ---- admission: the cap and the deadline ---------------------------------------------------


def test_two_thousand_half_open_connections_hold_at_most_the_cap():
    gate = handshake.Admission(max_pending=64, timeout_s=5000, grace_s=1000)  # in ms: exact
    dropped = []
    for fd in range(2000):  # one arrival per ms: 2 s of flood
        dropped += gate.arrive(fd, now=fd)
        assert gate.pending <= 64
    # places fill (0-63); newcomers are refused while the oldest is younger than 1 s (64-999);
    # then 1000-1063 each evict one of the first 64 (each exactly 1 s old), and the rest are
    # refused, the oldest pending (1000) being young again
    assert dropped == list(range(64, 1000)) + list(range(0, 64)) + list(range(1064, 2000))
    assert gate.counts[handshake.REFUSED] == 1872 and gate.counts[handshake.EVICTED] == 64
    gate.admitted(1063)  # the real initiator proves itself
    rep = gate.report()
    assert rep["strangers_rejected"] == 1999
    assert rep["strangers"] == {"refused": 1872, "evicted": 64, "pending": 63}


def test_the_real_initiator_is_not_evicted_by_a_burst_before_its_hello():
    """The failure this policy removes: 64 quick connects between the initiator's CHALLENGE
    and its HELLO pushed it out (oldest first), under load, in CI."""
    gate = handshake.Admission(max_pending=64, timeout_s=5.0, grace_s=1.0)
    gate.arrive("initiator", now=0.0)
    dropped = []
    for k in range(500):
        dropped += gate.arrive(k, now=0.01 + k * 1e-4)
    assert "initiator" not in dropped and gate.is_pending("initiator")
    gate.admitted("initiator")
    assert gate.counts[handshake.EVICTED] == 0 and gate.counts[handshake.REFUSED] == 500 - 63


@SETTINGS
@given(gaps=st.lists(st.floats(0, 0.5, allow_nan=False), max_size=300),
       grace=st.floats(0.01, 2.0, allow_nan=False), cap=st.integers(1, 8))
def test_no_connection_younger_than_its_grace_is_evicted(gaps, grace, cap):
    gate = handshake.Admission(max_pending=cap, timeout_s=5.0, grace_s=grace)
    now, born = 0.0, {}
    for key, gap in enumerate(gaps):
        now += gap
        born[key] = now
        for k in gate.arrive(key, now):
            assert k == key or now - born[k] >= gate.grace_s
        assert gate.pending <= cap
    rep = gate.report()
    assert rep["strangers_rejected"] == len(gaps)  # nobody admitted: every one counted once


def test_deadline_drops_in_arrival_order_and_counts_each_stranger_once():
    gate = handshake.Admission(max_pending=8, timeout_s=1.0)
    for fd, t in ((10, 0.0), (11, 0.5), (12, 0.9)):
        gate.arrive(fd, t)
    assert gate.next_deadline == 1.0
    assert gate.expired(0.99) == []
    assert gate.expired(1.5) == [10, 11]
    assert gate.next_deadline == pytest.approx(1.9)
    gate.drop(12, handshake.BAD_FRAME)
    gate.drop(12, handshake.CLOSED)  # already gone: not counted twice
    gate.drop(10, handshake.CLOSED)
    assert gate.report() == {"strangers_rejected": 3, "strangers": {"bad_frame": 1, "hello_timeout": 2}}
    assert gate.next_deadline == float("inf")


@SETTINGS
@given(ops=st.lists(st.tuples(st.sampled_from(["arrive", "admit", "drop", "tick"]), st.integers(0, 30)),
                    max_size=200))
def test_admission_invariants(ops):
    gate = handshake.Admission(max_pending=5, timeout_s=2.0)
    now, arrived, admitted = 0.0, set(), set()
    for op, key in ops:
        if op == "arrive" and key not in arrived:
            arrived.add(key)
            gate.arrive(key, now)
        elif op == "admit" and gate.is_pending(key):
            admitted.add(key)
            gate.admitted(key)
        elif op == "drop":
            gate.drop(key, handshake.BAD_FRAME)
        elif op == "tick":
            now += key / 10
            gate.expired(now)
        assert gate.pending <= 5
        assert gate.next_deadline > now or gate.pending
    rep = gate.report()
    assert rep["strangers_rejected"] == len(arrived) - len(admitted)  # each counted exactly once


# ---- devmem's reassembly drives the same handshake -----------------------------------------


@SETTINGS
@given(stream=st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.tuples(st.integers(0, 5000), st.integers(0, 200), st.integers(0, 4)).map(
            lambda t: framing.encode_write(t[0], t[1], t[2]) + b"w" * t[1]),
        st.just(framing.encode_bye()),
    ), max_size=8).map(b"".join),
    proven=st.booleans(), cuts=st.lists(st.integers(0, 4000), max_size=6))
def test_devmem_reassembly_never_places_out_of_bounds(stream, proven, cuts):
    region = 4096
    asm = rx.StreamAssembler(region, _target())
    data = (HELLO if proven else b"") + stream
    try:
        for piece in _pieces(data, cuts):
            for ev in asm.feed(memoryview(piece), False):
                if isinstance(ev, rx.Place):
                    assert proven and 0 <= ev.dst_off and ev.dst_off + len(ev.data) <= region
                    if ev.first:  # the whole write was checked before its first byte
                        assert ev.dst_off + ev.write_nbytes <= region
    except ProtocolError:
        pass  # a clean refusal; anything else fails the test
