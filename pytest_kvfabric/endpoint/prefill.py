"""The prefill pacing loop: post each KV write when its emulated layer is ready.

Clock: time.monotonic_ns() of the prefill agent. Every figure of a run is on this clock; a
write's completion is the target's ACK, so it includes half a round trip after placement.

Request timing (emulated single prefill instance, FCFS):
    arrival  open loop: t0 + arrival_ns from the plan; closed loop: the first `concurrency`
             requests arrive at t0, each later one when an earlier request's KV is complete.
    start    max(arrival, time the emulated GPU is free of the previous prefill) (queueing):
             its start + prefill_ns - overlap_ns (batched prefills share steps).
    ready    start + ready_ns of the row; the row is posted at or after that time.
Pacing "none" ignores arrivals and ready times: every row is ready at t0 and posts are
bounded only by the in-flight window and the slot rule (capacity measurement).

Slot rule: the pool is bounded, so plan rows reuse physical slots. A write is never posted
while an earlier write overlapping its source range or its destination range is in flight
(the source is being read by the transport; the destination page is not verified yet).
The rule, key stamping and completion bookkeeping live in the slot book (slotbook.py:
native C where built, Python otherwise, same answers); this loop decides only *when*.

Staging (emulated pacing): when nothing is waiting, the next group of rows (those sharing the
earliest ready time) is checked against the slot rule, stamped and built into its batch up to
STAGE_NS before that time, and posted the moment it comes. Building costs 40 µs at p50 and
over 100 µs at p99 on a virtual host (cold caches after a wake-up); done at the ready time, it
was all post lateness. A group that cannot be staged whole (window full, slot busy) is posted
the usual way once ready.
"""
from __future__ import annotations

import ctypes
import heapq
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..emulator.plantypes import TransferPlan
from ..errors import TransportError
from ..transports.base import XFER_DTYPE, Initiator
from .slotbook import make_book

SPIN_NS = 50_000  # busy-wait at least the last 50 µs before a ready time; sleep before that ...
MAX_SPIN_NS = 2_000_000  # ... and up to 2 ms where wake-ups are seen to overshoot (loaded or virtual host)
SPIN_TAIL_DECAY = 0.995  # per wake-up: a 3 ms overshoot still counts ~140 wake-ups later
# Writes in flight: 256 x 64 KiB = 16 MiB keeps a loopback or veth pipe full once the agents'
# per-write cost is native; 64 (4 MiB at 64 KiB) left the sender waiting for ACKs 36 % of its
# time (12 of 12 interleaved rounds faster at 256; BENCHMARKS.md). Larger writes are bounded
# by max_inflight_bytes first.
MAX_INFLIGHT = 256
STAGE_NS = 200_000  # build the next group's batch this long before its ready time (see run_prefill)


class SpinWindow:
    """How long before a ready time the pacing loop stops sleeping and busy-waits.

    The window tracks the recent *tail* of wake-up overshoot (a decaying maximum), not its
    mean: lateness is judged at p99, and on a virtual host most sleeps wake within 30 µs
    while one in a hundred wakes milliseconds late. Pure state; the caller measures."""

    __slots__ = ("floor_ns", "cap_ns", "decay", "tail_ns", "ns")

    def __init__(self, floor_ns: int = SPIN_NS, cap_ns: int = MAX_SPIN_NS,
                 decay: float = SPIN_TAIL_DECAY) -> None:
        self.floor_ns, self.cap_ns, self.decay = int(floor_ns), int(cap_ns), float(decay)
        self.tail_ns = 0.0
        self.ns = self.floor_ns

    def note(self, late_ns: int) -> None:
        """A sleep meant to end at some time ended late_ns after it (negative: early)."""
        self.tail_ns = max(float(max(late_ns, 0)), self.tail_ns * self.decay)
        self.ns = int(min(self.floor_ns + self.tail_ns, self.cap_ns))
_PR_SET_TIMERSLACK = 29


