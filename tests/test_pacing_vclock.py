"""The prefill pacing loop on a virtual clock: exact, repeatable timing assertions.

`prefill.time` is replaced by a clock that advances 1 µs per reading and jumps on sleep,
and the initiator completes each write a fixed hold after its post on that clock. No wall
clock is involved, so these tests can assert lateness in (virtual) microseconds.
"""
from __future__ import annotations

import time as _time
from typing import Any

import numpy as np
import pytest

from pytest_kvfabric.emulator.plan import REQUEST_DTYPE, TRANSFER_DTYPE, TransferPlan
from pytest_kvfabric.endpoint import pattern, slotbook
from pytest_kvfabric.endpoint import prefill as prefill_mod
from pytest_kvfabric.endpoint.prefill import PrefillOptions, run_prefill
from pytest_kvfabric.transports.base import COMPLETION_DTYPE

from prefill_harness import record_stamps

US = 1_000


class VirtualClock:
    """Stands in for the `time` module inside prefill.py."""

    def __init__(self) -> None:
        self.t = 10**12

    def monotonic_ns(self) -> int:
        self.t += US  # every reading costs 1 µs, so busy-waits end
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += int(seconds * 1e9)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


class HoldingInitiator:
    """Completes writes in order, `hold_ns` after their post; records what it saw."""

    def __init__(self, clock: VirtualClock, plan: TransferPlan, src: np.ndarray, keys: np.ndarray,
                 hold_ns: int, post_cost_ns: int = 0) -> None:
        self.clock, self.plan, self.src, self.keys, self.hold = clock, plan, src, keys, hold_ns
        self.post_cost = post_cost_ns  # virtual time each post() call takes (the hand-off)
        self.queue: list[tuple[int, int]] = []  # (due, xfer)
        self.posted_at: dict[int, int] = {}  # by our clock, not the loop's records
        self.max_writes = self.max_bytes = 0
        self.stamped_before_post = True
        self.slot_rule_broken: list[tuple[int, int]] = []  # (posted, in flight) overlapping pairs

    def post(self, batch: np.ndarray, timeout_s: float) -> None:
        T = self.plan.transfers
        nb = T["nbytes"]
        for x in batch["xfer"].tolist():
            for _, y in self.queue:  # the slot rule: no overlap with a write still in flight
                for f in ("src_off", "dst_off"):
                    a, b = int(T[f][x]), int(T[f][y])
                    if a < b + int(nb[y]) and b < a + int(nb[x]):
                        self.slot_rule_broken.append((x, y))
        for x, s in zip(batch["xfer"].tolist(), batch["src_off"].tolist()):
            self.queue.append((self.clock.t + self.hold, x))
            self.posted_at[x] = self.clock.t
            self.stamped_before_post &= self.src[s:s + 8].tobytes() == self.keys[x][:8].tobytes()
        self.max_writes = max(self.max_writes, len(self.queue))
        self.max_bytes = max(self.max_bytes, int(sum(int(nb[x]) for _, x in self.queue)))
        self.clock.t += self.post_cost

    def poll(self, timeout_s: float) -> np.ndarray:
        if self.queue and self.queue[0][0] <= self.clock.t:
            _, x = self.queue.pop(0)
            out = np.zeros(1, COMPLETION_DTYPE)
            out["xfer"], out["t_ns"] = x, self.clock.t
            return out
        # Wait as epoll would: until the next completion or the timeout, whichever is first.
        step = int(timeout_s * 1e9) if timeout_s > 0 else US
        self.clock.t = min(self.queue[0][0], self.clock.t + step) if self.queue else self.clock.t + step
        return np.zeros(0, COMPLETION_DTYPE)

    def outstanding(self) -> int:
        return len(self.queue)


def _plan(requests: list[list[int]], page: int = 256, prefill_ns: int = 1_000, slots: int = 0) -> TransferPlan:
    """One row per entry (its ready_ns); every row has its own source and destination page,
    or, with `slots`, row i uses page i % slots on both sides (the slot rule then blocks)."""
    n = sum(map(len, requests))
    t = np.zeros(n, TRANSFER_DTYPE)
    r = np.zeros(len(requests), REQUEST_DTYPE)
    i = 0
    for q, readies in enumerate(requests):
        r[q]["request"], r[q]["first"], r[q]["count"] = q, i, len(readies)
        r[q]["nbytes"], r[q]["prefill_ns"] = len(readies) * page, prefill_ns
        for ready in readies:
            t[i]["request"], t[i]["block"], t[i]["ready_ns"] = q, i, ready
            t[i]["src_off"] = t[i]["dst_off"] = (i % slots if slots else i) * page
            t[i]["nbytes"] = page
            i += 1
    region = (slots or n) * page
    return TransferPlan(t, r, 1, 1, region, region, page, page)


