"""build_plan: every KV write of a scenario, as one numpy structured array (vectorized, deterministic).

The row and request types (TRANSFER_DTYPE, REQUEST_DTYPE, TransferPlan) are the interface of
`plantypes`; they are re-exported here for the callers that import them with build_plan.

Layout inside one slot (the emulator's choice; both sides are emulated):
- a slot holds one unit: access="layer": one (page, layer) of the rank's KV heads;
  access="block": one page of all the layers of the rank's PP stage.
- a block is split into segments (layer runs where both sides' PP stages are constant);
  a segment is piece-major: [piece][layer][head][token][element], one piece per
  (src tp rank -> dst tp rank) pairing, so every transfer is one contiguous range on both
  sides; within a segment full-attention layers come first and sliding-window layers last,
  so a page outside the window moves a contiguous prefix.
- pages move whole (a partial last page too), as engines move blocks; sliding-window
  layers move only the pages overlapping the last `window` tokens.
Slot size = the largest unit of that side (= the largest transfer when TP matches)
rounded up to 64 B; units take slots round robin per rank in row order.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.limits import MAX_POOL_MIB, MAX_SEED, check_number
from ..errors import ProfileError
from . import timing
from .batching import prefill_schedule
from .kvlayout import KvLayout, kv_layout
from .plantypes import REQUEST_DTYPE, SOURCE, TRANSFER_DTYPE, TransferPlan, check_plan_rows
from .synthetic import build_synthetic_plan
from .workload import sample_requests

if TYPE_CHECKING:
    from ..core.scenario import Scenario

__all__ = ["REQUEST_DTYPE", "TRANSFER_DTYPE", "TransferPlan", "build_plan", "check_plan_rows", "plan_summary", "tp_pieces"]


@dataclass(frozen=True)
class _Piece:
    src_tp: int
    dst_tp: int
    src_head: int  # first head, relative to the src rank's first head
    dst_head: int
    nheads: int


def _rank_heads(t: int, tp: int, heads: int) -> tuple[int, int]:
    """(first head, count) held by TP rank t; heads are replicated when heads < tp."""
    return t * heads // tp, max(1, heads // tp)


def tp_pieces(src: KvLayout, dst: KvLayout, request: int = 0) -> list[_Piece]:
    """Which src TP rank sends which of its heads to which dst TP rank, sorted by (src, dst).

    Each dst rank receives each head it holds exactly once. A head replicated on several
    src ranks (kv_heads < src tp, or the MLA latent) comes from replica dst_tp % replicas,
    so the load spreads over the src ranks (MLA: src rank dst_tp % src_tp). With
    data-parallel attention a request lives whole on rank request % tp of each side."""
    heads = src.kv_heads
    if src.dp_attention or dst.dp_attention:
        return [_Piece(request % src.tp, request % dst.tp, 0, 0, heads)]
    pieces: list[_Piece] = []
    for d in range(dst.tp):
        d0, dn = _rank_heads(d, dst.tp, heads)
        run: list[int] | None = None  # [src_tp, src_head, dst_head, n]
        for h in range(d0, d0 + dn):
            if heads >= src.tp:
                s = h // (heads // src.tp)
            else:
                replicas = src.tp // heads
                s = h * replicas + d % replicas
            s0, _ = _rank_heads(s, src.tp, heads)
            if run is not None and run[0] == s and run[1] + run[3] == h - s0:
                run[3] += 1
                continue
            if run is not None:
                pieces.append(_Piece(run[0], d, run[1], run[2], run[3]))
            run = [s, h - s0, h - d0, 1]
        if run is not None:
            pieces.append(_Piece(run[0], d, run[1], run[2], run[3]))
    return sorted(pieces, key=lambda p: (p.src_tp, p.dst_tp))


@dataclass(frozen=True)
class _Segments:
    """Layer runs moved together: one layer each (access=layer) or stage intersections (block)."""

    first: np.ndarray  # first layer
    last: np.ndarray  # last layer (its ready time is the segment's)
    src_stage: np.ndarray
    dst_stage: np.ndarray
    full_head_bytes: np.ndarray  # one head, one page, all layers of the segment
    dense_head_bytes: np.ndarray  # the same, full-attention layers only
    all_sliding: np.ndarray  # bool: no full-attention layer in the segment
    src_off: np.ndarray  # offset of the segment inside a src unit (per src rank)
    dst_off: np.ndarray

    def take(self, idx: np.ndarray) -> "_Segments":
        return _Segments(*(getattr(self, f.name)[idx] for f in dataclasses.fields(self)))

    def slice(self, start: int, stop: int) -> "_Segments":
        return _Segments(*(getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)))


ROWS_PER_STEP = 1 << 20  # rows built per vectorized step (bounds temporary memory)


def _segments(src: KvLayout, dst: KvLayout, access: str) -> _Segments:
    layers = src.layers
    if access == "layer":
        bounds = list(range(layers + 1))
    else:
        bounds = sorted({a for a, _ in src.stages} | {a for a, _ in dst.stages} | {layers})
    first = np.array(bounds[:-1], dtype=np.int64)
    last = np.array(bounds[1:], dtype=np.int64) - 1
    src_stage = np.array([src.stage_of_layer(int(a)) for a in first], dtype=np.int64)
    dst_stage = np.array([dst.stage_of_layer(int(a)) for a in first], dtype=np.int64)
    hb = np.array(src.head_bytes_per_token, dtype=np.int64) * src.page_size
    sliding = np.array(src.sliding, dtype=bool)
    full = np.array([hb[a : b + 1].sum() for a, b in zip(first, last)], dtype=np.int64)
    dense = np.array([hb[a : b + 1][~sliding[a : b + 1]].sum() for a, b in zip(first, last)], dtype=np.int64)
    src_off = np.zeros(len(first), dtype=np.int64)
    dst_off = np.zeros(len(first), dtype=np.int64)
    if access == "block":  # segments of one stage sit one after another in its unit
        for stage_of, off, heads in ((src_stage, src_off, src.heads_per_rank), (dst_stage, dst_off, dst.heads_per_rank)):
            for s in np.unique(stage_of):
                idx = np.nonzero(stage_of == s)[0]
                sizes = full[idx] * heads
                off[idx] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return _Segments(first, last, src_stage, dst_stage, full, dense, dense == 0, src_off, dst_off)


def _unit_bytes(layout: KvLayout, seg: _Segments, stage_of: np.ndarray, access: str) -> int:
    """Largest unit of a side: a page of one layer (or of one stage's segments) of one rank."""
    if access == "layer":
        return int(seg.full_head_bytes.max()) * layout.heads_per_rank
    sizes = [int(seg.full_head_bytes[stage_of == s].sum()) for s in np.unique(stage_of)]
    return max(sizes) * layout.heads_per_rank


def _pool(pool_bytes: int, ranks: int, unit_bytes: int, side: str) -> tuple[int, int, int]:
    """(rank_bytes, slot_bytes, slots_per_rank) of one side's bounded pool."""
    slot = -(-unit_bytes // 64) * 64
    rank_bytes = (pool_bytes // ranks) // slot * slot
    slots = rank_bytes // slot
    if slots < 2:
        need = 2 * slot * ranks
        raise ProfileError(
            SOURCE,
            "pool_bytes",
            f"{pool_bytes} B gives the {side} side {slots} slot(s) of {slot} B per rank over {ranks} rank(s); "
            f"need at least {need} B ({-(-need // 2**20)} MiB) for 2 slots per rank",
        )
    return rank_bytes, slot, slots


def _check_sides(scenario: "Scenario") -> tuple[KvLayout, KvLayout, str]:
    """Both sides' KV layouts and the access mode, refused where the two sides disagree."""
    model = scenario.model
    src = kv_layout(model, scenario.prefill, SOURCE, "prefill")
    dst = kv_layout(model, scenario.decode, SOURCE, "decode")
    if src.kv_dtype != dst.kv_dtype:
        raise ProfileError(SOURCE, "decode.kv_dtype", f"{dst.kv_dtype} differs from prefill's {src.kv_dtype}; KV is moved, not converted")
    if src.page_size != dst.page_size:
        raise ProfileError(SOURCE, "decode.page_size", f"{dst.page_size} differs from prefill's {src.page_size}")
    if src.dp_attention != dst.dp_attention:
        raise ProfileError(SOURCE, "decode.dp_attention", "must match prefill's: both sides hold a request's KV the same way")
    access = scenario.prefill.access
    if access not in ("layer", "block"):
        raise ProfileError(SOURCE, "prefill.access", f"unknown access {access!r}; valid: layer, block")
    if scenario.decode.access != access:
        raise ProfileError(SOURCE, "decode.access", f"{scenario.decode.access!r} differs from prefill's {access!r}")
    return src, dst, access


def build_plan(scenario: "Scenario") -> TransferPlan:
    """Build the plan for a scenario: vectorized numpy, deterministic for scenario + seed."""
    # Scenarios built in code (a test's own kv_run(...) changes) skip the schemas: same bounds here.
    for field, value, lo, hi in (("pool_bytes", scenario.pool_bytes, 1, MAX_POOL_MIB << 20),
                                 ("seed", scenario.seed, 0, MAX_SEED)):
        why = check_number(value, lo, hi)
        if why:
            raise ProfileError(SOURCE, field, why)
    if scenario.synthetic is not None:  # conformance: fixed sizes, no model layout
        return build_synthetic_plan(scenario)
    return _PlanBuilder(scenario).build()


class _PlanBuilder:
    """One model plan under construction: both sides' layouts and pools, the segments, the
    table being filled and the round-robin slot counters (see the module docstring)."""

    def __init__(self, scenario: "Scenario") -> None:
        self.scenario = scenario
        src, dst, access = _check_sides(scenario)
        self.src, self.dst, self.access = src, dst, access
        self.page = src.page_size
        self.seg_all = seg = _segments(src, dst, access)
        self.src_rank_bytes, self.src_slot, self.src_slots = _pool(
            scenario.pool_bytes, src.ranks, _unit_bytes(src, seg, seg.src_stage, access), "prefill")
        self.dst_rank_bytes, self.dst_slot, self.dst_slots = _pool(
            scenario.pool_bytes, dst.ranks, _unit_bytes(dst, seg, seg.dst_stage, access), "decode")
        self.src_ctr = np.zeros(src.pp, dtype=np.int64)  # units used so far per stage (round robin)
        self.dst_ctr = np.zeros(dst.pp, dtype=np.int64)
        self._pieces: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self.row = 0

    def pieces_for(self, r: int) -> tuple[np.ndarray, ...]:
        """(src_tp, dst_tp, src_head, dst_head, nheads) arrays of request r's TP pieces."""
        src, dst = self.src, self.dst
        key = (r % src.tp, r % dst.tp) if (src.dp_attention or dst.dp_attention) else (0, 0)
        if key not in self._pieces:
            ps = tp_pieces(src, dst, r)
            self._pieces[key] = tuple(
                np.array([getattr(p, f) for p in ps], dtype=np.int64) for f in ("src_tp", "dst_tp", "src_head", "dst_head", "nheads")
            )
        return self._pieces[key]

    def _row_counts(self, isl: np.ndarray, npages: np.ndarray, first_sw: np.ndarray, first_page: np.ndarray) -> int:
        """Rows of the whole plan, to allocate the table once (pages before first_page do not move)."""
        src, dst, seg, nreq = self.src, self.dst, self.seg_all, len(isl)
        n_all_sliding = int(seg.all_sliding.sum())
        groups = (len(seg.first) - n_all_sliding) * (npages - first_page) \
            + n_all_sliding * (npages - np.maximum(first_sw, first_page))
        if src.dp_attention or dst.dp_attention:  # pieces repeat with period lcm(src.tp, dst.tp)
            period = min(nreq, math.lcm(src.tp, dst.tp))
            k_per = np.array([len(self.pieces_for(r)[0]) for r in range(period)], dtype=np.int64)
            counts = groups.astype(np.int64) * k_per[np.arange(nreq) % period]
        else:
            counts = groups.astype(np.int64) * len(self.pieces_for(0)[0])
        return int(counts.sum())

    def build(self) -> TransferPlan:
        scenario, page = self.scenario, self.page
        isl, osl, arrival_ns = sample_requests(scenario.workload, scenario.seed, SOURCE)
        nreq = len(isl)
        sched = prefill_schedule(scenario.model, scenario.gpu, scenario.prefill, isl)
        if scenario.store is not None:  # prefix/resume hits: only the suffix is computed
            from .storeplan import apply_hits

            apply_hits(scenario, isl, sched.chunk_ends, sched.ready_ns)
        batch = scenario.workload.arrival.concurrency if scenario.workload.arrival.kind == "closed" else 1
        decode_by_isl: dict[int, float] = {}  # decode step per distinct ISL, at the closed loop's batch
        for n in np.unique(isl).tolist():
            decode_by_isl[n] = timing.decode_step_ns(scenario.model, scenario.gpu, scenario.decode, n, batch=batch)

        npages = -(-isl // page)
        src = self.src
        first_sw = np.where((src.window > 0) & (isl > src.window), (isl - src.window) // page, 0)
        first_page = np.zeros(nreq, dtype=np.int64)
        if scenario.store is not None and scenario.store.mode == "resume":  # decode fetches the session's pages itself
            from .storeplan import hit_tokens

            first_page = hit_tokens(scenario.store, isl, page, scenario.seed) // page
        total = self._row_counts(isl, npages, first_sw, first_page)
        check_plan_rows(total, scenario)
        self.out = np.empty(total, dtype=TRANSFER_DTYPE)
        requests = np.zeros(nreq, dtype=REQUEST_DTYPE)
        for r in range(nreq):
            n = int(isl[r])
            req_first = self.row
            ready = np.rint(sched.ready_ns[r]).astype(np.uint64)
            self._request(r, n, int(npages[r]), int(first_sw[r]), ready, sched.chunk_ends[r], int(first_page[r]))
            requests[r] = (
                r,
                int(arrival_ns[r]),
                n,
                int(osl[r]),
                int(ready[-1, -1]),
                int(round(decode_by_isl[n])),
                int(self.out["nbytes"][req_first:self.row].sum(dtype=np.uint64)),
                req_first,
                self.row - req_first,
                int(round(sched.overlap_ns[r])),
            )
        assert self.row == total, (self.row, total)
        return TransferPlan(
            transfers=self.out,
            requests=requests,
            src_ranks=self.src.ranks,
            dst_ranks=self.dst.ranks,
            src_rank_bytes=self.src_rank_bytes,
            dst_rank_bytes=self.dst_rank_bytes,
            src_slot_bytes=self.src_slot,
            dst_slot_bytes=self.dst_slot,
        )

    def _request(self, r: int, n: int, npages: int, first_sw: int, ready: np.ndarray,
                 chunk_ends: np.ndarray, first_page: int = 0) -> None:
        """Append request r's rows: its pages from first_page on, chunk by chunk, in ready order."""
        page, seg_all = self.page, self.seg_all
        pieces = self.pieces_for(r)
        k = len(pieces[0])
        pages = np.arange(first_page, npages, dtype=np.int64)
        last_tok = np.minimum((pages + 1) * page, n) - 1
        chunk_of_page = np.searchsorted(chunk_ends, last_tok, side="right")
        starts = np.searchsorted(chunk_of_page, np.arange(ready.shape[0]), side="left")
        ends = np.searchsorted(chunk_of_page, np.arange(ready.shape[0]), side="right")
        for c in range(ready.shape[0]):
            pg = pages[starts[c] : ends[c]]
            if len(pg) == 0:
                continue
            in_window = pg >= first_sw
            # access=layer: a few layers at a time (rows stay layer-major), so temporaries stay
            # small; access=block: all segments at once (a unit spans a stage's segments).
            step = len(seg_all.first) if self.access == "block" else max(1, ROWS_PER_STEP // (len(pg) * k))
            for g0 in range(0, len(seg_all.first), step):
                seg = seg_all.slice(g0, g0 + step)
                present = ~(seg.all_sliding[:, None] & ~in_window[None, :])  # [segments, pages]
                held = present.any(axis=1)
                if not held.all():  # drop segments with no page in this chunk (sliding, before the window)
                    seg, present = seg.take(np.nonzero(held)[0]), present[held]
                    if len(seg.first) == 0:
                        continue
                self._write_group(r, seg, pg, in_window, present, ready[c], pieces)

    def _write_group(self, r: int, seg: _Segments, pg: np.ndarray, in_window: np.ndarray,
                     present: np.ndarray, ready_c: np.ndarray, pieces: tuple[np.ndarray, ...]) -> None:
        """Write the rows of [segments, pages, pieces] (where `present`) at the table's end."""
        src, dst, access = self.src, self.dst, self.access
        p_src, p_dst, p_sh, p_dh, p_nh = pieces
        k = len(p_src)
        masked = not bool(present.all())
        shape = (len(seg.first), len(pg), k)
        m = int(np.count_nonzero(present)) * k
        view = self.out[self.row : self.row + m]
        base = {
            "request": r,
            "layer": seg.first[:, None, None],
            "block": pg[None, :, None],
            "ready_ns": ready_c[seg.last][:, None, None],
            "src_rank": (seg.src_stage * src.tp)[:, None, None] + p_src,
            "dst_rank": (seg.dst_stage * dst.tp)[:, None, None] + p_dst,
        }
        # [segments, pages] terms, computed in place to keep peak memory low.
        head_bytes = np.where(in_window[None, :], seg.full_head_bytes[:, None], seg.dense_head_bytes[:, None])
        src_slot_off = _ordinals(present, seg.src_stage, self.src_ctr, access)
        np.remainder(src_slot_off, self.src_slots, out=src_slot_off)
        src_slot_off *= self.src_slot
        src_slot_off += (seg.src_stage * src.tp * self.src_rank_bytes + seg.src_off)[:, None]
        dst_slot_off = _ordinals(present, seg.dst_stage, self.dst_ctr, access)
        np.remainder(dst_slot_off, self.dst_slots, out=dst_slot_off)
        dst_slot_off *= self.dst_slot
        dst_slot_off += (seg.dst_stage * dst.tp * self.dst_rank_bytes + seg.dst_off)[:, None]
        grid2 = {"nbytes": head_bytes, "src_off": src_slot_off, "dst_off": dst_slot_off}
        # per-piece terms: [segments, 1, pieces] (multiplied or added to the grids above)
        piece = {
            "nbytes": p_nh[None, None, :].astype(np.uint32),
            "src_off": (p_src * self.src_rank_bytes + seg.full_head_bytes[:, None, None] * p_sh).astype(np.uint64),
            "dst_off": (p_dst * self.dst_rank_bytes + seg.full_head_bytes[:, None, None] * p_dh).astype(np.uint64),
        }
        if masked:  # some sliding-window segments skip pages outside the window
            sel = np.broadcast_to(present[:, :, None], shape)
            for name, value in base.items():
                view[name] = np.broadcast_to(value, shape)[sel]
            for name, value in grid2.items():
                op = np.multiply if name == "nbytes" else np.add
                view[name] = op(value[:, :, None], piece[name])[sel]
        else:  # assign by broadcasting straight into the table
            grid = view.reshape(shape)
            for name, value in base.items():
                grid[name] = value
            for name, value in grid2.items():
                grid[name] = value[:, :, None]
                if name == "nbytes":
                    if k > 1 or int(p_nh[0]) != 1:
                        grid[name] *= piece[name]
                else:
                    grid[name] += piece[name]
        self.row += m


def _ordinals(present: np.ndarray, stage_of_seg: np.ndarray, ctr: np.ndarray, access: str) -> np.ndarray:
    """[segments, pages] ordinal of each group's unit among its stage's units, in row order
    (segment-major, then page). Entries where `present` is False are meaningless.

    access=layer: every (segment, page) is its own unit. access=block: a unit is (page,
    stage), shared by the stage's segments, numbered where it first appears. Advances `ctr`."""
    ords = np.zeros(present.shape, dtype=np.int64)
    npages = present.shape[1]
    for s in range(len(ctr)):
        segs = np.nonzero(stage_of_seg == s)[0]
        if len(segs) == 0:
            continue
        sub = present[segs[0] : segs[-1] + 1]  # a stage's segments are contiguous
        if access == "layer":
            if sub.all():
                block = ctr[s] + np.arange(sub.size, dtype=np.int64).reshape(sub.shape)
            else:
                block = ctr[s] + np.cumsum(sub.ravel(), dtype=np.int64).reshape(sub.shape) - 1
            ctr[s] += int(np.count_nonzero(sub))
            ords[segs[0] : segs[-1] + 1] = block
        else:
            held = sub.any(axis=0)
            first_seg = np.argmax(sub, axis=0)  # where each page's unit first appears
            order = np.lexsort((np.arange(npages), np.where(held, first_seg, len(segs))))
            page_ord = np.empty(npages, dtype=np.int64)
            page_ord[order] = np.arange(npages, dtype=np.int64)
            ords[segs[0] : segs[-1] + 1] = (ctr[s] + page_ord)[None, :]
            ctr[s] += int(np.count_nonzero(held))
    return ords


def plan_summary(plan: TransferPlan, scenario: "Scenario") -> dict:
    """What `kvfabric plan` prints: sizes, times, and the bandwidth to hide the transfer."""
    t = plan.transfers
    req = plan.requests
    sizes, counts = np.unique(t["nbytes"], return_counts=True)
    total = plan.total_bytes
    # The emulated GPU's busy span: batched requests share steps (overlap_ns), so not a plain sum.
    busy = req["prefill_ns"].astype(np.float64) - req["overlap_ns"].astype(np.float64)
    starts = np.concatenate([[0.0], np.cumsum(busy)[:-1]])
    prefill_ns_sum = float((starts + req["prefill_ns"]).max()) if len(req) else 0.0
    first = req[0] if len(req) else None
    layer_ready_ms: list[float] = []
    if first is not None:  # when each layer of the first request is complete (its last chunk)
        ready = prefill_schedule(scenario.model, scenario.gpu, scenario.prefill, req["isl"][:1]).ready_ns[0][-1]
        layer_ready_ms = [round(float(x) / 1e6, 6) for x in ready]
    return {
        "scenario": scenario.id,
        "model": scenario.model.id,
        "gpu": scenario.gpu.id,
        "requests": int(len(req)),
        "prefill_ms": float(req["prefill_ns"].mean()) / 1e6 if len(req) else 0.0,
        "decode_step_ms": float(req["decode_step_ns"].mean()) / 1e6 if len(req) else 0.0,
        "total_bytes": total,
        "transfers": int(len(t)),
        "required_gbps": total * 8 / prefill_ns_sum if prefill_ns_sum else 0.0,
        "size_histogram": [{"nbytes": int(s), "count": int(c)} for s, c in zip(sizes, counts)],
        "layer_ready_ms": layer_ready_ms,
        "src_ranks": plan.src_ranks,
        "dst_ranks": plan.dst_ranks,
        "src_slot_bytes": plan.src_slot_bytes,
        "dst_slot_bytes": plan.dst_slot_bytes,
        "src_rank_bytes": plan.src_rank_bytes,
        "dst_rank_bytes": plan.dst_rank_bytes,
    }
