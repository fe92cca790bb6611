"""The sans-I/O stream protocol (transports/wire.py): an initiator's frames against a target
wire object and the target's ACKs against an initiator wire object, no sockets."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_kvfabric.transports import framing, handshake, wire

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REGION = 4096
NONCE = bytes(range(framing.NONCE_BYTES))
TOKEN = "t"
HELLO = handshake.encode_hello(TOKEN, NONCE, "ini", 0, 1)

# A write: (dst_off, payload length, notify request or -1)
writes_st = st.lists(
    st.tuples(st.integers(0, REGION), st.integers(0, 300), st.integers(-1, 5)).map(
        lambda t: (min(t[0], REGION - t[1]) if t[1] <= REGION else 0, t[1], t[2])),
    max_size=12,
)


def stream(writes, *, writev_at: int | None = None, bye: bool = True) -> bytes:
    """What an initiator sends: HELLO, the writes (optionally the ones from `writev_at` on as
    one WRITEV frame, if they do not overlap), BYE."""
    out = bytearray(HELLO)
    seq = 0
    plain = writes if writev_at is None else writes[:writev_at]
    for dst, nb, r in plain:
        seq += 1
        out += wire.write_frame(dst, nb, seq, r + 1 if r >= 0 else 0) + payload(seq, nb)
    rest = [] if writev_at is None else writes[writev_at:]
    if rest:
        out += framing.encode_writev(seq + 1, [d for d, _, _ in rest], [n for _, n, _ in rest],
                                     [r + 1 if r >= 0 else 0 for _, _, r in rest])
        for dst, nb, r in rest:
            seq += 1
            out += payload(seq, nb)
    if bye:
        out += wire.bye_frame()
    return bytes(out)


def payload(seq: int, nb: int) -> bytes:
    return bytes((seq * 7 + i) & 0xFF for i in range(nb))


def overlap(writes) -> bool:
    spans = sorted((d, d + n) for d, n, _ in writes if n)
    return any(a[1] > b[0] for a, b in zip(spans, spans[1:]))


def drive(data: bytes, cuts: list[int], writev: bool = True):
    """Feed `data` cut at `cuts` into a fresh target wire; returns (normalised events, region)."""
    tw = wire.TargetWire(REGION, handshake.TargetHandshake(TOKEN, NONCE), writev=writev)
    region = bytearray(REGION)
    events: list = []
    bounds = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0] + bounds, bounds + [len(data)])]
    for piece in pieces:
        for ev in tw.feed(piece):
            if isinstance(ev, wire.Payload):
                assert 0 <= ev.dst_off and ev.dst_off + len(ev.data) <= REGION
                region[ev.dst_off : ev.dst_off + len(ev.data)] = ev.data
                continue  # how payload is cut depends on the split; what lands does not
            if isinstance(ev, wire.Hello):
                ev = ("hello", ev.hello.initiator, ev.hello.index, ev.hello.connections)
            events.append(ev)
        if tw.dead is not None:
            break
    return tw, events, bytes(region)


cuts_st = st.lists(st.integers(0, 6000), max_size=10)


@SETTINGS
@given(writes=writes_st, cuts=cuts_st, data=st.data())
def test_every_split_of_a_valid_stream_gives_the_same_events(writes, cuts, data):
    at = data.draw(st.one_of(st.none(), st.integers(0, max(len(writes) - 2, 0))))
    if at is not None and (len(writes) - at < 1 or overlap(writes[at:])):
        at = None
    raw = stream(writes, writev_at=at)
    tw1, ev1, reg1 = drive(raw, [])
    tw2, ev2, reg2 = drive(raw, cuts)
    assert ev1 == ev2 and reg1 == reg2
    assert tw1.dead is None and tw2.dead is None and not tw2.mid_frame and tw2.bye
    done = [e for e in ev1 if isinstance(e, wire.WriteDone)]
    assert [(e.dst_off, e.nbytes, e.seq) for e in done] == [
        (d, n, s) for s, (d, n, _) in enumerate(writes, 1)]
    assert [e.header.notify_request for e in done] == [r if r >= 0 else None for _, _, r in writes]
    assert isinstance(ev1[-1], wire.Bye) and ev1[0] == ("hello", "ini", 0, 1)
    expect = bytearray(REGION)
    for s, (d, n, _) in enumerate(writes, 1):
        expect[d : d + n] = payload(s, n)
    assert reg1 == bytes(expect)


@SETTINGS
@given(writes=writes_st.filter(bool), cuts=cuts_st, data=st.data())
def test_every_corruption_is_rejected_with_a_reason_never_a_crash(writes, cuts, data):
    raw = bytearray(stream(writes))
    kind = data.draw(st.sampled_from(["flip", "cut", "insert", "header"]))
    start = len(HELLO)
    if kind == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif kind == "cut":
        i = data.draw(st.integers(start, len(raw) - 1))
        del raw[i : i + data.draw(st.integers(1, 64))]
    elif kind == "insert":
        i = data.draw(st.integers(start, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=40))
    else:  # a whole header of arbitrary fields
        i = data.draw(st.integers(start, len(raw)))
        raw[i:i] = framing.HEADER.pack(b"KV", 1, data.draw(st.integers(0, 255)),
                                       data.draw(st.integers(0, 2**32 - 1)),
                                       data.draw(st.integers(0, 2**64 - 1)),
                                       data.draw(st.integers(0, 2**64 - 1)), 0)
    tw, events, _ = drive(bytes(raw), cuts)  # asserts every Payload lies inside the region
    rejects = [e for e in events if isinstance(e, wire.Reject)]
    assert len(rejects) <= 1 and (not rejects or events[-1] is rejects[0])
    if rejects:
        assert rejects[0].reason and tw.dead is rejects[0]
        assert list(tw.feed(b"x")) == [tw.dead]  # dead stays dead


@SETTINGS
@given(writes=writes_st.filter(bool), cuts=cuts_st, data=st.data())
def test_a_corrupt_magic_version_or_sequence_is_always_rejected(writes, cuts, data):
    raw = bytearray(stream(writes))
    k = data.draw(st.integers(0, len(writes) - 1))  # corrupt the header of write k
    at = len(HELLO) + sum(32 + n for _, n, _ in writes[:k])
    field = data.draw(st.sampled_from([0, 1, 2, 16]))  # magic, magic, version, seq (low byte)
    raw[at + field] ^= data.draw(st.integers(1, 255))
    tw, events, region = drive(bytes(raw), cuts)
    assert isinstance(events[-1], wire.Reject) and events[-1].reason
    assert [e.seq for e in events if isinstance(e, wire.WriteDone)] == list(range(1, k + 1))


@pytest.mark.parametrize("frame, match", [
    (framing.encode_ack(1), "unexpected ACK frame from an initiator"),
    (framing.encode_hello({"a": 1}), "unexpected HELLO frame.*second HELLO"),
    (handshake.encode_challenge(NONCE), "unexpected CHALLENGE frame"),
    (wire.write_frame(4090, 10, 1, 0), r"write \[4090, 4100\) outside registered region of 4096"),
    (wire.write_frame(0, 1, 2, 0), "out of sequence: seq 2, expected 1"),
    (framing.encode_writev(2, [0], [4], [0]), "out of sequence: seq 2, expected 1"),
    (b"XX" + bytes(30), "bad frame magic"),
])
def test_header_rejects_name_the_fault(frame, match):
    tw = wire.TargetWire(REGION)
    assert tw.write_header(frame[:32]) is None
    ev = tw.header(frame[:32])
    assert isinstance(ev, wire.Reject)
    import re
    assert re.search(match, ev.reason), ev.reason
    assert tw.next_seq == 1  # nothing accepted


def test_writev_refused_where_not_advertised_and_nothing_after_bye():
    tw = wire.TargetWire(REGION, writev=False)
    ev = tw.header(framing.encode_writev(1, [0], [4], [0])[:32])
    assert isinstance(ev, wire.Reject) and "unexpected WRITEV" in ev.reason
    assert tw.header(wire.bye_frame()) is wire.BYE and tw.bye
    ev = tw.header(wire.write_frame(0, 1, 1, 0))
    assert isinstance(ev, wire.Reject) and "after BYE" in ev.reason


@SETTINGS
@given(hdr=st.binary(min_size=32, max_size=32), next_seq=st.integers(1, 5), data=st.data())
def test_fast_path_accepts_exactly_what_the_full_check_accepts(hdr, next_seq, data):
    if data.draw(st.booleans()):  # mostly well-formed WRITE headers, near the limits
        hdr = wire.write_frame(data.draw(st.integers(0, REGION + 2)), data.draw(st.integers(0, 40)),
                               data.draw(st.integers(next_seq - 1, next_seq + 1)), data.draw(st.integers(0, 3)))
    fast, slow = wire.TargetWire(REGION), wire.TargetWire(REGION)
    fast.next_seq = slow.next_seq = next_seq
    h = fast.write_header(hdr)
    ev = slow.header(hdr)
    if h is not None:
        assert ev == wire.Write(h[4], h[3], h[5], h[6]) and fast.next_seq == slow.next_seq == next_seq + 1
    else:
        assert not isinstance(ev, wire.Write) and fast.next_seq == next_seq


@SETTINGS
@given(writes=writes_st.filter(lambda w: len(w) >= 2 and not overlap(w)), data=st.data())
def test_writev_table_faults_are_rejected_before_any_payload(writes, data):
    ds, ns = [d for d, _, _ in writes], [n for _, n, _ in writes]
    frame = bytearray(framing.encode_writev(1, ds, ns, [0] * len(writes)))
    i = data.draw(st.integers(32, len(frame) - 1))
    frame[i] ^= data.draw(st.integers(1, 255))
    tw, events, region = drive(HELLO + bytes(frame) + b"\xee" * sum(ns), [])
    placed = [e for e in events if isinstance(e, wire.WriteDone)]
    rejects = [e for e in events if isinstance(e, wire.Reject)]
    if rejects:
        assert not placed and region == bytes(REGION)  # the whole table is checked first
    else:  # a flip the format allows (an offset or imm still in range): all entries placed
        assert len(placed) == len(writes)


# ---- the initiator side: the target's ACKs ---------------------------------------------------

@SETTINGS
@given(acks=st.lists(st.integers(0, 50), max_size=20).map(sorted), cuts=cuts_st)
def test_initiator_accepts_cumulative_acks_whatever_the_split(acks, cuts):
    data = b"".join(wire.ack_frame(a) for a in acks)
    iw = wire.InitiatorWire()
    bounds = sorted({c for c in cuts if 0 < c < len(data)})
    for a, b in zip([0] + bounds, bounds + [len(data)]):
        assert iw.feed(data[a:b], posted=50) is None
    assert iw.acked == (acks[-1] if acks else 0)


@pytest.mark.parametrize("data, posted, cls, match", [
    (wire.ack_frame(6), 5, wire.Reject, "acknowledged seq 6; posted 5"),
    (wire.ack_frame(3) + wire.ack_frame(2), 5, wire.Reject, "acknowledged seq 2; .* before 3"),
    (framing.encode_error("go away"), 5, wire.PeerError, "go away"),
    (wire.write_frame(0, 1, 1, 0), 5, wire.Reject, "unexpected WRITE frame"),
    (framing.encode_hello({}), 5, wire.Reject, "unexpected HELLO frame from the target"),
    (b"KV\x02" + bytes(29), 5, wire.Reject, "unsupported frame version"),
])
def test_initiator_rejects_what_the_target_must_not_send(data, posted, cls, match):
    import re
    ev = wire.InitiatorWire().feed(data, posted)
    assert isinstance(ev, cls) and re.search(match, ev.reason), ev


@SETTINGS
@given(writes=writes_st, cuts=cuts_st)
def test_two_wires_against_each_other(writes, cuts):
    """Initiator frames -> target wire -> one cumulative ACK -> initiator wire."""
    tw, events, _ = drive(stream(writes, bye=False), cuts)
    placed = max((e.seq for e in events if isinstance(e, wire.WriteDone)), default=0)
    iw = wire.InitiatorWire()
    buf = bytearray(32)
    wire.ack_into(buf, placed)
    assert bytes(buf) == wire.ack_frame(placed)
    assert iw.feed(buf, posted=len(writes)) is None and iw.acked == len(writes) == placed
    assert struct.unpack_from("<2sBB", buf) == (b"KV", 1, framing.ACK)
