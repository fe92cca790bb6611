"""The storage tier of a scenario: the `store:` block of a suite scenario, validated (pure).

A store holds inactive KV pages (a bounded DRAM tier, optionally a file tier on local disk,
LRU eviction). Three modes, one per scenario:

- prefix:  a request's first H tokens (H = hit_ratio x ISL, whole pages, at least one token
           left to compute) are fetched from the store by the prefill side; the emulated GPU
           computes only the suffix with attention over the whole prefix;
- resume:  a returning conversation's KV (its earlier turns, hit_ratio x ISL) is fetched by
           the decode side before it continues, while prefill computes the new turn and sends
           decode only the new turn's pages;
- offload: decode writes every finished request's KV (ISL tokens) back to the store.

`reuse` is the fraction of requests that find anything in the store (prefix: requests sharing
a cached prefix; resume: returning sessions); the rest are full prefills.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ..errors import ProfileError

STORE_MODES = ("prefix", "resume", "offload")
EVICTIONS = ("lru",)
FRACTION_KINDS = ("fixed", "uniform")
MAX_STORE_MIB = 1 << 20  # 1 TiB: a bigger tier on one emulated node is a typo
FIELDS = ("mode", "dram_mib", "file_mib", "file_dir", "eviction", "hit_ratio", "reuse")


@dataclass(frozen=True)
class Fraction:
    """A seeded fraction per request: fixed(value) or uniform(low, high), all in [0, 1]."""

    kind: str = "fixed"
    value: float | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class StoreSpec:
    mode: str = "prefix"
    dram_mib: float = 256.0
    file_mib: float = 0.0  # 0: no file tier
    file_dir: str | None = None  # where the file tier's file lives (default: the system temp dir)
    eviction: str = "lru"
    hit_ratio: Fraction = Fraction("fixed", 0.75)
    reuse: float = 1.0

    @property
    def fetches(self) -> bool:
        return self.mode in ("prefix", "resume")

    @property
    def fetch_side(self) -> str:
        """Which agent's host does the store's client traffic: prefill for prefix hits, decode otherwise."""
        return "prefill" if self.mode == "prefix" else "decode"

    def to_spec(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "StoreSpec":
        d = dict(spec)
        return cls(**{**d, "hit_ratio": Fraction(**d["hit_ratio"])})


def _number(value: Any, source: str, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ProfileError(source, field, f"must be a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise ProfileError(source, field, f"must be within [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def parse_fraction(value: Any, source: str, field: str) -> Fraction:
    """A fraction from suite YAML: a number (fixed) or {kind: fixed|uniform, value | low, high}."""
    if not isinstance(value, Mapping):
        return Fraction("fixed", _number(value, source, field, 0.0, 1.0))
    unknown = sorted(set(value) - {"kind", "value", "low", "high"})
    if unknown:
        raise ProfileError(source, f"{field}.{unknown[0]}", "unknown key; valid: kind, value, low, high")
    kind = value.get("kind", "fixed")
    if kind not in FRACTION_KINDS:
        raise ProfileError(source, f"{field}.kind", f"unknown kind {kind!r}; valid: {', '.join(FRACTION_KINDS)}")
    if kind == "fixed":
        if "value" not in value:
            raise ProfileError(source, f"{field}.value", "required for kind fixed")
        return Fraction("fixed", _number(value["value"], source, f"{field}.value", 0.0, 1.0))
    for k in ("low", "high"):
        if k not in value:
            raise ProfileError(source, f"{field}.{k}", "required for kind uniform")
    low = _number(value["low"], source, f"{field}.low", 0.0, 1.0)
    high = _number(value["high"], source, f"{field}.high", 0.0, 1.0)
    if low > high:
        raise ProfileError(source, f"{field}.high", f"must be >= low ({low:g}), got {high:g}")
    return Fraction("uniform", None, low, high)


def parse_store(value: Any, source: str = "<scenario>", where: str = "store") -> StoreSpec:
    """A StoreSpec from a suite's `store:` mapping; a bad field raises ProfileError naming it."""
    if isinstance(value, StoreSpec):
        return value
    if not isinstance(value, Mapping):
        raise ProfileError(source, where, f"must be a mapping of {', '.join(FIELDS)}, got {type(value).__name__}")
    unknown = sorted(set(map(str, value)) - set(FIELDS))
    if unknown:
        raise ProfileError(source, f"{where}.{unknown[0]}", f"unknown key; valid: {', '.join(FIELDS)}")
    mode = value.get("mode", "prefix")
    if mode not in STORE_MODES:
        raise ProfileError(source, f"{where}.mode", f"unknown mode {mode!r}; valid: {', '.join(STORE_MODES)}")
    eviction = value.get("eviction", "lru")
    if eviction not in EVICTIONS:
        raise ProfileError(source, f"{where}.eviction", f"unknown eviction {eviction!r}; valid: {', '.join(EVICTIONS)}")
    dram = _number(value.get("dram_mib", StoreSpec.dram_mib), source, f"{where}.dram_mib", 1.0, MAX_STORE_MIB)
    file_mib = _number(value.get("file_mib", 0.0), source, f"{where}.file_mib", 0.0, MAX_STORE_MIB)
    file_dir = value.get("file_dir")
    if file_dir is not None and (not isinstance(file_dir, str) or not file_dir.strip()):
        raise ProfileError(source, f"{where}.file_dir", f"must be a directory path, got {file_dir!r}")
    if file_dir is not None and not file_mib:
        raise ProfileError(source, f"{where}.file_dir", "given without file_mib (the file tier's size)")
    hit = parse_fraction(value.get("hit_ratio", 0.75), source, f"{where}.hit_ratio")
    reuse = _number(value.get("reuse", 1.0), source, f"{where}.reuse", 0.0, 1.0)
    return StoreSpec(mode, dram, file_mib, file_dir, eviction, hit, reuse)
