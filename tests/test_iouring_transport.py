"""The iouring transport over real sockets on 127.0.0.1: target in a thread (or a child
process for peer death), initiator in the test thread."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from pytest_kvfabric.errors import ProtocolError, TransportError
from pytest_kvfabric.transports import framing, handshake, registry
from pytest_kvfabric.transports.base import XFER_DTYPE

T = registry.get_transport("iouring")
MODES = ("send", "send_zc")
TIMEOUT_S = 20.0


def _skip_unless(mode: str) -> None:
    cap = T.probe({"mode": mode})
    if not cap.available:
        pytest.skip(cap.reason)


def _batch(rows) -> np.ndarray:
    rows = list(rows)
    b = np.zeros(len(rows), XFER_DTYPE)
    for i, (src, dst, n, notify) in enumerate(rows):
        b[i] = (i, src, dst, n, notify)
    return b


class TargetThread:
    """Runs target.progress in a thread, collecting placements and the first error."""

    def __init__(self, transport, region, options):
        self.target = transport.target(region, options)
        self.descriptor = self.target.listen("127.0.0.1", 5)
        self.placed, self.notifies, self.error = [], [], None
        self.guarded: list[tuple[int, int]] = []
        self.target.write_guard = lambda off, n: self.guarded.append((off, n))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                p, n = self.target.progress(0.05)
            except TransportError as exc:
                self.error = exc
                return
            self.placed.extend(p.tolist())
            self.notifies.extend(n.tolist())

    def wait_error(self, timeout_s: float = TIMEOUT_S):
        self._thread.join(timeout_s)
        return self.error

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        self.target.close()


@pytest.fixture
def regions():
    made = []

    def make(nbytes, transport=T):
        r = transport.allocate(nbytes, {})
        made.append((transport, r))
        return r

    yield make
    for transport, r in made:
        transport.release(r)


def _connect(region, tt, mode, transport=T, **options):
    ini = transport.initiator(region, {"mode": mode, **options})
    ini.connect(tt.descriptor, 5)
    return ini


def _complete(ini, n_expected: int) -> np.ndarray:
    got = []
    deadline = time.monotonic() + TIMEOUT_S
    while sum(map(len, got)) < n_expected and time.monotonic() < deadline:
        got.append(ini.poll(1.0))
    out = np.concatenate(got) if got else np.zeros(0)
    assert len(out) == n_expected, f"{len(out)} of {n_expected} completions"
    return out


def _fill(region, seed):
    a = np.frombuffer(region, np.uint8)
    a[:] = np.random.default_rng(seed).integers(0, 256, a.size, dtype=np.uint8)
    return a


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nbytes", [1024, 64 * 1024, 1 << 20, 64 << 20], ids=["1KiB", "64KiB", "1MiB", "64MiB"])
def test_sizes_unaligned_exact_bytes(regions, mode, nbytes):
    _skip_unless(mode)
    src_r, dst_r = regions(nbytes + 4096), regions(nbytes + 8192)
    src = _fill(src_r, nbytes)
    tt = TargetThread(T, dst_r, {"mode": mode})
    ini = _connect(src_r, tt, mode)
    try:
        ini.post(_batch([(7, 4093, nbytes, 3)]), 5)
        done = _complete(ini, 1)
        assert done["xfer"].tolist() == [0] and ini.outstanding() == 0
        dst = np.frombuffer(dst_r, np.uint8)
        assert np.array_equal(dst[4093 : 4093 + nbytes], src[7 : 7 + nbytes])
        assert not dst[:4093].any() and not dst[4093 + nbytes :].any()
        assert tt.guarded == [(4093, nbytes)]
        deadline = time.monotonic() + 5
        while not tt.notifies and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [n[0] for n in tt.notifies] == [3]
    finally:
        ini.close()
        tt.stop()


@pytest.mark.parametrize("mode", MODES)
def test_batches_of_1024_several_in_flight(regions, mode):
    _skip_unless(mode)
    rng = np.random.default_rng(5)
    n_batches, per = 3, 1024
    sizes = rng.integers(1, 9000, n_batches * per)
    dst_offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]) + 3  # disjoint, unaligned
    src_offs = rng.integers(0, 50_000, sizes.size)
    total = int(dst_offs[-1] + sizes[-1] + 16)
    src_r, dst_r = regions(60_000 + 9000), regions(total)
    src = _fill(src_r, 1)
    tt = TargetThread(T, dst_r, {"mode": mode, "queue_depth": 256})
    ini = _connect(src_r, tt, mode, queue_depth=256)
    try:
        for b in range(n_batches):  # all posted before any poll: several chains in flight/queued
            sl = slice(b * per, (b + 1) * per)
            batch = _batch(zip(src_offs[sl], dst_offs[sl], sizes[sl], [-1] * per))
            batch["xfer"] += b * per
            ini.post(batch, 5)
        assert ini.outstanding() == n_batches * per
        done = _complete(ini, n_batches * per)
        assert sorted(done["xfer"].tolist()) == list(range(n_batches * per))
        dst = np.frombuffer(dst_r, np.uint8)
        expect = np.zeros_like(dst)
        for s, d, n in zip(src_offs, dst_offs, sizes):
            expect[d : d + n] = src[s : s + n]
        assert np.array_equal(dst, expect)
        dp = ini.data_path()
        assert ini.inflight == 254  # queue_depth 256: at most 254 writes per chain
        assert dp["chains"] >= -(-n_batches * per // 254)  # <= 254 writes per io_uring_submit
        assert dp["writes"] == n_batches * per
    finally:
        ini.close()
        tt.stop()


def test_send_zc_reports_kernel_copied_everything_on_loopback(regions):
    _skip_unless("send_zc")
    src_r, dst_r = regions(8 << 20), regions(8 << 20)
    _fill(src_r, 2)
    tt = TargetThread(T, dst_r, {"mode": "send_zc"})
    ini = _connect(src_r, tt, "send_zc")
    try:
        n = 32
        ini.post(_batch([(i << 18, i << 18, 1 << 18, -1) for i in range(n)]), 5)
        _complete(ini, n)
        dp = ini.data_path()
        # one SENDMSG_ZC (and one notification) per SQE; an SQE carries up to 512 writes
        assert dp["writes"] == n and 1 <= dp["send_sqes"] <= n
        assert dp["zc_notifications"] == dp["send_sqes"]
        assert dp["copied_notifications"] == dp["send_sqes"] and dp["copied_fraction"] == 1.0
        assert dp["zero_copy"] is False and "copied 100%" in dp["description"]
        assert bytes(dst_r) == bytes(src_r)
    finally:
        ini.close()
        tt.stop()


def test_send_mode_reports_copy(regions):
    _skip_unless("send")
    src_r, dst_r = regions(4096), regions(4096)
    tt = TargetThread(T, dst_r, {})
    ini = _connect(src_r, tt, "send")
    try:
        ini.post(_batch([(0, 0, 4096, -1)]), 5)
        _complete(ini, 1)
        dp = ini.data_path()
        assert dp["zero_copy"] is False and dp["zc_notifications"] == 0 and dp["submits"] >= 1
    finally:
        ini.close()
        tt.stop()


@pytest.mark.parametrize("mode", MODES)
def test_out_of_region_write_rejected_region_untouched(regions, mode):
    _skip_unless(mode)
    src_r, dst_r = regions(1 << 20), regions(64 * 1024)
    _fill(src_r, 3)
    tt = TargetThread(T, dst_r, {"mode": mode})
    ini = _connect(src_r, tt, mode)
    try:
        ini.post(_batch([(0, 60 * 1024, 8192, -1)]), 5)
        err = tt.wait_error()
        assert isinstance(err, ProtocolError)
        assert "outside registered region of 65536 bytes" in str(err)
        assert not np.frombuffer(dst_r, np.uint8).any()
        assert tt.guarded == []
        with pytest.raises(TransportError):
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                ini.poll(0.5)
    finally:
        ini.close()
        tt.stop()


def _raw_hello(tt, token: str | None = None) -> socket.socket:
    """A raw socket that answers the target's CHALLENGE with a HELLO proving `token` (the
    descriptor's by default)."""
    s = socket.create_connection((tt.descriptor["host"], tt.descriptor["port"]), timeout=5)
    want = framing.HEADER_SIZE + framing.NONCE_BYTES
    challenge = b""
    while len(challenge) < want:
        chunk = s.recv(want - len(challenge))
        assert chunk, "target closed before its CHALLENGE"
        challenge += chunk
    nonce = challenge[framing.HEADER_SIZE:]
    s.sendall(handshake.encode_hello(token or tt.descriptor["token"], nonce, "raw", 0, 1))
    return s


