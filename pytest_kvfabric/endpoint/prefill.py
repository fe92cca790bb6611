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
MAX_INFLIGHT_BYTES = 64 << 20  # bytes in flight (a larger single write still goes alone)
STAGE_NS = 200_000  # build the next group's batch this long before its ready time (see PrefillPacer)


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
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES
    duration_s: float | None = None  # stop admitting new requests after this long
    timeout_s: float = 60.0
    stage_ns: int = STAGE_NS  # 0: build each batch only once its rows are ready
    hot_path: str | None = None  # "native" | "python" | None: native where built (slotbook.make_book)
    monitor: Any = None  # called once with (done_ns, req_done) so a watcher thread can report progress
    # A multi-agent run's common start (run/flows.py): the run's t0 on this agent's monotonic clock,
    # so every agent's layer ready times count from one instant; None: now + 1 ms.
    start_at_ns: int | None = None
    # Which emulated prefill GPU runs each request (an incast reference emulates several instances'
    # timelines in one sender); None: one GPU for all.
    gpu_of_request: Any = None


def run_prefill(
    plan: TransferPlan,
    initiator: Initiator,
    src: np.ndarray,
    keys: np.ndarray,
    opts: PrefillOptions,
) -> dict[str, Any]:
    """Post every row of the plan; returns raw measurements (absolute monotonic ns)."""
    return PrefillPacer(plan, initiator, src, keys, opts).run()