@pytest.fixture(params=["native", "python"])
def hot_path(request) -> str:
    """Every test here runs the loop over both slot books (the C one and the Python one)."""
    if request.param == "native" and slotbook.NativeSlotBook is None:
        pytest.skip("the C extension pytest_kvfabric.endpoint._fast is not built (no compiler at install)")
    return request.param


class ShortWaitInitiator(HoldingInitiator):
    """Says it spins out sub-millisecond waits itself (as the stream transports do)."""

    spins_short_waits = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.short_timeouts: list[float] = []

    def poll(self, timeout_s: float) -> np.ndarray:
        if 0 < timeout_s < 1e-3:
            self.short_timeouts.append(timeout_s)
        return super().poll(timeout_s)


def _run(monkeypatch, requests, hold_ns=50 * US, stamp_log: dict | None = None, post_cost_ns=0,
         hot_path: str = "python", slots: int = 0, initiator_cls: type = HoldingInitiator, **opts):
    clock = VirtualClock()
    monkeypatch.setattr(prefill_mod, "time", clock)
    if stamp_log is not None:
        record_stamps(monkeypatch, lambda: clock.t, stamp_log)
    plan = _plan(requests, slots=slots)
    keys = pattern.row_keys(5, plan.transfers)
    src = pattern.base_pattern(5, plan.src_region_bytes).copy()
    ini = initiator_cls(clock, plan, src, keys, hold_ns, post_cost_ns)
    m = run_prefill(plan, ini, src, keys, PrefillOptions(pacing="emulated", timeout_s=10, hot_path=hot_path, **opts))
    assert m["hot_path"] == hot_path
    T = plan.transfers
    ready = m["req_start_ns"][T["request"].astype(int)] + T["ready_ns"].astype(np.int64)
    posted = np.array([ini.posted_at[i] for i in range(len(T))])
    return ini, m, ready, posted


@pytest.mark.parametrize("stage_ns", [0, prefill_mod.STAGE_NS])
def test_groups_go_out_at_their_ready_time_and_never_before(monkeypatch, hot_path, stage_ns):
    # Groups of 3 rows 5 ms apart, each completed 50 µs after its post: between groups the
    # loop has nothing in flight and sleeps. Staged, it wakes early enough to build the next
    # group first, so the post leaves within a few (virtual) µs of the ready time.
    stamped: dict[int, int] = {}
    groups = [g * 5_000 * US for g in range(6) for _ in range(3)]
    ini, m, ready, posted = _run(monkeypatch, hot_path=hot_path, requests=[groups], stamp_log=stamped, stage_ns=stage_ns)
    assert ini.stamped_before_post and (posted >= ready).all()
    assert (m["post_ns"] == posted).all()  # the loop records the time it handed the batch over
    st = np.array([stamped[i] for i in range(len(ready))])
    late = posted - ready
    if stage_ns:
        assert (st < ready).all(), "each group is built before its ready time"
        assert late.max() <= 5 * US, late.tolist()
    else:
        assert (st >= ready).all()


@pytest.mark.parametrize("initiator_cls", [HoldingInitiator, ShortWaitInitiator])
def test_a_wait_under_a_millisecond_with_writes_in_flight_ends_at_the_ready_time(monkeypatch, hot_path,
                                                                                 initiator_cls):
    # Groups 300 µs apart, each write completing 2 ms after its post: the loop always has
    # writes in flight and less than a millisecond to wait. Whether it polls in its own spin
    # loop or hands the wait to a transport that spins short waits out, it must come back at
    # the ready time (a later end makes every group late) and never post early.
    groups = [g * 300 * US for g in range(10) for _ in range(2)]
    ini, m, ready, posted = _run(monkeypatch, hot_path=hot_path, requests=[groups], hold_ns=2_000 * US,
                                 max_inflight=64, initiator_cls=initiator_cls)
    late = posted - ready
    assert (late >= 0).all() and late.max() <= 5 * US, late.tolist()
    if initiator_cls is ShortWaitInitiator:
        assert ini.short_timeouts, "the sub-millisecond waits went to the transport"


def test_a_staged_group_respects_the_byte_window(monkeypatch, hot_path):
    # 8 rows of 256 B ready together, 512 B allowed in flight: staging may not send the whole
    # group at once (it is staged only if it fits; otherwise the usual path splits it).
    ini, _, ready, posted = _run(monkeypatch, hot_path=hot_path, requests=[[0] * 8], hold_ns=500 * US, max_inflight=8,
                                 max_inflight_bytes=512)
    assert ini.max_bytes <= 512 and (posted >= ready).all()