def tighten_timer_slack() -> None:
    """Make sleep/select wake within a few µs of the asked time (default slack is 50 µs)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass
class PrefillOptions:
    pacing: str = "emulated"  # "emulated" | "none"
    closed_loop: bool = True
    concurrency: int = 1
    max_inflight: int = MAX_INFLIGHT  # writes in flight
    max_inflight_bytes: int = 64 << 20  # bytes in flight (a larger single write still goes alone)
    duration_s: float | None = None  # stop admitting new requests after this long
    timeout_s: float = 60.0
    stage_ns: int = STAGE_NS  # 0: build each batch only once its rows are ready
    hot_path: str | None = None  # "native" | "python" | None: native where built (slotbook.make_book)
    monitor: Any = None  # called once with (done_ns, req_done) so a watcher thread can report progress


def run_prefill(
    plan: TransferPlan,
    initiator: Initiator,
    src: np.ndarray,
    keys: np.ndarray,
    opts: PrefillOptions,
) -> dict[str, Any]:
    """Post every row of the plan; returns raw measurements (absolute monotonic ns)."""
    T = plan.transfers
    R = plan.requests
    n, nreq = len(T), len(R)
    src_off = T["src_off"].astype(np.int64)
    dst_off = T["dst_off"].astype(np.int64)
    nbytes = T["nbytes"].astype(np.int64)
    ready_rel = T["ready_ns"].astype(np.int64)
    row_req = T["request"].astype(np.int64)
    first = R["first"].astype(np.int64)
    count = R["count"].astype(np.int64)
    prefill_ns = R["prefill_ns"].astype(np.int64)
    # When the GPU is free for the next request: batched prefills share steps (emulator/batching.py).
    gpu_busy_ns = prefill_ns - R["overlap_ns"].astype(np.int64) if "overlap_ns" in R.dtype.names else prefill_ns
    arrival_rel = R["arrival_ns"].astype(np.int64)
    # Python lists: per-row access in the hot loop is several times faster than numpy scalars.
    l_nb, l_ready = nbytes.tolist(), ready_rel.tolist()
    l_first, l_count = first.tolist(), count.tolist()
    # Notify the decode side on each request's last row (WRITE_WITH_IMM).
    notify = np.full(n, -1, np.int64)
    has_rows = count > 0
    notify[(first + count - 1)[has_rows]] = np.flatnonzero(has_rows)

    post_ns = np.zeros(n, np.int64)
    call_ns: list[int] = []  # wall time of each post() call: how long the hand-off held the loop
    done_ns = np.zeros(n, np.int64)
    req_arrival = np.zeros(nreq, np.int64)
    req_start = np.zeros(nreq, np.int64)
    req_done = np.zeros(nreq, np.int64)
    if opts.monitor is not None:
        opts.monitor(done_ns, req_done)
    req_left = count.copy()  # rows not yet completed, per request (the book counts down)
    started = 0  # requests admitted so far (in index order)
    gpu_free = 0
    emulated = opts.pacing == "emulated"

    # Slot rule, key stamping and completion bookkeeping, per write (native where built).
    book, hot_path = make_book(src_off, dst_off, nbytes, notify, row_req, req_left, src, keys,
                               plan.src_slot_bytes, plan.dst_slot_bytes, plan.dst_region_bytes,
                               opts.hot_path)
    heap: list[tuple[int, int, int]] = []  # (absolute ready ns, request, next row)
    ready: list[int] = []  # rows ready to post, in order
    inflight = inflight_bytes = 0
    completed_rows = 0
    requests_done = 0

    now = time.monotonic_ns
    thread_ns = time.thread_time_ns
    spin_cpu_ns = 0  # CPU spent busy-waiting for ready times (reported apart from the work)
    short_waits = bool(getattr(initiator, "spins_short_waits", False))
    t0 = now() + 1_000_000  # 1 ms lead: the first rows are not late by setup jitter
    deadline = t0 + int(opts.timeout_s * 1e9)
    admit_until = t0 + int(opts.duration_s * 1e9) if opts.duration_s else None

    def admit(r: int, arrival: int) -> None:
        nonlocal gpu_free
        if emulated:
            start = max(arrival, gpu_free)
            gpu_free = start + int(gpu_busy_ns[r])
        else:
            start = arrival
        req_arrival[r] = arrival
        req_start[r] = start
        if l_count[r] > 0:
            f = l_first[r]
            heapq.heappush(heap, (start + l_ready[f] if emulated else start, r, f))

    # Admit the initial requests.
    if not emulated:
        admit_n = nreq
        for r in range(nreq):
            admit(r, t0)
    elif opts.closed_loop:
        admit_n = min(max(opts.concurrency, 1), nreq)
        for r in range(admit_n):
            admit(r, t0)
    else:
        admit_n = nreq
        for r in range(nreq):
            arrival = t0 + int(arrival_rel[r])
            if admit_until is not None and arrival > admit_until:
                admit_n = r
                break
            admit(r, arrival)
    started = admit_n
    for r in range(started):
        if l_count[r] == 0:
            req_done[r] = req_start[r]
            requests_done += 1

    batch = np.zeros(max(opts.max_inflight, 1), XFER_DTYPE)
    lead = max(int(opts.stage_ns), 0) if emulated else 0
    staged = np.zeros(max(opts.max_inflight, 1), XFER_DTYPE)
    staged_rows: list[int] = []  # built and stamped, posted at staged_at
    staged_at = 0
    early: list[int] = []  # pulled ahead of early_at but not stageable: join `ready` then
    early_at = 0
    pull_cap = max(4 * opts.max_inflight, 1024)
    target_rows = int(count[:started].sum()) if started else 0

    def stage(rows: list[int]) -> bool:
        """Claim, stamp and build rows to post later; all or nothing (no side effect on False)."""
        nonlocal inflight_bytes
        kk = len(rows)
        nb = sum(l_nb[i] for i in rows)
        # The same windows as the ready path below: a larger single write may still go alone.
        if inflight + kk > opts.max_inflight or (
            (inflight > 0 or kk > 1) and inflight_bytes + nb > opts.max_inflight_bytes
        ):
            return False
        for pos, i in enumerate(rows):
            if not book.claim(i):  # (stamping a row whose ranges are free is harmless)
                for j in rows[:pos]:
                    book.release(j)
                return False
        inflight_bytes += nb
        book.fill(staged, rows)
        return True

    def hand_off(buf: np.ndarray, k: int, t: int) -> None:
        """Post the first k writes of buf at time t; record the post times and the call's length."""
        nonlocal inflight
        post_ns[buf["xfer"][:k]] = t
        inflight += k
        initiator.post(buf[:k], max((deadline - t) / 1e9, 0.001))
        call_ns.append(now() - t)

    def on_completions(comp: np.ndarray) -> None:
        nonlocal inflight, inflight_bytes, completed_rows, requests_done, started, target_rows
        rows, nb, finished = book.complete(comp, done_ns)
        inflight -= rows
        inflight_bytes -= nb
        completed_rows += rows
        for r, t in finished:
            req_done[r] = t
            requests_done += 1
            if emulated and opts.closed_loop and started < nreq and (
                admit_until is None or t <= admit_until
            ):
                admit(started, t)
                target_rows += l_count[started]
                if l_count[started] == 0:
                    req_done[started] = t
                    requests_done += 1
                started += 1

    window = SpinWindow()

    while completed_rows < target_rows:
        t = now()
        if t > deadline:
            raise TransportError(
                f"prefill agent: timed out after {opts.timeout_s:.1f} s with {completed_rows} of "
                f"{target_rows} writes completed ({inflight} in flight)"
            )
        if staged_rows and t >= staged_at:
            k = len(staged_rows)
            staged_rows = []
            hand_off(staged, k, t)
            continue
        if early and t >= early_at:
            ready.extend(early)
            early = []
        # Pull rows whose ready time has come (pacing none: everything, up to a cap).
        while heap and heap[0][0] <= t and len(ready) < pull_cap:
            _, r, i = heapq.heappop(heap)
            ready.append(i)
            j = i + 1
            if j < l_first[r] + l_count[r]:
                heapq.heappush(heap, (req_start[r] + l_ready[j] if emulated else int(req_start[r]), r, j))
        # Stage the next group ahead of its ready time when nothing else waits.
        if lead and not ready and not staged_rows and not early and heap and heap[0][0] <= t + lead:
            at = heap[0][0]
            grp: list[int] = []
            while heap and heap[0][0] == at and len(grp) < opts.max_inflight:
                _, r, i = heapq.heappop(heap)
                grp.append(i)
                j = i + 1
                if j < l_first[r] + l_count[r]:
                    heapq.heappush(heap, (req_start[r] + l_ready[j], r, j))
            if stage(grp):
                staged_rows, staged_at = grp, at
            else:
                early, early_at = grp, at
            continue
        # Post what the window and the slot rule allow, in order; a blocked row blocks later
        # rows touching the same slots so pages of one slot go in plan order.
        k = 0
        if ready:
            k, ready, inflight_bytes = book.select(ready, batch, inflight + len(staged_rows),
                                                   opts.max_inflight, inflight_bytes, opts.max_inflight_bytes)
        if k:
            hand_off(batch, k, now())
        # Collect completions without blocking, then decide how long we may wait.
        if inflight:
            comp = initiator.poll(0.0)
            if len(comp):
                on_completions(comp)
                continue
        if k:
            continue
        t = now()
        # Next event: a staged group's post, a blocked early group, or the time to stage the
        # next one; rows of a request admitted since (closed loop) may be ready before either.
        pending = heap[0][0] if heap and len(ready) < pull_cap else None
        if staged_rows or early:
            next_ready = staged_at if staged_rows else early_at
            if pending is not None and pending < next_ready:
                next_ready = pending
        else:
            next_ready = pending - (0 if ready else lead) if pending is not None else None
        wait_ns = (next_ready - t) if next_ready is not None else 5_000_000
        spin_ns = window.ns
        if inflight:
            # Wake for a completion, or in time to spin into the next ready time. epoll waits
            # whole milliseconds, rounded up (poll(300 µs) sleeps ~1.1 ms): ask for the whole
            # milliseconds below the target and spin the rest.
            whole_ms = max(wait_ns - spin_ns, 0) // 1_000_000
            if whole_ms or next_ready is None:
                comp = initiator.poll(whole_ms / 1e3)
                if len(comp):
                    on_completions(comp)
                elif next_ready is not None:
                    window.note(now() - (t + whole_ms * 1_000_000))
                continue
            # Under a millisecond to go: poll for completions until the next event, spinning.
            # A transport that spins out short waits itself counts only the idle part; for
            # others this loop polls, and counts the whole stretch (their work in it included).
            if short_waits:
                comp = initiator.poll(max(next_ready - now(), 0) / 1e9)
            else:
                comp = initiator.poll(0.0)
                if not len(comp) and now() < next_ready:
                    c0 = thread_ns()
                    while not len(comp) and now() < next_ready:
                        comp = initiator.poll(0.0)
                    spin_cpu_ns += thread_ns() - c0
            if len(comp):
                on_completions(comp)
            continue
        if next_ready is None:
            if completed_rows >= target_rows:
                break
            raise TransportError(
                f"prefill agent: stalled with {target_rows - completed_rows} writes neither "
                f"ready nor in flight (plan or slot bookkeeping bug)"
            )
        if wait_ns > spin_ns:
            time.sleep((wait_ns - spin_ns) / 1e9)
            window.note(now() - (next_ready - spin_ns))
        if now() < next_ready:  # the last stretch: busy-wait for a punctual post
            c0 = thread_ns()
            while now() < next_ready:
                pass
            spin_cpu_ns += thread_ns() - c0  # (~1 µs: the price of reporting the spin apart)

    return {
        "t0_ns": t0,
        "post_ns": post_ns,
        "post_call_ns": np.array(call_ns, np.int64),
        "done_ns": done_ns,
        "req_arrival_ns": req_arrival,
        "req_start_ns": req_start,
        "req_done_ns": req_done,
        "requests_started": started,
        "requests_completed": requests_done,
        "hot_path": hot_path,
        "spin_cpu_ns": spin_cpu_ns + getattr(initiator, "spin_cpu_ns", 0),  # (duck-typed transports)
    }