def test_malformed_frame_rejected_region_untouched(regions):
    _skip_unless("send")
    dst_r = regions(64 * 1024)
    tt = TargetThread(T, dst_r, {})
    s = _raw_hello(tt)
    try:
        s.sendall(b"XX" + bytes(30) + b"\xff" * 4096)
        err = tt.wait_error()
        assert isinstance(err, ProtocolError) and "bad frame magic" in str(err)
        assert not np.frombuffer(dst_r, np.uint8).any()
        s.settimeout(5)
        reply = s.recv(4096)  # the target says why before closing
        h = framing.decode_header(reply[: framing.HEADER_SIZE])
        assert h.type == framing.ERROR and b"bad frame magic" in reply
    finally:
        s.close()
        tt.stop()


def test_out_of_sequence_and_bad_token_rejected(regions):
    _skip_unless("send")
    dst_r = regions(4096)
    tt = TargetThread(T, dst_r, {})
    s = _raw_hello(tt)
    try:
        s.sendall(framing.encode_write(0, 16, seq=2) + b"x" * 16)
        err = tt.wait_error()
        assert isinstance(err, ProtocolError) and "out of sequence" in str(err)
        assert not np.frombuffer(dst_r, np.uint8).any()
    finally:
        s.close()
        tt.stop()
    tt = TargetThread(T, dst_r, {})
    s = _raw_hello(tt, token="not-the-token")
    try:
        s.sendall(framing.encode_write(0, 16, 1) + b"y" * 16)
        reply = s.recv(4096)  # a stranger: told why, dropped, counted; the run goes on
        assert b"HELLO with a wrong proof of the run token" in reply
        assert tt.wait_error(0.3) is None
        assert not np.frombuffer(dst_r, np.uint8).any()
    finally:
        s.close()
        tt.stop()
    assert tt.target.data_path()["strangers"] == {"bad_proof": 1}


