"""Bookkeeping of what one-sided writes have done, on each side (pure, no verbs).

Initiator (SendTracker): with selective signalling, a signalled completion of WR w on an
RC QP means every earlier WR on that QP completed too (in-order), so each transfer
completes when a signalled WR at or after its last fragment completes.

Target (PlacementTracker): the NIC places bytes without telling the CPU; only a
WRITE_WITH_IMM consumes a receive and produces a completion. The initiator announces
each transfer on the side channel (RECORD_DTYPE, in post order); an immediate on QP q
proves every earlier write on q is placed (RC places in order). A request is announced
(NOTIFY) once every write posted before its immediate, on every QP, is placed.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque

import numpy as np

from ...errors import ProtocolError
from ..base import COMPLETION_DTYPE, NOTIFY_DTYPE, PLACED_DTYPE, check_region
from .wr import IMM_MASK

# One announced transfer: wr_id of its last fragment (orders it against immediates).
RECORD_DTYPE = np.dtype(
    [("wr_id", "<u8"), ("qp", "<u2"), ("xfer", "<u8"), ("dst_off", "<u8"),
     ("nbytes", "<u8"), ("notify", "<i8")]
)


def records_for(descs: np.ndarray, remote_base: int) -> np.ndarray:
    """Side-channel records for the transfers completed by these descriptors (batch order)."""
    ordered = descs[np.argsort(descs["wr_id"], kind="stable")]
    last = ordered["last_fragment"]
    first = np.r_[True, last[:-1]]  # fragments of a transfer are consecutive in wr_id order
    tail = ordered[last]
    starts = ordered["remote_addr"][first]
    rec = np.zeros(len(tail), RECORD_DTYPE)
    rec["wr_id"] = tail["wr_id"]
    rec["qp"] = tail["qp"]
    rec["xfer"] = tail["xfer"]
    rec["notify"] = tail["notify"]
    rec["dst_off"] = starts - np.uint64(remote_base)
    rec["nbytes"] = tail["remote_addr"] + tail["nbytes"] - starts
    return rec


class SendTracker:
    """Initiator: which transfers completed, from signalled work completions."""

    def __init__(self, qps: int) -> None:
        self._pending: list[deque[tuple[int, int, bool]]] = [deque() for _ in range(qps)]
        self._count = 0
        self.done_upto = [0] * qps  # highest wr_id known complete, per QP

    def posted(self, descs: np.ndarray) -> None:
        for d in descs:
            self._pending[int(d["qp"])].append(
                (int(d["wr_id"]), int(d["xfer"]), bool(d["last_fragment"])))
            self._count += bool(d["last_fragment"])

    def completed(self, qp: int, wr_id: int, t_ns: int) -> np.ndarray:
        """Transfers done by a signalled completion of wr_id on qp (COMPLETION_DTYPE)."""
        queue = self._pending[qp]
        self.done_upto[qp] = max(self.done_upto[qp], wr_id)
        done = []
        while queue and queue[0][0] <= wr_id:
            _, xfer, last = queue.popleft()
            if last:
                done.append(xfer)
        self._count -= len(done)
        out = np.zeros(len(done), COMPLETION_DTYPE)
        out["xfer"] = done
        out["t_ns"] = t_ns
        return out

    def outstanding(self) -> int:
        """Transfers posted and not yet completed."""
        return self._count

    def outstanding_wrs(self, qp: int) -> int:
        """Send-queue slots still held on qp (unsignalled WRs free theirs with a later one)."""
        return len(self._pending[qp])


class PlacementTracker:
    """Target: turn announced records + immediates into PLACED and NOTIFY records."""

    def __init__(self, qps: int, region_nbytes: int) -> None:
        self.qps = qps
        self.region_nbytes = region_nbytes
        self._records: list[deque[tuple]] = [deque() for _ in range(qps)]
        self._imms: list[deque[tuple[int, int]]] = [deque() for _ in range(qps)]
        self._waiting: list[tuple[int, int]] = []  # (wr_id, request) ordered by wr_id
        self._last_wr_id = 0
        # Immediates whose records confirm() already retired: consumed without a match.
        self._skip: list[deque[int]] = [deque() for _ in range(qps)]

    def add_records(self, rec: np.ndarray) -> None:
        for r in rec:
            qp, wr_id = int(r["qp"]), int(r["wr_id"])
            if qp >= self.qps:
                raise ProtocolError(f"record names QP index {qp}, only {self.qps} connected")
            if wr_id <= self._last_wr_id:
                raise ProtocolError(f"records out of order (wr_id {wr_id} after {self._last_wr_id})")
            why = check_region(self.region_nbytes, int(r["dst_off"]), int(r["nbytes"]))
            if why:
                raise ProtocolError(f"transfer {int(r['xfer'])}: {why}")
            self._last_wr_id = wr_id
            self._records[qp].append((wr_id, int(r["xfer"]), int(r["dst_off"]),
                                      int(r["nbytes"]), int(r["notify"])))

    def add_immediate(self, qp: int, imm_data: int, t_ns: int) -> None:
        self._imms[qp].append((imm_data & IMM_MASK, t_ns))

    def drain(self, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """PLACED and NOTIFY records that the immediates seen so far prove."""
        placed: list[tuple[int, int, int, int]] = []
        for qp in range(self.qps):
            records, imms = self._records[qp], self._imms[qp]
            while imms:
                if self._skip[qp] and self._skip[qp][0] == imms[0][0]:
                    imms.popleft()  # its write was already retired by confirm()
                    self._skip[qp].popleft()
                    continue
                k = next((i for i, r in enumerate(records) if r[4] >= 0), None)
                if k is None:
                    break  # its record has not arrived yet
                imm, t_ns = imms.popleft()
                for _ in range(k + 1):
                    wr_id, xfer, dst_off, nbytes, notify = records.popleft()
                    placed.append((xfer, dst_off, nbytes, t_ns))
                if notify & IMM_MASK != imm:
                    raise ProtocolError(f"immediate {imm:#x} on QP index {qp} does not match "
                                        f"request {notify} announced for it")
                self._waiting.append((wr_id, notify))
        self._waiting.sort()
        notifies = []
        heads = [r[0][0] for r in self._records if r]
        oldest_unplaced = min(heads) if heads else None
        while self._waiting and (oldest_unplaced is None or self._waiting[0][0] < oldest_unplaced):
            notifies.append((self._waiting.pop(0)[1], now_ns))
        p = np.array(placed, dtype=PLACED_DTYPE) if placed else np.zeros(0, PLACED_DTYPE)
        n = np.array(notifies, dtype=NOTIFY_DTYPE) if notifies else np.zeros(0, NOTIFY_DTYPE)
        return p, n

    def confirm(self, done_upto: list[int], t_ns: int) -> np.ndarray:
        """Retire records the initiator's completions prove placed (wr_id <= done_upto[qp]).

        Used before a write reuses a destination range: the earlier writes there completed at
        the initiator (an RC completion means placed remotely) though no immediate has
        covered them yet, and the decode side must see them before they are overwritten.
        """
        placed = []
        for qp, upto in enumerate(done_upto[: self.qps]):
            records = self._records[qp]
            while records and records[0][0] <= upto:
                wr_id, xfer, dst_off, nbytes, notify = records.popleft()
                placed.append((xfer, dst_off, nbytes, t_ns))
                if notify >= 0:
                    self._skip[qp].append(notify & IMM_MASK)
                    self._waiting.append((wr_id, notify))
        return np.array(placed, dtype=PLACED_DTYPE) if placed else np.zeros(0, PLACED_DTYPE)

    def unplaced(self) -> int:
        return sum(len(r) for r in self._records)


class WrittenRanges:
    """Byte ranges of the destination written so far (merged intervals, exact).

    The initiator asks the target to guard a write only when it overlaps bytes written
    before; pools filled in order coalesce into a few intervals, so checks stay cheap.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> bool:
        """Record [start, end); True if it overlaps anything recorded before."""
        if end <= start:
            return False
        # Intervals that overlap or touch [start, end) are merged into one.
        lo = bisect_left(self._ends, start)
        hi = bisect_right(self._starts, end)
        overlap = any(self._starts[i] < end and start < self._ends[i] for i in range(lo, hi))
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]
        return overlap

    def __len__(self) -> int:
        return len(self._starts)
