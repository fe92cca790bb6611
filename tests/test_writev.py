"""WRITEV frames end to end: many writes placed by one scatter receive on the tcp target.

Real sockets on 127.0.0.1; hand-made frames from a raw peer for what a real initiator never
sends. Checks placement, per-write xfer numbering, cumulative ACKs per write, notify order,
the write guard, and that a bad table is rejected before a payload byte is placed.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from pytest_kvfabric.errors import ProtocolError, TransportError
from pytest_kvfabric.transports import framing
from pytest_kvfabric.transports.tcp import TcpTransport
from pytest_kvfabric.transports.zerocopy import ZeroCopyTransport

from stream_harness import (
    SENTINEL, RawPeer, ServedTarget, batch, connected, listening_target, progress_until_error, round_trip,
    wait_all,
)

T = TcpTransport
KIB = 1 << 10


def _contiguous(n: int, size_fn, seed: int):
    rng = np.random.default_rng(seed)
    lens = np.array([size_fn(rng) for _ in range(n)], dtype=np.int64)
    dst = np.concatenate([[0], np.cumsum(lens[:-1])]) + 5
    region_len = int(dst[-1] + lens[-1] + 5)
    src = rng.permutation(dst)
    lens = np.where(src + lens <= region_len, lens, 0)
    return src, dst, lens, region_len


def _expected(srcarr, src, dst, lens, region_len):
    exp = np.full(region_len, SENTINEL, np.uint8)
    for s, d, ln in zip(src.tolist(), dst.tolist(), lens.tolist()):
        exp[d : d + ln] = srcarr[s : s + ln]
    return exp


@pytest.mark.parametrize("notifies", [True, False], ids=["notify", "no-notify"])
@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("transport", [TcpTransport, ZeroCopyTransport], ids=["tcp", "zerocopy"])
def test_batches_go_as_writev_and_place_exactly(transport, connections: int, notifies: bool):
    n = 3000  # several frames per connection (entry cap 1024 and the byte cap)
    src, dst, lens, region_len = _contiguous(n, lambda r: int(r.integers(0, 9000)), connections)
    notify = np.full(n, -1)
    if notifies:
        notify[99::100] = np.arange(30)
    served, srcarr, comps, dp, st = round_trip(
        transport, lens, src, dst, region_len, connections=connections, notify=notify,
        batch_size=1500, writev_max_bytes=1 << 20,
    )
    try:
        assert served.descriptor["writev"] is True
        assert st["writev"] is True and st["writev_frames"] >= 2
        if transport is ZeroCopyTransport:  # completion accounting still covers every send call
            assert dp["zc_completions"] + dp["copied_completions"] == dp["send_calls"]
        assert sorted(comps["xfer"].tolist()) == list(range(n))
        assert np.array_equal(served.arr, _expected(srcarr, src, dst, lens, region_len))
        placed = served.all_placed()
        # the target's xfer numbering is the post order, exactly as with WRITE frames
        by_x = {int(x): (int(d), int(nb)) for x, d, nb in placed[["xfer", "dst_off", "nbytes"]].tolist()}
        assert by_x == {i: (int(dst[i]), int(lens[i])) for i in range(n)}
        # a notify only after it and every earlier write were placed
        assert served.all_notifies()["request"].tolist() == (list(range(30)) if notifies else [])
        assert len(placed) == n and int(placed["nbytes"].sum()) == int(lens.sum())
        assert served.target.writes_placed == n and served.target.bytes_placed == int(lens.sum())
    finally:
        served.close()


def test_notify_never_overtakes_earlier_writes_in_one_frame():
    """Per call of progress(): every announced request's write and all before it are placed."""
    n = 400
    src, dst, lens, region_len = _contiguous(n, lambda r: 64 * KIB, 7)
    notify = np.full(n, -1)
    notify[49::50] = np.arange(8)
    served = ServedTarget(T, region_len)
    seen: list[int] = []
    ok: list[bool] = []
    orig = served.target.progress

    def progress(timeout_s):
        p, nt = orig(timeout_s)
        seen.extend(p["xfer"].tolist())
        for r in nt["request"].tolist():
            ok.append(set(range(50 * r + 50)) <= set(seen))
        return p, nt

    served.target.progress = progress
    served.start()
    srcr = T.allocate(region_len, {})
    with connected(T, served, srcr, close_target=True) as ini:
        ini.post(batch(src, dst, lens, notify), 30)
        wait_all(ini, n, 30)
        assert ini.data_path()["writev_frames"] >= 1
    assert served.error is None
    assert len(ok) == 8 and all(ok)


