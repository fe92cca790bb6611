"""tcp transport over real sockets on 127.0.0.1 (target in a thread of this process)."""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from pytest_kvfabric.errors import ProtocolError, TransportError
from pytest_kvfabric.transports import framing, registry
from pytest_kvfabric.transports.stream_common import DEFAULT_BUSY_POLL_US, busy_poll_s, parse_tcp_info
from pytest_kvfabric.transports.tcp import TcpTransport

from stream_harness import (
    SENTINEL, TOKEN, RawPeer, ServedTarget, SilentTarget, batch, connect_driving, connected,
    listening_target,
    progress_until_error, round_trip, wait_all,
)

T = TcpTransport
KIB, MIB = 1 << 10, 1 << 20


def test_registry_finds_tcp_and_probe_is_available():
    assert registry.get_transport("tcp") is TcpTransport
    cap = registry.probe("tcp")
    assert cap.available and cap.reason == ""
    assert "kernel TCP, copied send and receive" in cap.data_path


@pytest.mark.parametrize("nbytes", [1, 3, 4095, 4096, 64 * KIB + 7, MIB, 64 * MIB])
def test_single_write_sizes_unaligned(nbytes: int):
    src_off, dst_off = 5, 3
    region_len = nbytes + 16
    served, src, comps, dp, _ = round_trip(T, [nbytes], [src_off], [dst_off], region_len)
    dst = served.arr
    assert comps["xfer"].tolist() == [0]
    assert np.array_equal(dst[dst_off : dst_off + nbytes], src[src_off : src_off + nbytes])
    assert (dst[:dst_off] == SENTINEL).all() and (dst[dst_off + nbytes :] == SENTINEL).all()
    placed = served.all_placed()
    assert placed[["xfer", "dst_off", "nbytes"]].tolist() == [(0, dst_off, nbytes)]
    assert dp["transport"] == "tcp" and dp["zero_copy"] is False
    served.close()