class PrefillPacer:
    """One run of the pacing loop: the plan's rows as lists, the in-flight windows, the request
    clock and the staged group. `run()` posts every row and returns the measurements.

    State lives in attributes: admit(), stage(), hand_off() and on_completions() change the
    windows and counters the loop reads, and a reader finds every field declared here."""

    def __init__(self, plan: TransferPlan, initiator: Initiator, src: np.ndarray, keys: np.ndarray,
                 opts: PrefillOptions) -> None:
        T = plan.transfers
        R = plan.requests
        self.opts = opts
        self.initiator = initiator
        n, self.nreq = len(T), len(R)
        src_off = T["src_off"].astype(np.int64)
        dst_off = T["dst_off"].astype(np.int64)
        nbytes = T["nbytes"].astype(np.int64)
        row_req = T["request"].astype(np.int64)
        first = R["first"].astype(np.int64)
        count = R["count"].astype(np.int64)
        self.count = count
        prefill_ns = R["prefill_ns"].astype(np.int64)
        self.prefill_ns = prefill_ns
        # When the GPU is free for the next request: batched prefills share steps (emulator/batching.py).
        self.gpu_busy_ns = (prefill_ns - R["overlap_ns"].astype(np.int64)
                            if "overlap_ns" in R.dtype.names else prefill_ns)
        self.arrival_rel = R["arrival_ns"].astype(np.int64)
        # Python lists: per-row access in the hot loop is several times faster than numpy scalars.
        self.l_nb, self.l_ready = nbytes.tolist(), T["ready_ns"].astype(np.int64).tolist()
        self.l_first, self.l_count = first.tolist(), count.tolist()
        # Notify the decode side on each request's last row (WRITE_WITH_IMM).
        notify = np.full(n, -1, np.int64)
        has_rows = count > 0
        notify[(first + count - 1)[has_rows]] = np.flatnonzero(has_rows)

        self.post_ns = np.zeros(n, np.int64)
        self.call_ns: list[int] = []  # wall time of each post() call: how long the hand-off held the loop
        self.done_ns = np.zeros(n, np.int64)
        self.req_arrival = np.zeros(self.nreq, np.int64)
        self.req_start = np.zeros(self.nreq, np.int64)
        self.req_done = np.zeros(self.nreq, np.int64)
        if opts.monitor is not None:
            opts.monitor(self.done_ns, self.req_done)
        req_left = count.copy()  # rows not yet completed, per request (the book counts down)
        self.started = 0  # requests admitted so far (in index order)
        gpu_of = opts.gpu_of_request
        self.gpu_of = [0] * self.nreq if gpu_of is None else [int(g) for g in gpu_of]
        self.gpu_free = [0] * (max(self.gpu_of) + 1 if self.gpu_of else 1)  # when each emulated GPU is free
        self.emulated = opts.pacing == "emulated"

        # Slot rule, key stamping and completion bookkeeping, per write (native where built).
        self.book, self.hot_path = make_book(src_off, dst_off, nbytes, notify, row_req, req_left, src, keys,
                                             plan.src_slot_bytes, plan.dst_slot_bytes, plan.dst_region_bytes,
                                             opts.hot_path)
        self.heap: list[tuple[int, int, int]] = []  # (absolute ready ns, request, next row)
        self.ready: list[int] = []  # rows ready to post, in order
        self.inflight = self.inflight_bytes = 0
        self.completed_rows = 0
        self.requests_done = 0
        self.spin_cpu_ns = 0  # CPU spent busy-waiting for ready times (reported apart from the work)
        self.short_waits = bool(getattr(initiator, "spins_short_waits", False))

        width = max(opts.max_inflight, 1)
        self.batch = np.zeros(width, XFER_DTYPE)
        self.lead = max(int(opts.stage_ns), 0) if self.emulated else 0
        self.staged = np.zeros(width, XFER_DTYPE)
        self.staged_rows: list[int] = []  # built and stamped, posted at staged_at
        self.staged_at = 0
        self.early: list[int] = []  # pulled ahead of early_at but not stageable: join `ready` then
        self.early_at = 0
        self.pull_cap = max(4 * opts.max_inflight, 1024)
        self.target_rows = 0
        self.window = SpinWindow()
        self.t0 = self.deadline = 0
        self.start_late_ns = 0  # how long after the common start this loop began (0: on time)
        self.admit_until: int | None = None

    # -- requests --------------------------------------------------------------------------

    def admit(self, r: int, arrival: int) -> None:
        """Request r arrives: it starts when the emulated GPU is free; its first row enters the heap."""
        if self.emulated:
            g = self.gpu_of[r]
            start = max(arrival, self.gpu_free[g])
            self.gpu_free[g] = start + int(self.gpu_busy_ns[r])
        else:
            start = arrival
        self.req_arrival[r] = arrival
        self.req_start[r] = start
        if self.l_count[r] > 0:
            f = self.l_first[r]
            heapq.heappush(self.heap, (start + self.l_ready[f] if self.emulated else start, r, f))

    def admit_initial(self) -> None:
        """Pacing none: every request at t0; closed loop: the first `concurrency`; open loop:
        each at its arrival time, up to duration_s."""
        opts, nreq, t0 = self.opts, self.nreq, self.t0
        if self.emulated and opts.closed_loop:
            for _ in range(min(max(opts.concurrency, 1), nreq)):
                self.admit_closed(t0)
            return
        if not self.emulated:
            admit_n = nreq
            for r in range(nreq):
                self.admit(r, t0)
        else:
            admit_n = nreq
            for r in range(nreq):
                arrival = t0 + int(self.arrival_rel[r])
                if self.admit_until is not None and arrival > self.admit_until:
                    admit_n = r
                    break
                self.admit(r, arrival)
        self.started = admit_n
        for r in range(admit_n):
            if self.l_count[r] == 0:
                self.req_done[r] = self.req_start[r]
                self.requests_done += 1
        self.target_rows = int(self.count[:admit_n].sum()) if admit_n else 0

    def admit_closed(self, t: int) -> None:
        """Closed loop: the next request arrives at t (a user's earlier request completed). One
        without rows on this sender (a multi-agent flow's request routed to another decode
        instance) completes, for this sender, when its emulated prefill ends: its user's next
        request arrives then."""
        while self.started < self.nreq and (self.admit_until is None or t <= self.admit_until):
            r = self.started
            self.admit(r, t)
            self.started = r + 1
            self.target_rows += self.l_count[r]
            if self.l_count[r] > 0:
                return
            t = int(self.req_start[r]) + int(self.prefill_ns[r])
            self.req_done[r] = t
            self.requests_done += 1

    # -- posting and completions -----------------------------------------------------------

    def stage(self, rows: list[int]) -> bool:
        """Claim, stamp and build rows to post later; all or nothing (no side effect on False)."""
        opts, book = self.opts, self.book
        kk = len(rows)
        nb = sum(self.l_nb[i] for i in rows)
        # The same windows as the ready path: a larger single write may still go alone.
        if self.inflight + kk > opts.max_inflight or (
            (self.inflight > 0 or kk > 1) and self.inflight_bytes + nb > opts.max_inflight_bytes
        ):
            return False
        for pos, i in enumerate(rows):
            if not book.claim(i):  # (stamping a row whose ranges are free is harmless)
                for j in rows[:pos]:
                    book.release(j)
                return False
        self.inflight_bytes += nb
        book.fill(self.staged, rows)
        return True

    def hand_off(self, buf: np.ndarray, k: int, t: int) -> None:
        """Post the first k writes of buf at time t; record the post times and the call's length."""
        self.post_ns[buf["xfer"][:k]] = t
        self.inflight += k
        self.initiator.post(buf[:k], max((self.deadline - t) / 1e9, 0.001))
        self.call_ns.append(time.monotonic_ns() - t)

    def on_completions(self, comp: np.ndarray) -> None:
        rows, nb, finished = self.book.complete(comp, self.done_ns)
        self.inflight -= rows
        self.inflight_bytes -= nb
        self.completed_rows += rows
        opts = self.opts
        for r, t in finished:
            self.req_done[r] = t
            self.requests_done += 1
            if self.emulated and opts.closed_loop:
                self.admit_closed(t)

    # -- the ready queue -------------------------------------------------------------------

    def _next_row(self, r: int, i: int) -> None:
        """Row i of request r left the heap: its successor (if any) enters it."""
        j = i + 1
        if j < self.l_first[r] + self.l_count[r]:
            start = self.req_start[r]
            heapq.heappush(self.heap, (start + self.l_ready[j] if self.emulated else int(start), r, j))

    def pull_ready(self, t: int) -> None:
        """Move rows whose ready time has come to `ready` (pacing none: everything, up to a cap).

        Per row: _next_row is inlined over locals (a method call per row cost ~15 % of the
        native loop's CPU per row in bench_hotpath)."""
        heap, ready, cap = self.heap, self.ready, self.pull_cap
        if not heap or heap[0][0] > t:
            return
        l_first, l_count, l_ready, req_start = self.l_first, self.l_count, self.l_ready, self.req_start
        emulated = self.emulated
        pop, push = heapq.heappop, heapq.heappush
        while heap and heap[0][0] <= t and len(ready) < cap:
            _, r, i = pop(heap)
            ready.append(i)
            j = i + 1
            if j < l_first[r] + l_count[r]:
                push(heap, (req_start[r] + l_ready[j] if emulated else int(req_start[r]), r, j))

    def stage_next(self) -> None:
        """Stage the group sharing the earliest ready time ahead of it (or hold it as `early`)."""
        heap = self.heap
        at = heap[0][0]
        grp: list[int] = []
        while heap and heap[0][0] == at and len(grp) < self.opts.max_inflight:
            _, r, i = heapq.heappop(heap)
            grp.append(i)
            self._next_row(r, i)
        if self.stage(grp):
            self.staged_rows, self.staged_at = grp, at
        else:
            self.early, self.early_at = grp, at

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        opts = self.opts
        now = time.monotonic_ns
        t = now()
        # 1 ms lead: the first rows are not late by setup jitter. A common start that has already
        # passed stays the start (the rows are late, and lateness says so: no silent re-basing).
        self.t0 = t + 1_000_000 if opts.start_at_ns is None else int(opts.start_at_ns)
        self.start_late_ns = max(t - self.t0, 0)
        self.deadline = self.t0 + int(opts.timeout_s * 1e9)
        self.admit_until = self.t0 + int(opts.duration_s * 1e9) if opts.duration_s else None
        self.admit_initial()
        # Fields no method reassigns, read once (the loop runs once per batch or completion).
        deadline, lead, book, initiator = self.deadline, self.lead, self.book, self.initiator
        batch, max_inflight, max_inflight_bytes = self.batch, opts.max_inflight, opts.max_inflight_bytes
        pull_ready, hand_off, on_completions = self.pull_ready, self.hand_off, self.on_completions

        while self.completed_rows < self.target_rows:
            t = now()
            if t > deadline:
                raise TransportError(
                    f"prefill agent: timed out after {opts.timeout_s:.1f} s with {self.completed_rows} of "
                    f"{self.target_rows} writes completed ({self.inflight} in flight)"
                )
            if self.staged_rows and t >= self.staged_at:
                k = len(self.staged_rows)
                self.staged_rows = []
                self.hand_off(self.staged, k, t)
                continue
            if self.early and t >= self.early_at:
                self.ready.extend(self.early)
                self.early = []
            pull_ready(t)
            # Stage the next group ahead of its ready time when nothing else waits.
            if lead and not self.ready and not self.staged_rows and not self.early and self.heap \
                    and self.heap[0][0] <= t + lead:
                self.stage_next()
                continue
            # Post what the window and the slot rule allow, in order; a blocked row blocks later
            # rows touching the same slots so pages of one slot go in plan order.
            k = 0
            if self.ready:
                k, self.ready, self.inflight_bytes = book.select(
                    self.ready, batch, self.inflight + len(self.staged_rows),
                    max_inflight, self.inflight_bytes, max_inflight_bytes)
            if k:
                hand_off(batch, k, now())
            # Collect completions without blocking, then decide how long we may wait.
            if self.inflight:
                comp = initiator.poll(0.0)
                if len(comp):
                    on_completions(comp)
                    continue
            if k:
                continue
            if not self.wait():
                break
        return self.result()

    def _next_event(self) -> int | None:
        """When the loop must act next: a staged group's post, a blocked early group, or the time
        to stage the next one; rows of a request admitted since (closed loop) may be ready before."""
        heap = self.heap
        pending = heap[0][0] if heap and len(self.ready) < self.pull_cap else None
        if self.staged_rows or self.early:
            next_ready = self.staged_at if self.staged_rows else self.early_at
            if pending is not None and pending < next_ready:
                next_ready = pending
            return next_ready
        return pending - (0 if self.ready else self.lead) if pending is not None else None

    def wait(self) -> bool:
        """Nothing to post now: wait for a completion or the next event. False: the run is over."""
        now, thread_ns, initiator = time.monotonic_ns, time.thread_time_ns, self.initiator
        t = now()
        next_ready = self._next_event()
        wait_ns = (next_ready - t) if next_ready is not None else 5_000_000
        spin_ns = self.window.ns
        if self.inflight:
            # Wake for a completion, or in time to spin into the next ready time. epoll waits
            # whole milliseconds, rounded up (poll(300 µs) sleeps ~1.1 ms): ask for the whole
            # milliseconds below the target and spin the rest.
            whole_ms = max(wait_ns - spin_ns, 0) // 1_000_000
            if whole_ms or next_ready is None:
                comp = initiator.poll(whole_ms / 1e3)
                if len(comp):
                    self.on_completions(comp)
                elif next_ready is not None:
                    self.window.note(now() - (t + whole_ms * 1_000_000))
                return True
            # Under a millisecond to go: poll for completions until the next event, spinning.
            # A transport that spins out short waits itself counts only the idle part; for
            # others this loop polls, and counts the whole stretch (their work in it included).
            if self.short_waits:
                comp = initiator.poll(max(next_ready - now(), 0) / 1e9)
            else:
                comp = initiator.poll(0.0)
                if not len(comp) and now() < next_ready:
                    c0 = thread_ns()
                    while not len(comp) and now() < next_ready:
                        comp = initiator.poll(0.0)
                    self.spin_cpu_ns += thread_ns() - c0
            if len(comp):
                self.on_completions(comp)
            return True
        if next_ready is None:
            if self.completed_rows >= self.target_rows:
                return False
            raise TransportError(
                f"prefill agent: stalled with {self.target_rows - self.completed_rows} writes neither "
                f"ready nor in flight (plan or slot bookkeeping bug)"
            )
        if wait_ns > spin_ns:
            time.sleep((wait_ns - spin_ns) / 1e9)
            self.window.note(now() - (next_ready - spin_ns))
        if now() < next_ready:  # the last stretch: busy-wait for a punctual post
            c0 = thread_ns()
            while now() < next_ready:
                pass
            self.spin_cpu_ns += thread_ns() - c0  # (~1 µs: the price of reporting the spin apart)
        return True

    def result(self) -> dict[str, Any]:
        return {
            "t0_ns": self.t0,
            "start_late_ns": self.start_late_ns,
            "post_ns": self.post_ns,
            "post_call_ns": np.array(self.call_ns, np.int64),
            "done_ns": self.done_ns,
            "req_arrival_ns": self.req_arrival,
            "req_start_ns": self.req_start,
            "req_done_ns": self.req_done,
            "requests_started": self.started,
            "requests_completed": self.requests_done,
            "hot_path": self.hot_path,
            "spin_cpu_ns": self.spin_cpu_ns + getattr(self.initiator, "spin_cpu_ns", 0),  # (duck-typed transports)
        }
