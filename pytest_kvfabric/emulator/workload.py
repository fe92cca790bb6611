"""Workloads: application presets and seeded sampling of ISL, OSL and arrival times.

Distributions (scenario.Distribution): fixed(value), uniform(low, high) inclusive,
normal(mean, std) clipped to [low, high], lognormal(mean = median, std = sigma of the
underlying normal) clipped to [low, high]; token counts are rounded and at least 1.
Arrivals: poisson = open loop, exponential gaps at rate_per_s, first request at 0;
closed = every arrival 0 (the runner starts a request when one of `concurrency` finishes).
Everything is drawn from numpy.random.default_rng(seed) in a fixed order (isl, osl, gaps).
"""
from __future__ import annotations

import numpy as np

from ..errors import ProfileError, UnknownIdError
from ..core.limits import MAX_REQUESTS, MAX_TOKENS, check_number
from ..core.scenario import Arrival, Distribution, Workload

K = 1024

PRESETS: dict[str, Workload] = {
    # Chat: short prompts and answers (ISL ~128, OSL ~128).
    "chat": Workload(
        isl=Distribution(kind="normal", mean=128, std=32, low=16, high=512),
        osl=Distribution(kind="normal", mean=128, std=32, low=16, high=512),
        arrival=Arrival(kind="closed", concurrency=8),
        requests=64,
        preset="chat",
    ),
    # Multi-turn chat: each turn's prompt is the conversation so far (ISL grows to a few K tokens),
    # short answers; a store scenario (mode resume) says which sessions return and how much is theirs.
    "multi-turn-chat": Workload(
        isl=Distribution(kind="uniform", low=512, high=4 * K),
        osl=Distribution(kind="normal", mean=128, std=32, low=16, high=512),
        arrival=Arrival(kind="closed", concurrency=4),
        requests=32,
        preset="multi-turn-chat",
    ),
    # Deep research: modest prompts, very long generated reports (OSL 128K+).
    "deep-research": Workload(
        isl=Distribution(kind="uniform", low=128, high=1 * K),
        osl=Distribution(kind="uniform", low=128 * K, high=256 * K),
        arrival=Arrival(kind="closed", concurrency=1),
        requests=4,
        preset="deep-research",
    ),
    # Coding agents: whole repositories in context (ISL 128K-1M), short edits (OSL 128-4K).
    "coding": Workload(
        isl=Distribution(kind="uniform", low=128 * K, high=1024 * K),
        osl=Distribution(kind="uniform", low=128, high=4 * K),
        arrival=Arrival(kind="closed", concurrency=1),
        requests=4,
        preset="coding",
    ),
    # Summarization: long documents in (ISL 128K-1M), short summaries out (OSL 128-1K).
    "summarization": Workload(
        isl=Distribution(kind="uniform", low=128 * K, high=1024 * K),
        osl=Distribution(kind="uniform", low=128, high=1 * K),
        arrival=Arrival(kind="closed", concurrency=1),
        requests=4,
        preset="summarization",
    ),
}


def preset(name: str) -> Workload:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownIdError("workload preset", name, list(PRESETS)) from None


def _need(dist: Distribution, attr: str, field: str, source: str) -> float:
    value = getattr(dist, attr)
    if value is None:
        raise ProfileError(source, f"{field}.{attr}", f"required for a {dist.kind} distribution")
    return value


def _check_bounds(dist: Distribution, field: str, source: str) -> None:
    # every parameter is a token count (std: in tokens, or log-space sigma): finite and bounded
    for attr in ("value", "low", "high", "mean", "std"):
        value = getattr(dist, attr)
        if value is not None:
            why = check_number(value, 0, MAX_TOKENS)
            if why:
                raise ProfileError(source, f"{field}.{attr}", why)


def sample_tokens(dist: Distribution, n: int, rng: np.random.Generator, field: str = "isl", source: str = "<workload>") -> np.ndarray:
    """n token counts (int64, >= 1) drawn from `dist`."""
    kind = dist.kind
    _check_bounds(dist, field, source)
    if kind == "fixed":
        value = int(_need(dist, "value", field, source))
        if value < 1:
            raise ProfileError(source, f"{field}.value", f"must be >= 1, got {value}")
        return np.full(n, value, dtype=np.int64)
    low = 1 if dist.low is None else int(dist.low)
    high = None if dist.high is None else int(dist.high)
    if high is not None and high < low:
        raise ProfileError(source, f"{field}.high", f"must be >= low ({low}), got {high}")
    if kind == "uniform":
        hi = int(_need(dist, "high", field, source))
        draw = rng.integers(low, hi, size=n, endpoint=True)
    elif kind == "normal":
        draw = rng.normal(_need(dist, "mean", field, source), _need(dist, "std", field, source), size=n)
    elif kind == "lognormal":
        median = _need(dist, "mean", field, source)
        if median <= 0:
            raise ProfileError(source, f"{field}.mean", f"lognormal median must be > 0, got {median}")
        draw = rng.lognormal(np.log(median), _need(dist, "std", field, source), size=n)
    else:
        raise ProfileError(source, f"{field}.kind", f"unknown distribution {kind!r}; valid: fixed, uniform, normal, lognormal")
    out = np.rint(draw).astype(np.int64)
    return np.clip(out, max(1, low), high if high is not None else None)


def sample_requests(workload: Workload, seed: int, source: str = "<workload>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(isl, osl, arrival_ns) arrays of workload.requests entries, deterministic for a seed."""
    n = int(workload.requests)
    why = check_number(n, 1, MAX_REQUESTS)
    if why:
        raise ProfileError(source, "requests", why)
    rng = np.random.default_rng(seed)
    isl = sample_tokens(workload.isl, n, rng, "isl", source)
    osl = sample_tokens(workload.osl, n, rng, "osl", source)
    arrival = workload.arrival
    if arrival.kind == "poisson":
        rate = arrival.rate_per_s
        if rate is None or rate <= 0:
            raise ProfileError(source, "arrival.rate_per_s", f"poisson arrivals need a rate > 0, got {rate}")
        why = check_number(rate, 0, 1e6)
        if why:
            raise ProfileError(source, "arrival.rate_per_s", why)
        gaps_ns = rng.exponential(1e9 / rate, size=n)
        arrival_ns = np.concatenate([[0.0], np.cumsum(gaps_ns[:-1])]).astype(np.int64)
    elif arrival.kind == "closed":
        if arrival.concurrency < 1:
            raise ProfileError(source, "arrival.concurrency", f"must be >= 1, got {arrival.concurrency}")
        arrival_ns = np.zeros(n, dtype=np.int64)
    else:
        raise ProfileError(source, "arrival.kind", f"unknown arrival {arrival.kind!r}; valid: poisson, closed")
    return isl, osl, arrival_ns
