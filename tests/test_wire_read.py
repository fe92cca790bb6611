"""The sans-I/O one-sided READ codec (transports/wire_read.py, driven by wire.TargetWire and
wire.InitiatorWire): Hypothesis-generated requests and responses, no sockets."""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_kvfabric.errors import ProtocolError
from pytest_kvfabric.transports import framing, wire
from pytest_kvfabric.transports.wire_read import ReadRequest, data_header, read_frame, response_pieces

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REGION = 4096

# A read: (remote_off, nbytes) inside REGION
reads_st = st.lists(
    st.integers(0, REGION).flatmap(lambda n: st.tuples(st.integers(0, REGION - n), st.just(n))),
    min_size=1, max_size=10,
)
cuts_st = st.lists(st.integers(1, 200), max_size=30)


def remote_bytes() -> bytes:
    return bytes((i * 31 + 7) & 0xFF for i in range(REGION))


def requests(reads) -> bytes:
    return b"".join(read_frame(ro, n, i + 1) for i, (ro, n) in enumerate(reads))


def responses(reads, chunk: int, remote: bytes) -> bytes:
    """What a target sends back: every read's pieces then the ACK covering it."""
    out = bytearray()
    for i, (ro, n) in enumerate(reads):
        for hdr, start, ln in response_pieces(i + 1, ro, n, chunk):
            out += hdr + remote[start : start + ln]
        out += wire.ack_frame(i + 1)
    return bytes(out)


def book(reads) -> tuple[wire.InitiatorWire, bytearray, list[int]]:
    """An initiator wire with the reads outstanding, each into its own local slot."""
    local = bytearray(b"\x5a" * sum(n for _, n in reads) + b"\x5a" * 8)
    iw = wire.InitiatorWire(memoryview(local))
    offs = []
    pos = 0
    for i, (_ro, n) in enumerate(reads):
        iw.reads.add(i + 1, pos, n)
        offs.append(pos)
        pos += n
    return iw, local, offs


def feed_cut(iw: wire.InitiatorWire, data: bytes, cuts: list[int], posted: int):
    pos = 0
    for c in cuts + [len(data)]:
        piece = data[pos : pos + c]
        pos += len(piece)
        bad = iw.feed(piece, posted)
        if bad is not None:
            return bad
        if pos >= len(data):
            break
    if pos < len(data):
        return iw.feed(data[pos:], posted)
    return None


@SETTINGS
@given(reads=reads_st, cuts=cuts_st)
def test_read_requests_round_trip_through_the_target_wire(reads, cuts):
    tw = wire.TargetWire(REGION, reads=True)
    raw = requests(reads)
    events = []
    pos = 0
    for c in cuts + [len(raw)]:
        events += list(tw.feed(raw[pos : pos + c]))
        pos += c
    events += list(tw.feed(raw[pos:]))
    assert events == [ReadRequest(i + 1, ro, n) for i, (ro, n) in enumerate(reads)]
    assert tw.next_seq == len(reads) + 1 and not tw.mid_frame


@SETTINGS
@given(reads=reads_st, cuts=cuts_st, chunk=st.integers(1, 1500))
def test_responses_cut_anywhere_land_every_byte_and_complete_in_order(reads, cuts, chunk):
    remote = remote_bytes()
    iw, local, offs = book(reads)
    assert feed_cut(iw, responses(reads, chunk, remote), cuts, len(reads)) is None
    assert iw.acked == len(reads) and len(iw.reads) == 0 and not iw.mid_frame
    for (ro, n), lo in zip(reads, offs):
        assert local[lo : lo + n] == remote[ro : ro + n]
    assert local[-8:] == b"\x5a" * 8
    assert iw.reads.reads_done == len(reads) and iw.reads.bytes_read == sum(n for _, n in reads)