def _scattered(n: int, region_len: int, seed: int, max_len: int = 9000):
    """n non-overlapping writes with unaligned offsets and lengths (some zero), shuffled."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, max_len, n)
    lens[::97] = 0
    gaps = rng.integers(0, 13, n)
    dst = np.cumsum(gaps + np.concatenate([[0], lens[:-1]])) + 1
    assert dst[-1] + lens[-1] <= region_len
    src = rng.permutation(dst)  # the same slots, in another order
    src_lens_ok = src + lens <= region_len
    lens = np.where(src_lens_ok, lens, 0)
    return src, dst, lens


def _check_scatter(served, src, srcs, dsts, lens):
    dst = served.arr
    expect = np.full(len(dst), SENTINEL, np.uint8)
    for s, d, n in zip(srcs.tolist(), dsts.tolist(), lens.tolist()):
        expect[d : d + n] = src[s : s + n]
    assert np.array_equal(dst, expect)


@pytest.mark.parametrize("connections", [1, 3])
def test_batch_of_1024_writes_placed_exactly(connections: int):
    region_len = 8 * MIB
    srcs, dsts, lens = _scattered(1024, region_len, seed=connections)
    served, src, comps, _, stats = round_trip(
        T, lens, srcs, dsts, region_len, connections=connections
    )
    assert sorted(comps["xfer"].tolist()) == list(range(1024))
    _check_scatter(served, src, srcs, dsts, lens)
    placed = served.all_placed()
    # target reports each write once, as its position in the initiator's post order
    order = np.argsort(placed["xfer"])
    assert placed["xfer"][order].tolist() == list(range(1024))
    assert placed["dst_off"][order].tolist() == dsts.tolist()
    assert placed["nbytes"][order].tolist() == lens.tolist()
    assert stats["connections"] == connections and stats["writes_posted"] == 1024
    assert served.target.data_path()["connections"] == connections
    served.close()


def test_many_batches_and_more_than_iov_max():
    # 5000 tiny writes in one batch: > IOV_MAX buffers, exercises partial sendmsg and queue compaction
    region_len = 5000 * 8
    srcs = np.arange(5000) * 8
    dsts = srcs[::-1].copy()
    served, src, comps, _, _ = round_trip(T, [8] * 5000, srcs, dsts, region_len, batch_size=700)
    assert sorted(comps["xfer"].tolist()) == list(range(5000))
    _check_scatter(served, src, srcs, dsts, np.full(5000, 8))
    served.close()


@pytest.mark.parametrize("connections", [1, 4])
def test_notify_after_all_earlier_writes(connections: int):
    n = 400
    region_len = n * 4096
    offs = np.arange(n) * 4096
    notify = np.full(n, -1)
    notify[49::50] = np.arange(8)  # request r completes with write 50r+49
    served, src, _, _, _ = round_trip(
        T, np.full(n, 4096), offs, offs, region_len, connections=connections, notify=notify
    )
    assert served.all_notifies()["request"].tolist() == list(range(8))
    # each notification was reported only once every earlier write was placed
    seen: set[int] = set()
    for p, nt in zip(served.placed, served.notifies):
        seen.update(p["xfer"].tolist())
        for r in nt["request"].tolist():
            assert set(range(50 * r + 50)) <= seen, f"request {r} announced early"
    assert np.array_equal(served.arr, src)
    served.close()


def test_notify_held_until_other_connection_catches_up():
    """Deterministic: position 1 (connection 1) carries the notify and lands before position 0."""
    tgt_region = T.allocate(64, {})
    tgt = T.target(tgt_region, {"token": TOKEN})
    d = tgt.listen("127.0.0.1", 5)
    a = RawPeer(d).hello(index=0, connections=2, initiator="x")
    b = RawPeer(d).hello(index=1, connections=2, initiator="x")
    try:
        b.write(8, b"B" * 8, seq=1, notify=42)
        placed, notes = [], []
        for _ in range(100):
            p, nt = tgt.progress(0.05)
            placed += p["xfer"].tolist()
            notes += nt["request"].tolist()
            if placed:
                break
        assert placed == [1] and notes == []  # placed, but the request is not complete
        a.write(0, b"A" * 8, seq=1)
        for _ in range(100):
            p, nt = tgt.progress(0.05)
            placed += p["xfer"].tolist()
            notes += nt["request"].tolist()
            if notes:
                break
        assert sorted(placed) == [0, 1] and notes == [42]
        assert bytes(tgt_region[:16]) == b"A" * 8 + b"B" * 8
    finally:
        a.close(), b.close(), tgt.close()


def test_write_guard_called_before_placing():
    calls = []
    served = ServedTarget(T, 4096)
    served.target.write_guard = lambda off, n: calls.append((off, n, bytes(served.region[off : off + n])))
    served.start()
    srcr = T.allocate(4096, {})
    np.frombuffer(srcr, np.uint8)[:] = 7
    with connected(T, served, srcr, close_target=True) as ini:
        ini.post(batch([0, 100], [10, 2000], [5, 300]), 5)
        wait_all(ini, 2, 10)
    # the guard saw the old contents: it ran before a byte was placed
    assert calls == [(10, 5, bytes([SENTINEL]) * 5), (2000, 300, bytes([SENTINEL]) * 300)]


def test_descriptor_and_generated_token():
    r = T.allocate(100, {})
    tgt = T.target(r, {})
    try:
        d = tgt.listen("127.0.0.1", 5)
        assert d["host"] == "127.0.0.1" and d["port"] > 0 and d["region_len"] == 100
        assert d["connections"] == 1 and len(d["token"]) >= 32
        # an initiator that knows only the descriptor authenticates with its token
        ini = T.initiator(T.allocate(100, {}), {})
        connect_driving(ini, tgt, d)
        ini.post(batch([0], [0], [100]), 5)
        for _ in range(100):
            p, _n = tgt.progress(0.05)
            if len(p):
                break
        assert len(wait_all(ini, 1, 5)) == 1
        ini.close()
    finally:
        tgt.close()
    tgt2 = T.target(T.allocate(10, {}), {"token": "given"})
    assert "token" not in tgt2.listen("127.0.0.1", 5)
    tgt2.close()


def test_peers_closed_after_bye_and_stats():
    served, _, _, _, stats = round_trip(T, [1000], [0], [0], 1000, connections=2)
    assert served.target.peers_closed()
    assert stats["connect_ns"] > 0
    assert isinstance(stats["retransmits"], int) and stats["retransmits"] >= 0
    assert len(stats["tcp_info"]) == 2 and all("rtt_us" in t for t in stats["tcp_info"])
    tstats = served.target.stats()
    assert tstats["bytes_placed"] == 1000 and tstats["writes_placed"] == 1 and tstats["connections"] == 2
    assert tstats["acks_sent"] == 1  # one write, one cumulative ACK
    served.close()


def test_parse_tcp_info_offsets():
    buf = bytearray(232)
    buf[2] = 3  # tcpi_retransmits
    buf[100:104] = (12345).to_bytes(4, "little")  # tcpi_total_retrans
    buf[68:72] = (77).to_bytes(4, "little")  # tcpi_rtt
    buf[208:216] = (999).to_bytes(8, "little")  # tcpi_bytes_retrans
    info = parse_tcp_info(bytes(buf))
    assert (info["retransmits"], info["total_retrans"], info["rtt_us"], info["bytes_retrans"]) == (3, 12345, 77, 999)
    short = parse_tcp_info(bytes(buf[:104]))  # an older kernel's shorter struct
    assert short["total_retrans"] == 12345 and "bytes_retrans" not in short
    assert parse_tcp_info(b"") == {}


# --- a hostile or broken peer --------------------------------------------------------------


@pytest.fixture
def lone_target():
    with listening_target(T, 4096) as t:
        yield t


def _legit_then(peer: RawPeer, bad: bytes) -> None:
    peer.write(100, b"L" * 50, seq=1)  # legitimately written
    peer.send(bad)


def _expect_rejected(tgt, peer, arr, match: str, legit: bool):
    snapshot = np.full(4096, SENTINEL, np.uint8)
    if legit:
        snapshot[100:150] = ord("L")
    exc, _placed = progress_until_error(tgt)
    assert isinstance(exc, ProtocolError), exc
    assert "127.0.0.1" in str(exc)
    assert match in str(exc)
    errors = [p.decode() for h, p in peer.read_frames() if h.type == framing.ERROR]
    assert errors and match in errors[0]  # the peer was told why
    assert np.array_equal(arr, snapshot)  # nothing but the legitimate write landed


@pytest.mark.parametrize(
    "bad, match",
    [
        (b"XV" + framing.encode_write(0, 8, 2)[2:] + b"X" * 8, "bad frame magic"),
        (framing.encode_write(0, 8, 2)[:2] + b"\x09" + framing.encode_write(0, 8, 2)[3:] + b"X" * 8,
         "unsupported frame version 9"),
        (framing.HEADER.pack(b"KV", 1, 77, 0, 0, 2, 0), "unknown frame type 77"),
        (framing.encode_write(4000, 200, 2) + b"X" * 200, "write [4000, 4200) outside registered region of 4096"),
        (framing.encode_write(2**64 - 8, 16, 2) + b"X" * 16, "outside registered region"),
        (framing.encode_write(0, 8, 5) + b"X" * 8, "write out of sequence: seq 5, expected 2"),
        (framing.encode_ack(1), "unexpected ACK frame"),
        (framing.encode_hello({"token": TOKEN}), "unexpected HELLO frame"),
        (framing.HEADER.pack(b"KV", 1, framing.BYE, 5, 0, 0, 0), "BYE frame with non-empty payload"),
    ],
    ids=["magic", "version", "type", "out-of-region", "offset-overflow", "sequence", "ack", "hello-again", "bye-payload"],
)
def test_malformed_frame_rejected_region_untouched(lone_target, bad, match):
    tgt, d, arr = lone_target
    peer = RawPeer(d).hello()
    try:
        _legit_then(peer, bad)
        _expect_rejected(tgt, peer, arr, match, legit=True)
    finally:
        peer.close()


def _expect_stranger(tgt, peer, arr, match: str, kind: str) -> None:
    """A stranger is dropped and counted; the target goes on; nothing lands in the region."""
    exc, placed = progress_until_error(tgt, 0.5)
    assert exc is None and not len(placed)
    assert tgt.data_path()["strangers"] == {kind: 1}
    assert tgt.data_path()["strangers_rejected"] == 1
    if kind != "closed":
        errors = [p.decode() for h, p in peer.read_frames() if h.type == framing.ERROR]
        assert errors and match in errors[0]  # the peer was told why
    assert np.all(arr == SENTINEL)
    assert not tgt.peers_closed()


@pytest.mark.parametrize("token", ["wrong", ""], ids=["wrong", "empty"])
def test_wrong_token_cannot_write(lone_target, token):
    tgt, d, arr = lone_target
    peer = RawPeer(d).hello(token=token)
    try:
        peer.write(0, b"Z" * 64, seq=1)
        _expect_stranger(tgt, peer, arr, "HELLO with a wrong proof of the run token", "bad_proof")
    finally:
        peer.close()


@pytest.mark.parametrize(
    "first, match, kind",
    [
        (framing.encode_write(0, 4, 1) + b"abcd", "expected HELLO, got WRITE", "bad_frame"),
        (framing.HEADER.pack(b"KV", 1, framing.HELLO, 4, 0, 0, 0) + b"{{{{", "HELLO payload is not JSON", "bad_hello"),
        (framing.HEADER.pack(b"KV", 1, framing.HELLO, 70000, 0, 0, 0), "exceeds", "bad_frame"),
        (framing.HEADER.pack(b"KV", 1, framing.HELLO, 2000, 0, 0, 0), "HELLO payload of 2000 bytes", "bad_hello"),
        (framing.encode_hello({"token": TOKEN, "index": 0, "connections": 1, "initiator": "x"}),
         "HELLO without a proof", "bad_hello"),
        (b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n", "bad frame magic", "bad_frame"),
    ],
    ids=["write-first", "hello-not-json", "hello-too-big", "hello-over-1k", "token-in-clear", "http"],
)
def test_bad_handshake_is_a_stranger_dropped_and_counted(lone_target, first, match, kind):
    tgt, d, arr = lone_target
    peer = RawPeer(d)
    try:
        peer.send(first)
        _expect_stranger(tgt, peer, arr, match, kind)
    finally:
        peer.close()


def test_hello_index_out_of_range(lone_target):
    tgt, d, arr = lone_target
    peer = RawPeer(d).hello(index=2, connections=2)
    try:
        _expect_rejected(tgt, peer, arr, "HELLO index 2 / connections 2 out of range", legit=False)
    finally:
        peer.close()


def test_peer_closes_mid_write(lone_target):
    tgt, d, arr = lone_target
    peer = RawPeer(d).hello()
    peer.write(0, b"a" * 10, seq=1)
    peer.send(framing.encode_write(1000, 1000, 2) + b"b" * 400)
    peer.close()
    exc, placed = progress_until_error(tgt)
    assert isinstance(exc, TransportError) and not isinstance(exc, ProtocolError)
    assert "closed mid-write: 600 of 1000 bytes of write seq 2 (dst_off 1000) missing" in str(exc)
    assert "127.0.0.1" in str(exc)


def test_peer_closes_mid_header(lone_target):
    tgt, d, _ = lone_target
    peer = RawPeer(d).hello()
    peer.send(framing.encode_write(0, 10, 1)[:20])
    peer.close()
    exc, _ = progress_until_error(tgt)
    assert isinstance(exc, TransportError) and "closed mid-header: 20 of 32" in str(exc)


def test_peer_closes_without_bye(lone_target):
    tgt, d, _ = lone_target
    peer = RawPeer(d).hello()
    peer.write(0, b"x", seq=1)
    peer.close()
    exc, _ = progress_until_error(tgt)
    assert isinstance(exc, TransportError) and "without BYE after 1 writes" in str(exc)
    assert not tgt.peers_closed()


# --- the initiator side of failures ------------------------------------------------------------


def test_initiator_learns_target_rejected_it():
    served = ServedTarget(T, 4096, token="right").start()
    with connected(T, served, T.allocate(4096, {}), {"token": "wrong"}, stop_wait_s=0.1,
                   close_target=True) as ini:
        with pytest.raises(TransportError, match="rejected us: HELLO with a wrong proof of the run token"
                                                 "|lost the connection"):
            ini.post(batch([0], [0], [4096]), 5)
            for _ in range(100):
                ini.poll(0.05)
    assert served.error is None  # a wrong token is a stranger: the target goes on
    assert served.target.data_path()["strangers"] == {"bad_proof": 1}


def test_initiator_sees_target_die():
    ls = SilentTarget()
    ini = T.initiator(T.allocate(1 << 20, {}), {"token": TOKEN})
    try:
        ini.connect({"host": "127.0.0.1", "port": ls.port}, 5)
        conn = ls.accepted()
        ini.post(batch([0], [0], [1000]), 5)
        conn.close()  # the "target" dies without acknowledging
        with pytest.raises(TransportError, match="with 1 writes unacknowledged"):
            for _ in range(200):
                ini.poll(0.05)
    finally:
        ini.close()
        ls.close()


def test_post_blocked_by_silent_target_times_out():
    ls = SilentTarget()
    ini = T.initiator(T.allocate(64 * MIB, {}), {"token": TOKEN, "sndbuf": 65536})
    try:
        ini.connect({"host": "127.0.0.1", "port": ls.port}, 5)
        conn = ls.accepted()  # accepts, never reads
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="post timed out after 0.3 s"):
            ini.post(batch([0], [0], [64 * MIB]), 0.3)
        assert time.monotonic() - t0 < 10  # bounded (generous: shared cores)
        conn.close()
    finally:
        ini.close()
        ls.close()


def test_connect_refused_and_bad_descriptor():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    ini = T.initiator(T.allocate(10, {}), {"token": TOKEN})
    with pytest.raises(TransportError, match=f"cannot connect to 127.0.0.1:{port}"):
        ini.connect({"host": "127.0.0.1", "port": port}, 2)
    with pytest.raises(TransportError, match="descriptor lacks host/port"):
        T.initiator(T.allocate(10, {}), {}).connect({"port": 1}, 1)


def test_post_outside_local_region_rejected():
    served = ServedTarget(T, 100).start()
    with connected(T, served, T.allocate(100, {}), close_target=True) as ini:
        with pytest.raises(TransportError, match=r"write xfer 1 \[90, 110\) outside the local region of 100"):
            ini.post(batch([0, 90], [0, 0], [10, 20]), 5)
        assert ini.outstanding() == 0


def test_single_writes_between_batches_placed_in_order_with_notifies():
    """The one-write fast path (the latency case) and the batch path share one sequence:
    alternating them places every byte, completes every id and notifies in post order."""
    region_len = 64 * KIB
    served = ServedTarget(T, region_len).start()
    src_region = T.allocate(region_len, {})
    src = np.frombuffer(src_region, np.uint8)
    src[:] = np.arange(region_len, dtype=np.uint64).astype(np.uint8) ^ 0x3C
    srcs, dsts, lens, notify = [], [], [], []
    with connected(T, served, src_region) as ini:
        xfer = 0
        for round_ in range(6):
            k = 1 if round_ % 2 == 0 else 5  # single, batch, single, ...
            s_ = [(xfer + j) * 1000 for j in range(k)]
            d_ = [region_len - 1000 - (xfer + j) * 1000 for j in range(k)]
            n_ = [999 - j for j in range(k)]
            nt = [-1] * (k - 1) + [round_]
            ini.post(batch(s_, d_, n_, nt, first_xfer=xfer), 5)
            srcs += s_; dsts += d_; lens += n_; notify += nt
            xfer += k
        comps = wait_all(ini, xfer)
    assert served.error is None
    assert sorted(comps["xfer"].tolist()) == list(range(xfer))
    _check_scatter(served, src, np.array(srcs), np.array(dsts), np.array(lens))
    assert served.all_notifies()["request"].tolist() == list(range(6))
    served.close()


def test_single_write_outside_local_region_rejected():
    served = ServedTarget(T, 100).start()
    with connected(T, served, T.allocate(100, {}), close_target=True) as ini:
        with pytest.raises(TransportError, match=r"write xfer 7 \[95, 105\) outside the local region of 100"):
            ini.post(batch([95], [0], [10], first_xfer=7), 5)
        assert ini.outstanding() == 0


def test_busy_poll_option_default_and_validation():
    assert busy_poll_s({}, "tcp") == DEFAULT_BUSY_POLL_US / 1e6
    assert busy_poll_s({"busy_poll_us": 0}, "tcp") == 0.0
    assert busy_poll_s({"busy_poll_us": "200"}, "tcp") == 200e-6
    for bad in (-1, "fast", float("nan"), 2e6, None):
        with pytest.raises(TransportError, match=r"tcp: option busy_poll_us must be a number of microseconds"):
            busy_poll_s({"busy_poll_us": bad}, "tcp")
    with pytest.raises(TransportError, match="busy_poll_us"):
        T.target(T.allocate(10, {}), {"busy_poll_us": -5})


@pytest.mark.parametrize("opts, expect_us", [({}, DEFAULT_BUSY_POLL_US), ({"busy_poll_us": 0}, 0.0),
                                             ({"busy_poll_us": "1000000"}, 1e6)])
def test_data_path_reports_the_busy_poll_window(opts, expect_us):
    # A spinning side burns a core whatever it moves: the Result must say so, or its CPU
    # figures and its lateness could not be read (README: post lateness on one host).
    tgt = T.target(T.allocate(10, {}), {"token": TOKEN, **opts})
    ini = T.initiator(T.allocate(10, {}), {"token": TOKEN, **opts})
    try:
        assert tgt.data_path()["busy_poll_us"] == expect_us
        assert ini.data_path()["busy_poll_us"] == expect_us
    finally:
        tgt.close()
        ini.close()


def test_busy_poll_never_outlasts_the_callers_timeout():
    # A one-second spin window: poll(0)/progress(0) must not spin at all, and a 50 ms wait
    # must end at its timeout, not after the spin window (bounds are 10x generous).
    served = ServedTarget(T, 4096, busy_poll_us=1e6).start()
    ini = T.initiator(T.allocate(4096, {}), {"token": TOKEN, "busy_poll_us": 1e6})
    ls = SilentTarget()
    silent = T.initiator(T.allocate(4096, {}), {"token": TOKEN, "busy_poll_us": 1e6})
    quiet = T.target(T.allocate(4096, {}), {"token": TOKEN, "busy_poll_us": 1e6})
    try:
        ini.connect(served.descriptor, 5)
        ini.post(batch([0], [0], [100]), 5)
        assert len(wait_all(ini, 1)) == 1
        silent.connect({"host": "127.0.0.1", "port": ls.port}, 5)
        conn = ls.accepted()  # never answers: a write to it never completes
        silent.post(batch([0], [0], [100]), 5)
        quiet.listen("127.0.0.1", 5)
        for call, timeout, bound in ((silent.poll, 0.0, 0.5), (silent.poll, 0.05, 0.9),
                                     (quiet.progress, 0.0, 0.5), (quiet.progress, 0.05, 0.9)):
            t0 = time.monotonic()
            out = call(timeout)
            elapsed = time.monotonic() - t0
            assert elapsed < bound, f"{call.__name__}({timeout}) took {elapsed:.3f} s with a 1 s spin window"
            assert not len(out[0] if isinstance(out, tuple) else out)
        conn.close()
    finally:
        for x in (ini, silent, quiet):
            x.close()
        ls.close()
        served.stop()
        served.close()


@pytest.mark.parametrize("busy_poll_us", [0, 1e6])
def test_busy_polling_with_nothing_to_do_is_counted_as_spin_cpu(busy_poll_us):
    # spin_cpu_ns is what the Result reports apart from the CPU that moved bytes: it must
    # grow while a side spins idle, stay 0 when it sleeps, and never exceed the CPU spent.
    ls = SilentTarget()
    silent = T.initiator(T.allocate(4096, {}), {"token": TOKEN, "busy_poll_us": busy_poll_us})
    quiet = T.target(T.allocate(4096, {}), {"token": TOKEN, "busy_poll_us": busy_poll_us})
    try:
        silent.connect({"host": "127.0.0.1", "port": ls.port}, 5)
        conn = ls.accepted()  # never answers: the write stays in flight
        silent.post(batch([0], [0], [100]), 5)
        quiet.listen("127.0.0.1", 5)
        for ep, call in ((silent, silent.poll), (quiet, quiet.progress)):
            call(0.0)
            assert ep.spin_cpu_ns == 0  # a zero timeout never spins
            c0 = time.thread_time_ns()
            call(0.05)
            used = time.thread_time_ns() - c0
            if busy_poll_us:
                assert 0 < ep.spin_cpu_ns <= used
            else:
                assert ep.spin_cpu_ns == 0
        conn.close()
    finally:
        silent.close()
        quiet.close()
        ls.close()


@pytest.mark.parametrize("busy_poll_us", [0, 50])
def test_a_wait_under_a_millisecond_is_spun_out_not_slept(busy_poll_us, monkeypatch):
    # epoll sleeps whole milliseconds: poll(0.5 ms) would sleep ~1 ms. With busy polling on,
    # the initiator spins such a wait out (the pacing loop relies on it: spins_short_waits);
    # with busy_poll_us=0 it never spins. Longer waits still sleep after the busy window.
    ls = SilentTarget()
    ini = T.initiator(T.allocate(4096, {}), {"token": TOKEN, "busy_poll_us": busy_poll_us})
    try:
        ini.connect({"host": "127.0.0.1", "port": ls.port}, 5)
        conn = ls.accepted()  # never answers: the write stays in flight
        ini.post(batch([0], [0], [100]), 5)
        timeouts: list[float] = []
        real_select = ini._sel.select
        monkeypatch.setattr(ini._sel, "select", lambda t=None: timeouts.append(t) or real_select(t))
        assert ini.spins_short_waits is bool(busy_poll_us)
        ini.poll(0.0005)
        slept = [t for t in timeouts if t]
        assert (slept == []) if busy_poll_us else (slept != []), timeouts[:5]
        timeouts.clear()
        ini.poll(0.005)
        assert any(t for t in timeouts)  # a 5 ms wait sleeps in epoll after the spin
        conn.close()
    finally:
        ini.close()
        ls.close()


def _burn_cpu_after(obj, name: str, cpu_ns: int, monkeypatch) -> None:
    """Make obj.name burn cpu_ns of this thread's CPU after doing its work (CPU time, not a
    wall-clock wait, so the bound below holds on a loaded host)."""
    orig = getattr(obj, name)

    def slow(*args):
        out = orig(*args)
        end = time.thread_time_ns() + cpu_ns
        while time.thread_time_ns() < end:
            pass
        return out

    monkeypatch.setattr(obj, name, slow)


BURN_NS = 20_000_000


def test_handling_what_arrives_mid_spin_is_work_not_spin(monkeypatch):
    # The initiator spins for an ack that comes ~30 ms later; reading it costs 20 ms of CPU.
    # Only the idle part is spin: spin <= CPU used - 20 ms, and some spin there was.
    served = ServedTarget(T, 4096)  # started late: the ack comes mid-spin
    src = T.allocate(4096, {})
    with connected(T, served, src, {"busy_poll_us": 1e6}, close_target=True) as ini:
        ini.post(batch([0], [0], [100]), 5)
        _burn_cpu_after(ini, "_read", BURN_NS, monkeypatch)
        starter = threading.Timer(0.03, served.start)
        starter.start()
        c0 = time.thread_time_ns()
        done = ini.poll(5.0)
        used = time.thread_time_ns() - c0
        starter.join()
        assert len(done) == 1
        assert 0 < ini.spin_cpu_ns <= used - BURN_NS, (ini.spin_cpu_ns, used)


def test_target_handling_what_arrives_mid_spin_is_work_not_spin(monkeypatch):
    # As above on the decode side: the peer connects and writes ~30 ms into a spinning wait.
    tgt = T.target(T.allocate(4096, {}), {"token": TOKEN, "busy_poll_us": 1e6})
    desc = tgt.listen("127.0.0.1", 5)
    try:
        _burn_cpu_after(tgt, "on_readable", BURN_NS, monkeypatch)
        peer: list[RawPeer] = []

        def send_later() -> None:
            time.sleep(0.03)
            peer.append(RawPeer(desc).hello())
            peer[0].write(0, b"x" * 100, seq=1)

        sender = threading.Thread(target=send_later)
        sender.start()
        c0 = time.thread_time_ns()
        placed = np.empty(0)
        deadline = time.monotonic() + 10
        while not len(placed) and time.monotonic() < deadline:
            placed, _ = tgt.progress(5.0)
        used = time.thread_time_ns() - c0
        sender.join()
        peer[0].close()
        assert len(placed) == 1
        assert 0 < tgt.spin_cpu_ns <= used - BURN_NS, (tgt.spin_cpu_ns, used)
    finally:
        tgt.close()


def test_post_queues_and_returns_and_a_later_single_write_goes_out_after_the_queue():
    # post() returns with bytes still queued (as ibv_post_send does); poll() hands them to the
    # kernel as the socket drains. A one-write post behind them must not jump the queue.
    region_len = 8 * MIB
    served = ServedTarget(T, region_len)  # not started: it reads nothing yet
    src_region = T.allocate(region_len, {})
    src = np.frombuffer(src_region, np.uint8)
    src[:] = np.arange(region_len, dtype=np.uint64).astype(np.uint8) ^ 0x5B
    ini = T.initiator(src_region, {"token": TOKEN, "sndbuf": 65536})
    try:
        connect_driving(ini, served.target, served.descriptor)  # the handshake only
        ini.post(batch([0], [0], [6 * MIB]), 0.2)  # far more than the socket takes: queued
        ini.post(batch([6 * MIB], [7 * MIB], [4096], first_xfer=1), 0.0)  # behind it
        assert ini.outstanding() == 2 and not len(ini.poll(0.05))
    finally:
        served.start()  # now the target reads; poll() sends what is queued
    try:
        comps = wait_all(ini, 2)
    finally:
        ini.close()
        served.stop()
    assert served.error is None
    assert comps["xfer"].tolist() == [0, 1]
    placed = served.all_placed()
    assert placed["xfer"].tolist() == [0, 1] and placed["dst_off"].tolist() == [0, 7 * MIB]
    assert np.array_equal(served.arr[:6 * MIB], src[:6 * MIB])
    assert np.array_equal(served.arr[7 * MIB:7 * MIB + 4096], src[6 * MIB:6 * MIB + 4096])
    served.close()


@pytest.mark.parametrize("max_unsent", [0, MIB])
def test_post_blocks_while_more_than_max_unsent_bytes_are_queued(max_unsent):
    ls = SilentTarget()
    ini = T.initiator(T.allocate(8 * MIB, {}), {"token": TOKEN, "sndbuf": 65536,
                                                "max_unsent_bytes": max_unsent})
    try:
        ini.connect({"host": "127.0.0.1", "port": ls.port}, 5)
        conn = ls.accepted()  # accepts, never reads
        with pytest.raises(TransportError, match="post timed out after 0.2 s"):
            ini.post(batch([0], [0], [6 * MIB]), 0.2)
        conn.close()
    finally:
        ini.close()
        ls.close()
    with pytest.raises(TransportError, match="max_unsent_bytes must be a byte count >= 0, got -1"):
        T.initiator(T.allocate(10, {}), {"max_unsent_bytes": -1})


@pytest.mark.parametrize("busy_poll_us", [0, 50, 5000])
def test_round_trip_with_and_without_busy_polling(busy_poll_us):
    region_len = MIB
    srcs, dsts, lens = _scattered(64, region_len, seed=busy_poll_us)
    served, src, comps, _, _ = round_trip(
        T, lens, srcs, dsts, region_len, batch_size=1, busy_poll_us=busy_poll_us
    )
    assert sorted(comps["xfer"].tolist()) == list(range(64))
    _check_scatter(served, src, srcs, dsts, lens)
    served.close()


def test_default_region_is_private_and_asks_for_huge_pages():
    from pytest_kvfabric.transports.base import anonymous_region

    small, kind = anonymous_region(4096)
    assert len(small) == 4096 and kind.startswith("4 KiB pages")
    big, kind = anonymous_region(8 * MIB)
    assert len(big) == 8 * MIB
    assert kind.startswith(("transparent huge pages requested", "4 KiB pages (MADV_HUGEPAGE failed"))
    arr = np.frombuffer(big, np.uint8)
    assert not arr.any()  # anonymous memory starts zero-filled
    arr[:] = 7
    assert int(arr.sum()) == 7 * 8 * MIB
    # private, not shared: shared anonymous memory is shmem, which gets no THP here
    start = arr.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        perms = [ln.split()[1] for ln in f
                 if int(ln.split("-")[0], 16) <= start < int(ln.split()[0].split("-")[1], 16)]
    assert perms == ["rw-p"]
    del arr
    # the transport's default allocation is this mapping, and release() frees it
    region = T.allocate(3 * MIB, {})
    assert len(region) == 3 * MIB and not region.readonly
    T.release(region)