@pytest.mark.parametrize("how", ["option-off", "target-without-writev"])
def test_plain_write_frames_when_writev_is_off_or_not_advertised(how):
    n = 200
    src, dst, lens, region_len = _contiguous(n, lambda r: int(r.integers(1, 5000)), 3)
    served = ServedTarget(T, region_len).start()
    srcr = T.allocate(region_len, {})
    srcarr = np.frombuffer(srcr, np.uint8)
    srcarr[:] = np.random.default_rng(5).integers(0, 256, region_len, dtype=np.uint8)
    desc = dict(served.descriptor)
    opts = {}
    if how == "option-off":
        opts["writev"] = "false"
    else:
        desc.pop("writev")  # what an iouring or devmem target's descriptor looks like
    with connected(T, served, srcr, opts, descriptor=desc) as ini:
        ini.post(batch(src, dst, lens), 10)
        wait_all(ini, n, 10)
        dp = ini.data_path()
    try:
        assert served.error is None
        assert dp["writev"] is False and dp["writev_frames"] == 0
        assert np.array_equal(served.arr, _expected(srcarr, src, dst, lens, region_len))
    finally:
        served.close()


def test_overlapping_batch_goes_as_write_frames_in_order():
    """Overlapping writes in one batch: WRITE frames (the later write wins, as posted)."""
    served = ServedTarget(T, 4096).start()
    srcr = T.allocate(4096, {})
    a = np.frombuffer(srcr, np.uint8)
    a[:100], a[100:200] = 1, 2
    with connected(T, served, srcr) as ini:
        ini.post(batch([0, 100, 0], [1000, 1050, 3000], [100, 100, 10]), 5)
        wait_all(ini, 3, 10)
        dp = ini.data_path()
    try:
        assert served.error is None and dp["writev_frames"] == 0
        assert (served.arr[1000:1050] == 1).all() and (served.arr[1050:1150] == 2).all()
    finally:
        served.close()


def test_write_guard_called_per_entry_before_any_byte_of_the_frame():
    calls = []
    served = ServedTarget(T, 8192)
    served.target.write_guard = lambda off, n: calls.append(
        (off, n, bytes(served.region[0:8192]) == bytes([SENTINEL]) * 8192)
    )
    served.start()
    srcr = T.allocate(8192, {})
    np.frombuffer(srcr, np.uint8)[:] = 7
    with connected(T, served, srcr, close_target=True) as ini:
        ini.post(batch([0, 100, 500], [10, 2000, 5000], [5, 300, 0]), 5)
        wait_all(ini, 3, 10)
        assert ini.data_path()["writev_frames"] == 1
    # one call per write, in order, all before the frame's first byte landed
    assert calls == [(10, 5, True), (2000, 300, True), (5000, 0, True)]


# --- a raw peer: partial reads, the IOV_MAX frame, and hostile tables ----------------------------


@pytest.fixture
def lone_target():
    with listening_target(T, 1 << 20) as t:
        yield t


def _drive(tgt, want: int, timeout_s: float = 5.0):
    placed, notes = [], []
    deadline = time.monotonic() + timeout_s
    while len(placed) < want and time.monotonic() < deadline:
        p, nt = tgt.progress(0.05)
        placed += p[["xfer", "dst_off", "nbytes"]].tolist()
        notes += nt["request"].tolist()
    return placed, notes


def test_dribbled_writev_frame_cut_everywhere(lone_target):
    """Table and payloads arrive in small pieces: writes are reported as each completes,
    ACKs are per write, and the next frame's header is picked up after the payload."""
    tgt, d, arr = lone_target
    peer = RawPeer(d).hello()
    try:
        payloads = [bytes([i + 1]) * ln for i, ln in enumerate([700, 0, 1300, 33, 5000])]
        offs = [0, 700, 800, 4000, 9000]
        frame = framing.encode_writev(1, offs, [len(p) for p in payloads], [0, 0, 0, 4, 0])
        wire = frame + b"".join(payloads) + framing.encode_write(20000, 10, 6) + b"z" * 10
        placed = []
        for i in range(0, len(wire), 257):
            peer.send(wire[i : i + 257])
            time.sleep(0.002)
            placed += _drive(tgt, 1, 0.05)[0]
        p2, _ = _drive(tgt, 6 - len(placed))
        placed += p2
        assert placed == [(0, 0, 700), (1, 700, 0), (2, 800, 1300), (3, 4000, 33), (4, 9000, 5000),
                          (5, 20000, 10)]
        for o, p in zip(offs, payloads):
            assert bytes(arr[o : o + len(p)]) == p
        assert bytes(arr[20000:20010]) == b"z" * 10
        assert tgt.writes_placed == 6
        peer.send(framing.encode_bye())
        peer.sock.shutdown(1)
        _drive(tgt, 1, 0.3)
        acks = [h.seq for h, _ in peer.read_frames(1.0) if h.type == framing.ACK]
        assert acks and acks[-1] == 6 and acks == sorted(acks)
    finally:
        peer.close()


