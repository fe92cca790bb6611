"""The store's side of a scenario (pure, deterministic): which requests hit, which KV pages the
store holds or receives, when the store's client acts, and the emulated prefill with and
without the hit.

An object is one page of one request's KV, every layer, one copy (KvLayout.bytes_per_page):
what a KV store keys and serves (Mooncake Store and LMCache store per-page/per-chunk objects).
A prefix hit of H tokens (whole pages, at least one token left to compute) means the emulated
GPU computes only the suffix, tokens [H, ISL), with attention over the whole prefix:
timing.chunk_layer_ns(t0=H) charges exactly that. The store's pages carry the same positional
pattern as the prefill pool's pages (endpoint/pattern.py): a base pattern plus a per-object key at
both ends, so every fetched page is verified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.store_spec import Fraction, StoreSpec
from ..errors import ProfileError
from . import timing
from .kvlayout import kv_layout
from .plantypes import SOURCE, TRANSFER_DTYPE, TransferPlan

if TYPE_CHECKING:
    from ..core.scenario import Scenario

STORE_DOMAIN = 0x73746F7265  # "store": the hit draws and the store's pattern stay apart from the plan's
MAX_OBJECT_BYTES = 64 << 20  # one READ per page: larger pages are a model/page_size typo here


def draw_fraction(f: Fraction, n: int, rng: np.random.Generator) -> np.ndarray:
    if f.kind == "fixed":
        return np.full(n, float(f.value or 0.0))
    return rng.uniform(float(f.low or 0.0), float(f.high or 0.0), size=n)


def hit_tokens(store: StoreSpec, isl: np.ndarray, page: int, seed: int) -> np.ndarray:
    """Tokens per request served by the store (whole pages; at least one token left to compute).
    Offload scenarios fetch nothing: all zero."""
    isl = np.asarray(isl, dtype=np.int64)
    if not store.fetches:
        return np.zeros(len(isl), dtype=np.int64)
    rng = np.random.default_rng([int(seed), STORE_DOMAIN])
    reused = rng.random(len(isl)) < store.reuse
    ratio = draw_fraction(store.hit_ratio, len(isl), rng)
    pages = np.floor(ratio * isl / page).astype(np.int64)
    pages = np.minimum(pages, (isl - 1) // page)  # the last token is always computed
    return np.where(reused, pages * page, 0)


def suffix_ready_ns(scenario: "Scenario", isl: int, hit: int) -> tuple[np.ndarray, np.ndarray]:
    """(chunk_ends, [chunks, layers] cumulative ready ns) of a request whose first `hit` tokens come
    from the store: chunks over [hit, isl) only, each with attention over everything before it."""
    dep = scenario.prefill
    c = dep.chunk_tokens if dep.chunk_tokens > 0 else isl - hit
    bounds = [(s, min(isl, s + c)) for s in range(hit, isl, c)]
    per = np.stack([timing.chunk_layer_ns(scenario.model, scenario.gpu, dep, a, b - a) for a, b in bounds])
    return np.array([b for _, b in bounds], dtype=np.int64), np.cumsum(per.ravel()).reshape(per.shape)


def check_store_scenario(scenario: "Scenario") -> None:
    """What a store scenario cannot be combined with, named."""
    if scenario.synthetic is not None:
        raise ProfileError(SOURCE, "store", "a store scenario needs a model workload, not synthetic transfers")
    if scenario.multi_agent:
        raise ProfileError(SOURCE, "store", "a store scenario runs one prefill-decode pair (rails 1, one "
                           "instance per side)")
    if scenario.store is not None and scenario.store.fetches and scenario.prefill.max_batch_tokens > 0:
        raise ProfileError(SOURCE, "prefill.max_batch_tokens",
                           "a prefix/resume store scenario times each request alone (set 0): a hit's suffix "
                           "under continuous batching is not modelled")


def apply_hits(scenario: "Scenario", isl: np.ndarray, chunk_ends: list[np.ndarray],
               ready_ns: list[np.ndarray]) -> None:
    """Replace, in place, the schedule of every request with a hit by its suffix-only schedule
    (the plan builder calls this; pages of the prefix are ready with the suffix's layers)."""
    store = scenario.store
    if store is None or not store.fetches:
        return
    check_store_scenario(scenario)
    hits = hit_tokens(store, isl, scenario.prefill.page_size, scenario.seed)
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for r in np.flatnonzero(hits > 0).tolist():
        key = (int(isl[r]), int(hits[r]))
        if key not in cache:
            cache[key] = suffix_ready_ns(scenario, *key)
        chunk_ends[r], ready_ns[r] = cache[key]


@dataclass(frozen=True)
class StorePlan:
    mode: str
    page_tokens: int
    obj_bytes: int  # one object: a page of one request's KV, every layer, one copy
    objects: np.ndarray  # TRANSFER_DTYPE rows (request, block = page; src_off 0): the keys' source
    req_first: np.ndarray  # per request: its first object row
    req_count: np.ndarray  # per request: its objects (fetched for prefix/resume, written for offload)
    hit_tokens: np.ndarray  # per request: tokens the store serves (0 for offload and misses by draw)
    isl: np.ndarray
    full_ns: np.ndarray  # per request: emulated prefill of the whole ISL (no store)
    suffix_ns: np.ndarray  # per request: emulated prefill of ISL - hit (the plan's prefill_ns)
    act_ns: np.ndarray  # per request: when the store's client acts, from the run's start (emulated)
    dram_slots: int
    file_slots: int

    @property
    def max_objects(self) -> int:
        return int(self.req_count.max()) if len(self.req_count) else 0

    @property
    def total_objects(self) -> int:
        return int(self.req_count.sum())


def starts_ns(plan: TransferPlan, closed: bool, concurrency: int) -> np.ndarray:
    """Emulated start of each request: its arrival (open loop) or when one of `concurrency`
    emulated GPUs frees up (closed loop, requests in order)."""
    req = plan.requests
    if not closed:
        return req["arrival_ns"].astype(np.int64)
    free = np.zeros(max(1, concurrency), dtype=np.int64)
    out = np.zeros(len(req), dtype=np.int64)
    for r in range(len(req)):
        k = int(np.argmin(free))
        out[r] = free[k]
        free[k] += int(req["prefill_ns"][r]) - int(req["overlap_ns"][r])
    return out


def build_store_plan(scenario: "Scenario", plan: TransferPlan) -> StorePlan:
    """The store's objects, the client's schedule and both emulated prefill times of every request."""
    store = scenario.store
    if store is None:
        raise ProfileError(SOURCE, "store", "the scenario has no store")
    check_store_scenario(scenario)
    layout = kv_layout(scenario.model, scenario.prefill, SOURCE, "prefill")
    page = layout.page_size
    obj = -(-int(layout.bytes_per_page) // 64) * 64
    if obj > MAX_OBJECT_BYTES:
        raise ProfileError(SOURCE, "prefill.page_size", f"a store page of {obj:,} B exceeds {MAX_OBJECT_BYTES:,} B; "
                           "use a smaller page_size")
    req = plan.requests
    isl = req["isl"].astype(np.int64)
    hits = hit_tokens(store, isl, page, scenario.seed)
    count = (hits // page) if store.fetches else -(-isl // page)
    first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    n = int(count.sum())
    objects = np.zeros(n, dtype=TRANSFER_DTYPE)
    objects["request"] = np.repeat(np.arange(len(isl)), count)
    objects["block"] = np.arange(n) - np.repeat(first, count)
    objects["nbytes"] = obj
    full = np.array([timing.prefill_ns(scenario.model, scenario.gpu, scenario.prefill, int(n_))
                     for n_ in isl.tolist()], dtype=np.int64) if len(isl) else np.zeros(0, np.int64)
    suffix = req["prefill_ns"].astype(np.int64)
    wl = scenario.workload
    start = starts_ns(plan, wl.arrival.kind == "closed", int(wl.arrival.concurrency or 1))
    if store.fetches:
        act = start  # the fetch starts with the request
    else:  # offload once the session finished: its prefill, then OSL decode steps
        act = start + suffix + req["osl"].astype(np.int64) * req["decode_step_ns"].astype(np.int64)
    dram = int(store.dram_mib * (1 << 20)) // obj
    file_slots = int(store.file_mib * (1 << 20)) // file_slot_bytes(obj)
    if dram < max(1, int(count.max()) if len(count) else 1):
        raise ProfileError(SOURCE, "store.dram_mib", f"{store.dram_mib:g} MiB holds {dram} page(s) of {obj:,} B; "
                           f"one request needs {int(count.max())} at once")
    return StorePlan(store.mode, page, obj, objects, first, count.astype(np.int64), hits, isl, full, suffix,
                     act.astype(np.int64), dram, file_slots)


def file_slot_bytes(obj: int) -> int:
    """A file-tier slot: the object rounded up to 4 KiB so O_DIRECT offsets and lengths stay aligned."""
    return -(-obj // 4096) * 4096