def _target_child(q, nbytes):
    region = T.allocate(nbytes, {})
    tgt = T.target(region, {})
    q.put(tgt.listen("127.0.0.1", 5))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tgt.progress(0.1)


def test_target_death_gives_transport_error_in_bounded_time(regions):
    _skip_unless("send")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_target_child, args=(q, 64 << 20), daemon=True)
    child.start()
    try:
        desc = q.get(timeout=10)
        src_r = regions(64 << 20)
        ini = T.initiator(src_r, {})
        ini.connect(desc, 5)
        ini.post(_batch([(i << 20, i << 20, 1 << 20, -1) for i in range(64)]), 5)
        os.kill(child.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="peer gone|ECONNRESET|EPIPE|closed"):
            while time.monotonic() - t0 < TIMEOUT_S:
                ini.poll(0.5)
        assert time.monotonic() - t0 < TIMEOUT_S
        ini.close()
    finally:
        child.kill()
        child.join(10)


def test_initiator_death_gives_transport_error_on_target(regions):
    _skip_unless("send")
    dst_r = regions(1 << 20)
    tt = TargetThread(T, dst_r, {})
    s = _raw_hello(tt)
    s.sendall(framing.encode_write(0, 1 << 20, seq=1) + b"z" * 1000)
    s.close()  # dies mid-write
    err = tt.wait_error()
    assert isinstance(err, TransportError) and not isinstance(err, ProtocolError)
    assert "cut short" in str(err) and "peer gone" in str(err)
    tt.stop()


def test_clean_close_marks_peers_closed(regions):
    _skip_unless("send")
    src_r, dst_r = regions(4096), regions(4096)
    tt = TargetThread(T, dst_r, {})
    ini = _connect(src_r, tt, "send")
    ini.post(_batch([(0, 0, 100, -1)]), 5)
    _complete(ini, 1)
    ini.close()
    deadline = time.monotonic() + 5
    while not tt.target.peers_closed() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tt.target.peers_closed() and tt.error is None
    tt.stop()


# -- interop with the tcp transport (same wire format) ---------------------------------------
def _tcp():
    try:
        return registry.get_transport("tcp")
    except ImportError as exc:
        pytest.skip(f"tcp transport not available yet: {exc}")