def test_a_row_ready_before_a_staged_group_is_not_held_behind_it(monkeypatch, hot_path):
    # Closed loop, 2 at a time; every write completes 150 µs after its post. Request 1's pair
    # (ready at ~t0+300 µs) is staged at ~t0+100 µs. Request 0 completes at ~t0+150 µs and
    # admits request 2, whose row is ready 20 µs later: it must go out then, not after the pair.
    ini, _, ready, posted = _run(monkeypatch, hot_path=hot_path, requests=[[0], [300 * US, 300 * US], [20 * US]], hold_ns=150 * US,
                                 closed_loop=True, concurrency=2, max_inflight=8)
    late = posted - ready
    assert (late >= 0).all() and late[3] <= 5 * US, late.tolist()
    assert posted[3] < posted[1]


def test_rows_ready_while_a_group_is_staged_count_against_the_write_window(monkeypatch, hot_path):
    # Room for 2 writes: request 1's row is staged while request 0's is in flight; request 0's
    # completion admits request 2 with two rows ready at once. Only one of them may go out,
    # because the staged row holds the other place (it goes out at ~t0+300 µs, while request
    # 2's rows are still in flight).
    ini, _, ready, posted = _run(monkeypatch, hot_path=hot_path, requests=[[0], [300 * US], [20 * US, 20 * US]], hold_ns=150 * US,
                                 closed_loop=True, concurrency=2, max_inflight=2)
    assert ini.max_writes <= 2 and (posted >= ready).all()


def test_the_loop_reports_how_long_each_post_call_held_it(monkeypatch, hot_path):
    # Each hand-off takes 300 virtual µs (as a sendmsg that runs the receiver's stack would):
    # post_call_ns shows it, and the next group, 200 µs after the previous one, is late by
    # the rest of that call, never earlier than its ready time.
    groups = [g * 200 * US for g in range(5) for _ in range(2)]
    ini, m, ready, posted = _run(monkeypatch, hot_path=hot_path, requests=[groups], hold_ns=20 * US, post_cost_ns=300 * US)
    calls = m["post_call_ns"]
    assert len(calls) >= 3 and (calls >= 300 * US).all() and (calls <= 302 * US).all(), calls.tolist()
    assert (posted >= ready).all() and (posted - ready).max() >= 90 * US


def test_groups_sharing_slots_wait_for_them_and_never_overlap_in_flight(monkeypatch, hot_path):
    # 3 pages for groups of 2 rows: each group's second row reuses a page of the group before
    # it, which is still in flight when the group is staged. Staging must roll back (claim,
    # conflict, release), the ready path must hold the blocked row and the rows behind it on
    # the same page, and every row still goes out, after its ready time, with nothing
    # overlapping in flight.
    groups = [g * 100 * US for g in range(8) for _ in range(2)]
    ini, m, ready, posted = _run(monkeypatch, hot_path=hot_path, requests=[groups], hold_ns=150 * US, slots=3)
    assert ini.slot_rule_broken == []
    assert m["requests_completed"] == 1 and sorted(ini.posted_at) == list(range(16))
    assert (posted >= ready).all() and ini.stamped_before_post
    assert ((posted - ready) > 0).any(), "no row waited for its slot: the test lost its point"


@pytest.mark.parametrize("overlap_us", [0, 600, 1_000])
def test_batched_requests_share_the_emulated_gpu(monkeypatch, overlap_us):
    # Two requests of 1 ms prefill each, open loop, both arrived at once. Request 0 shares
    # overlap_us of its prefill with request 1 (continuous batching, emulator/batching.py), so
    # the emulated GPU is free for request 1 after 1 ms - overlap, not after the whole 1 ms.
    clock = VirtualClock()
    monkeypatch.setattr(prefill_mod, "time", clock)
    plan = _plan([[1_000 * US], [1_000 * US]])
    plan.requests["prefill_ns"] = 1_000 * US
    plan.requests["overlap_ns"][0] = overlap_us * US
    keys = pattern.row_keys(5, plan.transfers)
    src = pattern.base_pattern(5, plan.src_region_bytes).copy()
    ini = HoldingInitiator(clock, plan, src, keys, 50 * US)
    m = run_prefill(plan, ini, src, keys, PrefillOptions(pacing="emulated", closed_loop=False, timeout_s=10,
                                                         hot_path="python"))
    start = m["req_start_ns"]
    assert start[1] - start[0] == (1_000 - overlap_us) * US