def test_response_pieces_bound_every_frame_and_split_long_reads():
    big = framing.MAX_READ_CHUNK * 2 + 5
    pieces = response_pieces(3, 100, big)
    assert [ln for _, _, ln in pieces] == [framing.MAX_READ_CHUNK, framing.MAX_READ_CHUNK, 5]
    assert [s for _, s, _ in pieces] == [100, 100 + framing.MAX_READ_CHUNK, 100 + 2 * framing.MAX_READ_CHUNK]
    for hdr, _s, ln in pieces:
        h = framing.decode_header(hdr)
        assert (h.type, h.seq, h.nbytes) == (framing.READ_DATA, 3, ln)
    assert [ln for _, _, ln in response_pieces(1, 0, 0)] == [0]  # an empty read: one empty piece
    with pytest.raises(ValueError, match="read chunk"):
        response_pieces(1, 0, 10, framing.MAX_READ_CHUNK + 1)
    with pytest.raises(ValueError, match="read length"):
        read_frame(0, framing.MAX_WRITE + 1, 1)


@SETTINGS
@given(off=st.integers(0, 2**64 - 1), n=st.integers(0, 2**32 - 1), seq=st.integers(1, 5))
def test_target_rejects_every_read_outside_its_region_or_out_of_sequence(off, n, seq):
    tw = wire.TargetWire(REGION, reads=True)
    ev = tw.header(framing.HEADER.pack(b"KV", 1, framing.READ, n, off, seq, 0))
    if seq != 1:
        assert isinstance(ev, wire.Reject) and f"read out of sequence: seq {seq}, expected 1" in ev.reason
    elif off + n > REGION:
        assert isinstance(ev, wire.Reject)
        assert ev.reason == f"read [{off}, {off + n}) outside registered region of {REGION} bytes (seq 1)"
    else:
        assert ev == ReadRequest(1, off, n)


@pytest.mark.parametrize(
    "hdr, reads, match",
    [
        (framing.HEADER.pack(b"KV", 1, framing.READ, 4, 0, 1, 9), True, "READ header with non-zero imm 9"),
        (read_frame(0, 4, 1), False, "serves no one-sided reads"),
        (read_frame(REGION - 3, 4, 1), True, rf"read \[{REGION - 3}, {REGION + 1}\) outside"),
        (data_header(1, 0, 4), True, "unexpected READ_DATA frame from an initiator"),
    ],
)
def test_target_rejects_malformed_read_headers(hdr, reads, match):
    ev = wire.TargetWire(REGION, reads=reads).header(hdr)
    assert isinstance(ev, wire.Reject)
    assert re.search(match, ev.reason), ev.reason


def test_decode_header_bounds_read_data_frames():
    with pytest.raises(ProtocolError, match="READ_DATA frame of 4194305 bytes exceeds 4194304"):
        framing.decode_header(data_header(1, 0, framing.MAX_READ_CHUNK + 1))
    with pytest.raises(ProtocolError, match="READ_DATA header with non-zero imm 1"):
        framing.decode_header(framing.HEADER.pack(b"KV", 1, framing.READ_DATA, 0, 0, 1, 1))
    r = framing.ControlReader()
    with pytest.raises(ProtocolError, match="unexpected READ_DATA frame on a control stream"):
        list(r.feed(data_header(1, 0, 0)))


FIELDS = ["seq", "offset", "nbytes_over", "empty", "imm", "chunk_over", "ack_early", "no_read"]


@SETTINGS
@given(reads=reads_st.filter(lambda rs: all(n > 0 for _, n in rs)), data=st.data(),
       cuts=cuts_st)