@pytest.mark.parametrize("direction", ["iouring->tcp", "tcp->iouring"])
def test_interop_with_tcp(regions, direction):
    _skip_unless("send")
    tcp = _tcp()
    cap = tcp.probe({})
    if not cap.available:
        pytest.skip(cap.reason)
    ini_t, tgt_t = (T, tcp) if direction == "iouring->tcp" else (tcp, T)
    n = 2 << 20
    src_r, dst_r = regions(n, ini_t), regions(n, tgt_t)
    src = _fill(src_r, 9)
    tt = TargetThread(tgt_t, dst_r, {})
    ini = ini_t.initiator(src_r, {})
    ini.connect(tt.descriptor, 5)
    try:
        ini.post(_batch([(i * 65536 + 1, i * 65536, 65535, -1) for i in range(32)]), 5)
        _complete(ini, 32)
        dst = np.frombuffer(dst_r, np.uint8)
        for i in range(32):
            assert np.array_equal(dst[i * 65536 : i * 65536 + 65535], src[i * 65536 + 1 : i * 65536 + 65536])
    finally:
        ini.close()
        tt.stop()


def test_dribbled_frames_short_reads_mid_payload_and_mid_header(regions):
    """The target receives [payload rest, next header] without MSG_WAITALL: a stream cut at
    every awkward place (mid-payload, mid-header, header split over payload reads) must
    still place every byte exactly once, in order, and a bad header behind good writes must
    be rejected before any byte of its payload lands."""
    _skip_unless("send")
    dst_r = regions(1 << 16)
    tt = TargetThread(T, dst_r, {})
    s = _raw_hello(tt)
    try:
        payloads = [bytes([i + 1]) * n for i, n in enumerate((5000, 1, 32, 33, 40000))]
        stream, off = b"", 0
        for seq, p in enumerate(payloads, start=1):
            stream += framing.encode_write(off, len(p), seq, notify_request=seq if seq == 3 else None) + p
            off += len(p)
        bad = framing.encode_write(60000, 1 << 20, len(payloads) + 1)  # out of region
        stream += bad + b"\xee" * 1000
        # cut points: inside the first payload, inside the second header, 10 bytes into a
        # header that follows a payload, and so on
        cuts = sorted({7, 32 + 2500, 32 + 5000 + 10, 32 + 5000 + 32 + 1 + 20, 5200, 9000, 30000,
                       len(stream) - 1000 - 16})
        prev = 0
        for c in cuts + [len(stream)]:
            s.sendall(stream[prev:c])
            prev = c
            time.sleep(0.02)
        err = tt.wait_error()
        assert isinstance(err, ProtocolError) and "outside registered region" in str(err)
        placed = sorted(tt.placed)
        assert [(x, d, n) for x, d, n, _ in placed] == [
            (i, sum(map(len, payloads[:i])), len(p)) for i, p in enumerate(payloads)]
        got = np.frombuffer(dst_r, np.uint8)
        assert bytes(got[:off]) == b"".join(payloads)
        assert not got[off:].any()  # nothing of the rejected write landed
        assert [n for n, _ in tt.notifies] == [3]
        assert tt.guarded == [(d, n) for _, d, n, _ in placed]
    finally:
        s.close()
        tt.stop()


@pytest.mark.parametrize("mode", ["send", "send_zc"])
def test_chain_split_over_several_sendmsg_sqes(regions, mode, monkeypatch):
    """Several SQEs per chain (small WRITES_PER_SQE): every write lands, in send_zc one
    notification per SQE and no write completes before its SQE's notification."""
    _skip_unless(mode)
    from pytest_kvfabric.transports import iouring_initiator as mod

    monkeypatch.setattr(mod, "WRITES_PER_SQE", 3)
    src_r, dst_r = regions(1 << 20), regions(1 << 20)
    _fill(src_r, 7)
    tt = TargetThread(T, dst_r, {})
    ini = _connect(src_r, tt, mode)
    try:
        n = 20
        ini.post(_batch([(i << 15, i << 15, (i + 1) * 1000, -1) for i in range(n)]), 5)
        _complete(ini, n)
        dp = ini.data_path()
        assert dp["chains"] == 1 and dp["send_sqes"] == 7  # 20 writes, 3 per SQE
        if mode == "send_zc":
            assert dp["zc_notifications"] == dp["send_sqes"]
        src, dst = np.frombuffer(src_r, np.uint8), np.frombuffer(dst_r, np.uint8)
        for i in range(n):
            o, k = i << 15, (i + 1) * 1000
            assert bytes(dst[o:o + k]) == bytes(src[o:o + k])
    finally:
        ini.close()
        tt.stop()
