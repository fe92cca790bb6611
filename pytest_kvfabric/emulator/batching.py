"""Prefill schedule: when each chunk of each request has each layer's KV, one request at a time or
continuously batched under a token budget per step (deployment.max_batch_tokens).

Continuous batching (vLLM/SGLang style): every step takes up to `max_batch_tokens` prompt tokens
in request order; the request that did not fit whole is finished first in the next steps, then
new requests join. A request's chunks are the pieces it got in each step, and every layer of a
chunk is ready when that layer of its step completes. The schedule assumes a backlog (requests
queued back to back); the prefill agent still starts a request no earlier than its arrival.

`overlap_ns[r]` is how much of request r's prefill the next request shares: the pacer frees the
emulated GPU for request r+1 at start_r + prefill_ns[r] - overlap_ns[r] (0 when not batching).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.profiles import GpuProfile, ModelProfile
from ..core.scenario import Deployment
from . import timing


@dataclass(frozen=True)
class PrefillSchedule:
    chunk_ends: list[np.ndarray]  # per request: exclusive token end of each chunk
    ready_ns: list[np.ndarray]  # per request: [chunks, layers] ns from the request's own start
    start_ns: np.ndarray  # per request: start of its first step, from the schedule's start
    overlap_ns: np.ndarray  # per request: prefill time shared with the next request

    @property
    def prefill_ns(self) -> np.ndarray:
        return np.array([float(r[-1, -1]) for r in self.ready_ns])


def _alone(model: ModelProfile, gpu: GpuProfile, dep: Deployment, isl: np.ndarray) -> PrefillSchedule:
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    ends, ready = [], []
    for n in isl.tolist():
        if n not in cache:
            bounds = timing.chunk_bounds(n, dep.chunk_tokens)
            cache[n] = (np.array([b for _, b in bounds], dtype=np.int64), timing.layer_ready_ns(model, gpu, dep, n))
        ends.append(cache[n][0])
        ready.append(cache[n][1])
    prefill = np.array([float(r[-1, -1]) for r in ready])
    start = np.concatenate([[0.0], np.cumsum(prefill)[:-1]])
    return PrefillSchedule(ends, ready, start, np.zeros(len(isl)))


def prefill_schedule(model: ModelProfile, gpu: GpuProfile, dep: Deployment, isl: np.ndarray) -> PrefillSchedule:
    """Chunks and per-layer ready times of every request (see the module docstring)."""
    isl = np.asarray(isl, dtype=np.int64)
    budget = int(dep.max_batch_tokens)
    if budget <= 0:
        return _alone(model, gpu, dep, isl)
    n = len(isl)
    done = np.zeros(n, dtype=np.int64)
    ends: list[list[int]] = [[] for _ in range(n)]
    rows: list[list[np.ndarray]] = [[] for _ in range(n)]
    start = np.full(n, -1.0)
    clock = 0.0
    head = 0  # first request not fully prefilled
    while head < n:
        pieces: list[tuple[int, int, int]] = []  # (request, t0, tokens)
        left, r = budget, head
        while left > 0 and r < n:
            take = int(min(isl[r] - done[r], left))
            pieces.append((r, int(done[r]), take))
            left -= take
            r += 1
        tokens = sum(p[2] for p in pieces)
        keys = sum(timing.chunk_keys(model, t0, t) for _, t0, t in pieces)
        kv = sum(t + timing.held_tokens(model, t0 + t) for _, t0, t in pieces)
        layer_end = clock + np.cumsum(timing.step_layer_ns(model, gpu, dep, tokens, keys, kv, seqs=len(pieces)))
        for req, t0, t in pieces:
            if start[req] < 0:
                start[req] = clock
            done[req] = t0 + t
            ends[req].append(t0 + t)
            rows[req].append(layer_end)
        clock = float(layer_end[-1])
        while head < n and done[head] >= isl[head]:
            head += 1
    ready = [np.stack(rw) - start[r] for r, rw in enumerate(rows)]
    prefill = np.array([float(x[-1, -1]) for x in ready])
    overlap = np.zeros(n)
    overlap[:-1] = np.maximum(start[:-1] + prefill[:-1] - start[1:], 0.0)
    return PrefillSchedule([np.array(e, dtype=np.int64) for e in ends], ready, start, overlap)