def test_every_bad_response_is_rejected_with_a_reason_never_a_crash(reads, data, cuts):
    remote = remote_bytes()
    k = data.draw(st.integers(0, len(reads) - 1))  # the read whose first piece is corrupted
    kind = data.draw(st.sampled_from(FIELDS))
    good = responses(reads[:k], 4096, remote)
    ro, n = reads[k]
    seq = k + 1
    if kind == "seq":
        bad = data_header(data.draw(st.integers(0, 2**64 - 1).filter(lambda s: s != seq)), 0, n)
        match = f"READ_DATA for seq .*expected the oldest outstanding read, seq {seq}"
    elif kind == "offset":
        bad = data_header(seq, data.draw(st.integers(1, 2**64 - 1)), 1)
        match = f"READ_DATA of read seq {seq} at offset .* expected 0"
    elif kind == "nbytes_over":
        bad = data_header(seq, 0, data.draw(st.integers(n + 1, framing.MAX_READ_CHUNK)))
        match = f"of read seq {seq} \\({n} bytes, {n} still due\\)"
    elif kind == "empty":
        bad = data_header(seq, 0, 0)
        match = f"READ_DATA of 0 bytes at offset 0 of read seq {seq}"
    elif kind == "imm":
        bad = framing.HEADER.pack(b"KV", 1, framing.READ_DATA, n, 0, seq, data.draw(st.integers(1, 2**64 - 1)))
        match = "READ_DATA header with non-zero imm"
    elif kind == "chunk_over":
        bad = data_header(seq, 0, data.draw(st.integers(framing.MAX_READ_CHUNK + 1, 2**32 - 1)))
        match = "exceeds 4194304"
    elif kind == "ack_early":
        bad = wire.ack_frame(seq)
        match = f"ACK of seq {seq} covers read seq {seq} with 0 of {n} bytes received"
    else:  # no read outstanding: the book is empty
        reads = reads[:k]
        bad = data_header(seq, 0, 1)
        match = f"READ_DATA for seq {seq} but no read is outstanding"
    iw, _local, _offs = book(reads)
    out = feed_cut(iw, good + bad + b"\0" * 64, cuts, len(reads))
    assert isinstance(out, wire.Reject), (kind, out)
    assert re.search(match, out.reason), (kind, out.reason)


@SETTINGS
@given(reads=reads_st, junk=st.binary(max_size=300), cuts=cuts_st)
def test_arbitrary_bytes_from_a_target_never_raise(reads, junk, cuts):
    iw, _local, _offs = book(reads)
    out = feed_cut(iw, junk, cuts, len(reads))
    assert out is None or isinstance(out, (wire.Reject, wire.PeerError))
    if isinstance(out, wire.Reject):
        assert out.reason


def test_an_error_frame_split_mid_reason_is_reported_whole():
    iw, _local, _offs = book([(0, 10)])
    err = framing.encode_error("read [1, 2) outside registered region of 1 bytes (seq 1)")
    assert iw.feed(err[:40], 1) is None
    out = iw.feed(err[40:], 1)
    assert isinstance(out, wire.PeerError) and out.reason.startswith("read [1, 2) outside")



def test_want_says_what_completes_the_current_frame():
    iw, local, _offs = book([(0, 10)])
    assert iw.want() == 32
    hdr = data_header(1, 0, 10)
    assert iw.feed(hdr[:5], 1) is None and iw.want() == 27
    assert iw.feed(hdr[5:], 1) is None and iw.reads.want_left == 10 and iw.reads.want_off == 0
    assert iw.feed(bytes(range(10)), 1) is None and local[:10] == bytes(range(10))
    err = framing.encode_error("bye now")
    assert iw.feed(err[:32], 1) is None and iw.want() == len("bye now")


ops_st = st.lists(st.tuples(st.booleans(), st.integers(0, REGION).flatmap(
    lambda n: st.tuples(st.integers(0, REGION - n), st.just(n)))), min_size=1, max_size=12)


@SETTINGS
@given(ops=ops_st, cuts=cuts_st)
def test_reads_and_writes_share_one_sequence_in_a_byte_stream(ops, cuts):
    """WRITEs (with payload) and READs interleaved on one connection: one sequence, events in
    order, each READ between the writes it follows and precedes."""
    raw = bytearray()
    expect = []
    for seq, (is_read, (off, n)) in enumerate(ops, start=1):
        if is_read:
            raw += read_frame(off, n, seq)
            expect.append(("read", seq, off, n))
        else:
            raw += wire.write_frame(off, n, seq, 0) + b"\x07" * n
            expect.append(("write", seq, off, n))
    tw = wire.TargetWire(REGION, reads=True)
    events = []
    pos = 0
    for c in cuts + [len(raw)]:
        events += list(tw.feed(bytes(raw[pos : pos + c])))
        pos += c
    events += list(tw.feed(bytes(raw[pos:])))
    got = [("read", e.seq, e.remote_off, e.nbytes) if isinstance(e, ReadRequest) else
           ("write", e.seq, e.dst_off, e.nbytes) for e in events
           if isinstance(e, (ReadRequest, wire.WriteDone))]
    assert got == expect and not any(isinstance(e, wire.Reject) for e in events)
    assert tw.next_seq == len(ops) + 1
