"""engine_link: announcements (Hypothesis) and the two base halves over a real side link.

The halves are driven through `MemEngine`, a test double for a transfer engine (clearly not
one): it "writes" a batch with a memmove between two in-process regions and delivers the
announcement as the engine's notification. The side link is a real TCP connection on
loopback. The real engines (Mooncake, NIXL) are tested in their plug-ins' own tests.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.errors import ProtocolError, TransportError
from pytest_kvfabric.transports.base import XFER_DTYPE
from pytest_kvfabric.transports.engine_link import (
    Announcements, EngineInitiator, EngineTarget, pack_announcement, unpack_announcement,
)

REGION = 1 << 16


def batch_of(rows: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    b = np.zeros(len(rows), XFER_DTYPE)
    for i, (x, s, d, n, r) in enumerate(rows):
        b[i] = (x, s, d, n, r)
    return b


rows = st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, REGION // 2), st.integers(0, REGION // 2),
                          st.integers(0, REGION // 2), st.integers(-1, 2**31)), max_size=40)


@settings(max_examples=80, deadline=None)
@given(rows, st.integers(0, 2**32))
def test_announcement_round_trip(r, seq):
    b = batch_of(r)
    got_seq, rec = unpack_announcement(pack_announcement(seq, b), REGION)
    assert got_seq == seq
    for name in ("xfer", "dst_off", "nbytes", "notify"):
        assert rec[name].tolist() == b[name].tolist()


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_is_a_protocol_error_never_a_crash(blob):
    try:
        seq, rec = unpack_announcement(blob, REGION)
    except ProtocolError:
        return
    assert blob.startswith(b"KVF1")  # only a well-formed frame may be accepted


@settings(max_examples=50, deadline=None)
@given(st.integers(0, REGION), st.integers(1, REGION))
def test_out_of_region_write_is_refused(dst, n):
    payload = pack_announcement(0, batch_of([(1, 0, dst, n, -1)]))
    if dst + n > REGION:
        with pytest.raises(ProtocolError, match="outside registered region"):
            unpack_announcement(payload, REGION)
    else:
        unpack_announcement(payload, REGION)


def test_truncated_announcement_names_the_batch():
    payload = pack_announcement(7, batch_of([(1, 0, 0, 8, -1), (2, 0, 8, 8, 3)]))
    with pytest.raises(ProtocolError, match="batch 7"):
        unpack_announcement(payload[:-1], REGION)


def test_announcements_track_out_of_order_batches_and_requests():
    ann = Announcements(REGION)
    p, n = ann.add([pack_announcement(1, batch_of([(5, 0, 64, 64, 2)]))], 10)
    assert ann.upto == 0 and p["xfer"].tolist() == [5] and n["request"].tolist() == [2]
    p, n = ann.add([pack_announcement(0, batch_of([(4, 0, 0, 64, -1)]))], 11)
    assert ann.upto == 2 and len(n) == 0 and p["t_ns"].tolist() == [11]
    with pytest.raises(ProtocolError, match="announced twice"):
        ann.add([pack_announcement(1, batch_of([(5, 0, 64, 64, 2)]))], 12)


# ------------------------------------------------------------------ the halves, MemEngine double

class MemTarget(EngineTarget):
    name = "mem"

    def engine_open(self, bind_host, timeout_s):
        self.notes: deque[bytes] = deque()
        return {"mem_id": id(self)}

    def engine_notifications(self):
        out = []
        while self.notes:
            out.append(self.notes.popleft())
        return out

    def engine_data_path(self):
        return {"description": "memmove test double"}

    def engine_close(self):
        pass


class MemInitiator(EngineInitiator):
    name = "mem"
    targets: dict[int, MemTarget] = {}

    def engine_connect(self, descriptor, timeout_s):
        self.t = self.targets[descriptor["mem_id"]]
        self.done: list[tuple[int, int]] = []
        return {"hello": 1}

    def engine_submit(self, seq, batch, announcement, timeout_s):
        src = np.frombuffer(self.region, np.uint8)
        dst = np.frombuffer(self.t.region, np.uint8)
        for r in batch:
            s, d, n = int(r["src_off"]), int(r["dst_off"]), int(r["nbytes"])
            dst[d:d + n] = src[s:s + n]
        self.t.notes.append(announcement)
        self.done.append((seq, time.monotonic_ns()))

    def engine_reap(self, timeout_s):
        out, self.done = self.done, []
        return out

    def engine_data_path(self):
        return {"description": "memmove test double"}

    def engine_close(self):
        pass


@pytest.fixture
def pair():
    src, dst = bytearray(REGION), bytearray(REGION)
    src[:] = bytes(range(256)) * (REGION // 256)
    t = MemTarget(memoryview(dst), {"token": "s3cret"})
    desc = t.listen("127.0.0.1", 5.0)
    MemInitiator.targets[desc["mem_id"]] = t
    i = MemInitiator(memoryview(src), {"token": "s3cret"})
    i.connect(desc, 5.0)
    yield t, i, src, dst
    i.close()
    t.close()


def drain(t, until, budget_s=5.0):
    placed, notes = [], []
    end = time.monotonic() + budget_s
    while time.monotonic() < end and not until(placed, notes):
        p, n = t.progress(0.05)
        placed += p["xfer"].tolist()
        notes += n["request"].tolist()
    return placed, notes


def test_batches_are_placed_announced_completed_and_closed(pair):
    t, i, src, dst = pair
    i.post(batch_of([(0, 0, 0, 4096, -1), (1, 4096, 4096, 4096, 9)]), 5.0)
    placed, notes = drain(t, lambda p, n: len(p) == 2)
    assert sorted(placed) == [0, 1] and notes == [9]
    assert dst[:8192] == src[:8192]
    assert sorted(i.poll(1.0)["xfer"].tolist()) == [0, 1] and i.outstanding() == 0
    assert not t.peers_closed()
    i.close()
    end = time.monotonic() + 5
    while not t.peers_closed() and time.monotonic() < end:
        time.sleep(0.01)
    assert t.peers_closed()
    assert t.data_path()["batches_announced"] == 1


def test_reuse_waits_for_the_guard_that_sees_the_old_page_first(pair):
    t, i, src, dst = pair
    seen: list[tuple[int, int, bytes]] = []
    t.write_guard = lambda off, n: seen.append((off, n, bytes(dst[off:off + n])))
    i.post(batch_of([(0, 0, 0, 1024, -1)]), 5.0)
    drain(t, lambda p, n: len(p) == 1)
    posted = threading.Event()

    def second():
        i.post(batch_of([(1, 2048, 512, 1024, 1)]), 5.0)  # overlaps [0, 1024)
        posted.set()

    th = threading.Thread(target=second)
    th.start()
    placed, _ = drain(t, lambda p, n: posted.is_set() and len(p) == 1)
    th.join(5)
    assert placed == [1]
    assert seen == [(512, 1024, bytes(src[512:1024]) + bytes(512))]  # old bytes, before the overwrite
    assert t.data_path()["guard_round_trips"] == 1


def test_out_of_region_post_is_refused_before_the_engine(pair):
    t, i, src, dst = pair
    with pytest.raises(TransportError, match="remote range"):
        i.post(batch_of([(3, 0, REGION - 8, 16, -1)]), 1.0)


def test_bad_token_is_refused():
    t = MemTarget(memoryview(bytearray(64)), {"token": "right"})
    desc = t.listen("127.0.0.1", 5.0)
    MemInitiator.targets[desc["mem_id"]] = t
    i = MemInitiator(memoryview(bytearray(64)), {"token": "wrong"})
    try:
        with pytest.raises(TransportError, match="bad token"):
            i.connect(desc, 5.0)
    finally:
        i.close()
        t.close()


def test_initiator_closing_with_unfinished_writes_fails_the_target_at_once(pair):
    t, i, src, dst = pair
    i.engine_submit = lambda seq, batch, ann, timeout_s: None  # an engine that never finishes
    i.post(batch_of([(0, 0, 0, 64, 0)]), 1.0)
    assert i.outstanding() == 1
    i.close()
    end = time.monotonic() + 5
    with pytest.raises(TransportError, match="failed .no reason given.; it closed with writes unfinished"):
        while time.monotonic() < end:
            t.progress(0.05)


class LazyInitiator(MemInitiator):
    """An engine that sends a notification only while the caller drives it (reaps), as
    NIXL's UCX backend does without its own progress thread."""

    def engine_submit(self, seq, batch, announcement, timeout_s):
        super().engine_submit(seq, batch, announcement, timeout_s)
        self.held = getattr(self, "held", []) + [self.t.notes.pop()]

    def engine_reap(self, timeout_s):
        while getattr(self, "held", []):
            self.t.notes.append(self.held.pop(0))
        return super().engine_reap(timeout_s)


def test_a_guard_wait_keeps_driving_an_engine_that_needs_the_senders_progress():
    src, dst = bytearray(REGION), bytearray(REGION)
    t = MemTarget(memoryview(dst), {"token": "k"})
    desc = t.listen("127.0.0.1", 5.0)
    MemInitiator.targets[desc["mem_id"]] = t
    i = LazyInitiator(memoryview(src), {"token": "k"})
    i.connect(desc, 5.0)
    try:
        i.post(batch_of([(0, 0, 0, 1024, -1)]), 5.0)  # its notification waits in the engine
        errors: list[Exception] = []

        def reuse():
            try:
                i.post(batch_of([(1, 2048, 512, 1024, 1)]), 5.0)  # overlaps: needs a guard ack
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        th = threading.Thread(target=reuse)
        th.start()
        placed, _ = drain(t, lambda p, n: len(p) == 1 and not th.is_alive(), budget_s=8.0)
        th.join(8)
        assert not errors and placed == [0]  # the guard was acked: batch 0's note got out
        for _ in range(3):  # the caller's own reaping (poll) sends batch 1's
            i.poll(0.1)
        assert drain(t, lambda p, n: len(p) == 1)[0] == [1]
    finally:
        i.close()
        t.close()
