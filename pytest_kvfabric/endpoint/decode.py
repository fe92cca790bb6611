"""The decode receive loop: progress the transport, attribute and verify pages, complete requests.

Verification stays off the timed path: a page is verified after the progress() call
that reported it has returned (its completion, the transport's ACK, is already on its way),
while its bytes are still in the CPU cache (`verify_hot`, the default: about a third less
memory traffic than verifying later); otherwise when progress() comes back idle. The
transport's write_guard still verifies any pending page just before its bytes would be
overwritten (slot reuse). Whatever is still pending at the end is verified after the run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..emulator.plantypes import TransferPlan
from ..transports.base import Target
from . import pattern

IDLE_VERIFY_PAGES = 64  # pages verified per idle progress() return


MISSING_NAMED = 5  # pages never placed named in the report (the count says how many in all)


@dataclass
class DecodeOptions:
    timeout_s: float = 60.0
    poll_s: float = 0.002
    inject: str | None = None  # fault injection (scenario.FAULTS): prove the checks catch a fault
    verify_hot: bool = True  # verify pages right after the progress() call that placed them


def _inject(kind: str, ledger: pattern.PageLedger, row: int) -> bool:
    """Damage a placed page the way a faulty data path would; True once applied."""
    T, dst = ledger.transfers, ledger.dst
    r = T[row]
    off, n = int(r["dst_off"]), int(r["nbytes"])
    if kind == "corrupt" and n >= pattern.KEY_BYTES + 1:
        dst[off + n // 2] ^= 0x5A
        return True
    if kind == "misplace" and n >= pattern.KEY_BYTES and ledger.base is not None:
        # Overwrite with another row's complete page (same size, other destination):
        # what a transport that wrote to the wrong offset leaves behind.
        others = np.flatnonzero((T["nbytes"] == n) & (T["dst_off"] != off))
        if len(others) == 0:
            return False
        q = int(others[0])
        dst[off:off + n] = pattern.expected_page(ledger.base, T[q], ledger.keys[q])
        return True
    return False


def run_decode(
    plan: TransferPlan,
    target: Target,
    ledger: pattern.PageLedger,
    opts: DecodeOptions,
) -> dict[str, Any]:
    """Receive until every request is complete, the initiator closed, or the deadline."""
    import os
    import signal

    nreq = len(plan.requests)
    req_complete_ns = np.zeros(nreq, np.int64)
    notify_ns = np.zeros(nreq, np.int64)
    notifications = 0
    target.write_guard = ledger.guard
    now = time.monotonic_ns
    deadline = now() + int(opts.timeout_s * 1e9)
    injected = opts.inject is None
    timed_out = False
    ncomplete = 0
    expected = int((plan.requests["count"] > 0).sum()) if nreq else 0
    ncomplete += nreq - expected
    seen = 0
    completed = ledger.completed  # appended to by place() and guard()
    place = ledger.place
    progress = target.progress
    # When each write of one request was placed (decode clock): that request's timeline in the report.
    from ..measure.stats import timeline_request

    treq = timeline_request(plan.requests)
    t_lo = int(plan.requests["first"][treq]) if treq is not None else 0
    t_hi = t_lo + (int(plan.requests["count"][treq]) if treq is not None else 0)
    placed_ns = np.zeros(t_hi - t_lo, np.int64)
    while ncomplete < nreq:
        if now() > deadline:
            timed_out = True
            break
        placed, notes = progress(opts.poll_s)
        if len(placed):
            for d, nb, t in zip(placed["dst_off"].tolist(), placed["nbytes"].tolist(), placed["t_ns"].tolist()):
                if not injected and opts.inject == "drop" and nb >= pattern.KEY_BYTES:
                    # fault injection: this write never arrived (its bytes gone, never reported)
                    ledger.dst[d:d + nb] = 0
                    injected = True
                    continue
                row = place(d, nb)
                if row is not None and t_lo <= row < t_hi:
                    placed_ns[row - t_lo] = t
                if row is not None and not injected:
                    if opts.inject == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)  # test-only: die mid-transfer
                    if opts.inject == "stall":
                        time.sleep(opts.timeout_s * 10)  # test-only: hang mid-transfer
                    injected = _inject(opts.inject, ledger, row)
                # (guard() may have completed requests inside progress(): count those too)
                if len(completed) > seen:
                    for req in completed[seen:]:
                        req_complete_ns[req] = t
                        ncomplete += 1
                    seen = len(completed)
            if opts.verify_hot:
                ledger.verify_some(len(placed))
        if len(notes):
            notifications += len(notes)
            notify_ns[notes["request"]] = notes["t_ns"]
        if not len(placed) and not len(notes):
            ledger.verify_some(IDLE_VERIFY_PAGES)
            if target.peers_closed():
                break
    if not timed_out:
        notifications += _linger(target, ledger, min(deadline, now() + 2_000_000_000), notify_ns)
    ledger.verify_all()
    never = np.flatnonzero(~ledger.placed) if len(ledger.transfers) else np.zeros(0, np.int64)
    return {
        "timed_out": timed_out,  # the deadline ended the receive loop: the controller names it as the cause
        "complete_requests": int(ncomplete - (nreq - expected)),
        "requests": int(expected),
        "missing_count": int(len(never)),  # plan rows never placed: what a dropped write leaves
        "missing_pages": [pattern.describe(ledger.transfers[int(i)]) for i in never[:MISSING_NAMED]],
        "req_complete_ns": req_complete_ns,
        "notify_ns": notify_ns,
        "notifications": notifications,
        "requests_completed": int(ncomplete),
        "pages_checked": ledger.pages_checked,
        "errors": ledger.error_count,
        "error_list": list(ledger.errors),
        "bytes_placed": int(ledger.bytes_by_request.sum()),
        "placed_by_layer_ns": _by_layer(plan, t_lo, t_hi, placed_ns),
    }


def _linger(target: Target, ledger: pattern.PageLedger, until_ns: int, notify_ns: np.ndarray) -> int:
    """Let the initiator collect its last ACKs and say BYE before we close (bounded by until_ns);
    returns the notifications that arrived meanwhile."""
    notifications = 0
    while not target.peers_closed() and time.monotonic_ns() < until_ns:
        placed, notes = target.progress(0.01)
        for d, nb in zip(placed["dst_off"].tolist(), placed["nbytes"].tolist()):
            ledger.place(d, nb)
        if len(notes):
            notifications += len(notes)
            notify_ns[notes["request"]] = notes["t_ns"]
    return notifications


def _by_layer(plan: TransferPlan, lo: int, hi: int, placed_ns: np.ndarray) -> np.ndarray:
    """Last placement per layer of the timeline request (layers in ascending order)."""
    from ..measure.stats import per_layer

    return per_layer(plan.transfers["layer"][lo:hi].astype(np.int64), placed_ns, "max")[1]
