"""Work-request lists for a batch of writes, as numpy descriptors (pure, no verbs).

One RDMA WRITE per transfer, split at the device's max message size; the last fragment of
a transfer that carries a request id (`notify >= 0`) is an RDMA_WRITE_WITH_IMM whose
immediate is the request id. Descriptors are grouped into chains (one ibv_post_send call
each) of at most `max_chain` WRs on one QP; every `signal_every`-th WR of a QP, and the
last WR of each QP in a batch, is signalled (so the batch's tail always completes and the
send queue never fills with unsignalled WRs).

QP choice (qps > 1): a *segment* is a run of transfers ending with a notify write. A
segment goes to one QP, so on RC (in-order placement per QP) the immediate lands after
the segment's writes. Segments rotate over QPs; a segment left open at the end of a batch
continues on the same QP in the next batch (WrState.open_qp). Writes of a request that
sit in earlier segments may use other QPs; the target's PlacementTracker therefore waits
for every earlier WR on every QP before it announces a request (see placement.py).

Immediate data is 32 bits: a request id >= 2**32 travels as its low 32 bits; the target
restores the full id from the side-channel record of that write (and checks the low bits).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..base import XFER_DTYPE

WR_DTYPE = np.dtype(
    [
        ("wr_id", "<u8"),  # global, monotonic across batches: orders WRs across QPs
        ("xfer", "<u8"),
        ("qp", "<u2"),  # index into the endpoint's QP list
        ("local_off", "<u8"),  # offset in the local (prefill) region
        ("remote_addr", "<u8"),  # remote base + dst_off + fragment offset
        ("nbytes", "<u4"),
        ("rkey", "<u4"),
        ("with_imm", "?"),
        ("imm_data", "<u4"),
        ("notify", "<i8"),  # full request id on the WITH_IMM fragment, else -1
        ("signaled", "?"),
        ("last_fragment", "?"),  # completing this WR completes transfer `xfer`
    ]
)

IMM_MASK = 0xFFFF_FFFF
# ibv_sge.length is 32-bit; devices report max_msg_sz (mlx5: 1 GiB, rxe: 2 GiB).
SGE_MAX_NBYTES = 1 << 31


@dataclass
class WrState:
    """What one batch leaves for the next (mutated by build_wrs)."""

    next_wr_id: int = 1  # 0 is never used, so a zero wr_id in a completion is a bug
    next_qp: int = 0
    open_qp: int | None = None


@dataclass(frozen=True)
class WrList:
    descs: np.ndarray  # WR_DTYPE, ordered by (qp, post order)
    chain_starts: np.ndarray  # int64 index of each chain's first descriptor
    chain_qp: np.ndarray  # int64 QP of each chain

    def chains(self) -> list[np.ndarray]:
        ends = list(self.chain_starts[1:]) + [len(self.descs)]
        return [self.descs[s:e] for s, e in zip(self.chain_starts, ends)]


def build_wrs(
    batch: np.ndarray,
    *,
    remote_base: int,
    rkey: int,
    state: WrState,
    qps: int = 1,
    max_msg_nbytes: int = SGE_MAX_NBYTES,
    max_chain: int = 64,
    signal_every: int = 16,
) -> WrList:
    if batch.dtype != XFER_DTYPE:
        raise TypeError(f"batch dtype {batch.dtype} is not XFER_DTYPE")
    if qps < 1 or max_chain < 1 or signal_every < 1 or max_msg_nbytes < 1:
        raise ValueError("qps, max_chain, signal_every and max_msg_nbytes must be >= 1")
    max_msg = min(int(max_msg_nbytes), SGE_MAX_NBYTES)
    n = len(batch)
    if n == 0:
        empty = np.zeros(0, np.int64)
        return WrList(np.zeros(0, WR_DTYPE), empty, empty)

    # Segments and their QP.
    has_notify = batch["notify"] >= 0
    closed = np.cumsum(has_notify)
    segment = closed - has_notify  # a notify write belongs to the segment it closes
    base = state.open_qp if state.open_qp is not None else state.next_qp
    xfer_qp = (base + segment) % qps
    n_closed = int(closed[-1])
    if has_notify[-1]:
        state.open_qp, state.next_qp = None, (base + n_closed) % qps
    else:
        state.open_qp = int((base + n_closed) % qps)

    # Fragments: a zero-length transfer is still one (zero-byte) write.
    nbytes = batch["nbytes"].astype(np.int64)
    frags = np.maximum(1, -(-nbytes // max_msg))
    total = int(frags.sum())
    owner = np.repeat(np.arange(n), frags)
    first = np.cumsum(frags) - frags
    k = np.arange(total) - first[owner]  # fragment number within its transfer
    frag_off = k * max_msg
    frag_len = np.minimum(nbytes[owner] - frag_off, max_msg).clip(min=0)
    last = k == frags[owner] - 1

    descs = np.zeros(total, WR_DTYPE)
    descs["xfer"] = batch["xfer"][owner]
    descs["qp"] = xfer_qp[owner]
    descs["local_off"] = batch["src_off"][owner] + frag_off.astype(np.uint64)
    descs["remote_addr"] = (
        np.uint64(remote_base) + batch["dst_off"][owner] + frag_off.astype(np.uint64)
    )
    descs["nbytes"] = frag_len
    descs["rkey"] = rkey
    imm = last & has_notify[owner]
    descs["with_imm"] = imm
    descs["notify"] = np.where(imm, batch["notify"][owner], -1)
    descs["imm_data"] = np.where(imm, batch["notify"][owner].astype(np.uint64) & IMM_MASK, 0)
    descs["last_fragment"] = last

    # Post order: per QP, keeping batch order; wr_id follows post order within each QP and
    # batch order across QPs (so "earlier" is the same on both sides).
    descs["wr_id"] = state.next_wr_id + np.arange(total, dtype=np.uint64)
    state.next_wr_id += total
    order = np.argsort(descs["qp"], kind="stable")
    descs = descs[order]

    qp_sorted = descs["qp"].astype(np.int64)
    qp_change = np.r_[True, qp_sorted[1:] != qp_sorted[:-1]]
    qp_start = np.flatnonzero(qp_change)
    pos_in_qp = np.arange(total) - np.repeat(qp_start, np.diff(np.r_[qp_start, total]))
    qp_last = np.r_[qp_change[1:], True]
    descs["signaled"] = ((pos_in_qp + 1) % signal_every == 0) | qp_last

    chain_start_mask = qp_change | (pos_in_qp % max_chain == 0)
    chain_starts = np.flatnonzero(chain_start_mask).astype(np.int64)
    return WrList(descs, chain_starts, qp_sorted[chain_starts])