def test_full_iov_max_frame_then_a_write(lone_target):
    """1024 entries leave no iovec for the next header in the same receive call."""
    tgt, d, arr = lone_target
    peer = RawPeer(d).hello()
    try:
        n = framing.MAX_WRITEV_ENTRIES
        offs = [i * 100 for i in range(n)]
        frame = framing.encode_writev(1, offs, [99] * n, [0] * n)
        body = b"".join(bytes([i % 251 + 1]) * 99 for i in range(n))
        peer.send(frame + body + framing.encode_write(200000, 4, n + 1) + b"tail")
        placed, _ = _drive(tgt, n + 1)
        assert [x for x, _, _ in placed] == list(range(n + 1))
        assert all(bytes(arr[i * 100 : i * 100 + 99]) == bytes([i % 251 + 1]) * 99 for i in range(n))
        assert (arr[99:100] == SENTINEL).all()
        assert bytes(arr[200000:200004]) == b"tail"
    finally:
        peer.close()


def _bad_table(entries, total=None, count=None, seq=2):
    tab = b"".join(framing.WRITEV_ENTRY.pack(*e) for e in entries)
    total = sum(e[1] for e in entries) if total is None else total
    count = len(entries) if count is None else count
    return framing.HEADER.pack(b"KV", 1, framing.WRITEV, total, count, seq, 0) + tab


@pytest.mark.parametrize(
    "frame, match",
    [
        (_bad_table([(0, 100, 0, 0), ((1 << 20) - 10, 20, 0, 0)]),
         f"write [{(1 << 20) - 10}, {(1 << 20) + 10}) outside registered region of {1 << 20} bytes "
         "(seq 3, WRITEV entry 1)"),
        (_bad_table([(0, 100, 0, 0), (50, 100, 0, 0)]), "WRITEV entries 0 and 1 overlap at 50"),
        (_bad_table([(0, 100, 0, 0)], total=200), "WRITEV entries total 100 bytes but the header says 200"),
        (_bad_table([(0, 100, 0, 0)], count=1025), "WRITEV with 1025 entries"),
        (_bad_table([(0, 100, 0, 0)], seq=9), "write out of sequence: seq 9, expected 2"),
    ],
    ids=["entry-out-of-region", "overlap", "total-mismatch", "too-many-entries", "sequence"],
)
def test_bad_writev_rejected_before_any_payload_byte(lone_target, frame, match):
    tgt, d, arr = lone_target
    peer = RawPeer(d).hello()
    try:
        peer.write(300000, b"L" * 50, seq=1)
        peer.send(frame + b"X" * 120)
        exc, _ = progress_until_error(tgt)
        assert isinstance(exc, ProtocolError), exc
        assert match in str(exc) and "127.0.0.1" in str(exc)
        errors = [p.decode() for h, p in peer.read_frames() if h.type == framing.ERROR]
        assert errors and match in errors[0]
        expect = np.full(len(arr), SENTINEL, np.uint8)
        expect[300000:300050] = ord("L")
        assert np.array_equal(arr, expect)  # not even the in-region entries were placed
    finally:
        peer.close()


def test_peer_closes_mid_table_and_mid_payload(lone_target):
    tgt, d, _ = lone_target
    peer = RawPeer(d).hello()
    frame = framing.encode_writev(1, [0, 1000], [100, 100], [0, 0])
    peer.send(frame[: framing.HEADER_SIZE + 30])
    peer.close()
    exc, _ = progress_until_error(tgt)
    assert isinstance(exc, TransportError) and "closed mid-header: 30 of 48 WRITEV table bytes" in str(exc)

    peer = RawPeer(d).hello(initiator="second")
    peer.send(frame + b"a" * 150)
    peer.close()
    exc, placed = progress_until_error(tgt)
    assert isinstance(exc, TransportError) and not isinstance(exc, ProtocolError)
    assert "closed mid-write: 50 of 200 payload bytes of the WRITEV frame of seq 1..2 missing" in str(exc)
