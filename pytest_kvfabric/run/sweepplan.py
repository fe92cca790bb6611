"""The transfer-size sweep (pure): which sizes, what scenario measures each, what a point keeps.

A point is a synthetic scenario (fixed-size writes, every page verified) run closed-loop:
`depth` requests of `batch` writes each are in flight; each completed request admits the next
until `seconds` have passed, so every size takes a bounded time whatever the transport's rate.
It runs through the same runner and agents as every other case: there is no second data path.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from ..errors import ProfileError
from ..core.scenario import Arrival, Scenario, Synthetic, Workload
from ..endpoint.prefill import MAX_INFLIGHT_BYTES

SWEEP_FORMAT = "pytest-kvfabric-sweep"
DEFAULT_SIZES = "4KiB..64MiB"
DEFAULT_SECONDS = 1.0
MIN_WRITES = 16  # a point's plan holds at least this many writes
MAX_ROWS = 200_000  # plan rows per point: bounds the agents' memory at small sizes
CEILING_BYTES_PER_S = 50e9  # the most a point is planned for (400 Gb/s): its plan never runs dry early
MIN_POOL = 32 << 20
INFLIGHT_BYTES = MAX_INFLIGHT_BYTES  # the prefill agent's default in-flight byte window
UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
         "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str, where: str = "--sizes") -> int:
    """'64KiB' -> 65536 (KiB/MiB/GiB and K/M/G binary, KB/MB/GB decimal, plain bytes)."""
    m = _SIZE.match(text)
    if not m or m.group(2).lower() not in UNITS:
        raise ProfileError("<cli>", where, f"not a size: {text!r} (e.g. 4096, 64KiB, 1MiB)")
    value = int(m.group(1)) * UNITS[m.group(2).lower()]
    if value < 1:
        raise ProfileError("<cli>", where, f"size must be >= 1 byte, got {text!r}")
    return value


def parse_sizes(text: str, where: str = "--sizes") -> list[int]:
    """'4KiB..64MiB' (powers of two from the first up to the last), or a comma list of sizes."""
    if ".." in text:
        lo_t, _, hi_t = text.partition("..")
        lo, hi = parse_size(lo_t, where), parse_size(hi_t, where)
        if lo > hi:
            raise ProfileError("<cli>", where, f"range {text!r} runs backwards")
        out = [lo]
        while out[-1] * 2 <= hi:
            out.append(out[-1] * 2)
        return out
    sizes = [parse_size(t, where) for t in text.split(",") if t.strip()]
    if not sizes:
        raise ProfileError("<cli>", where, "no sizes given")
    return sorted(set(sizes))


def parse_counts(text: str, where: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ProfileError("<cli>", where, f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise ProfileError("<cli>", where, f"every value must be >= 1, got {text!r}")
    return sorted(set(vals))


def point_scenario(base: Scenario, transport: str, size: int, batch: int, depth: int, seconds: float,
                   params: Mapping[str, Any]) -> Scenario:
    """The closed-loop synthetic scenario of one point."""
    rows_cap = max(MIN_WRITES, min(MAX_ROWS, int(CEILING_BYTES_PER_S * seconds / size) + 1))
    requests = max(-(-MIN_WRITES // batch), depth, -(-rows_cap // batch))
    # One slot per write that can be in flight (the window holds at most 64 MiB), plus one.
    slots = min(depth * batch, max(1, INFLIGHT_BYTES // size)) + 1
    pool = max(MIN_POOL, max(2, slots) * (-(-size // 64) * 64))
    return dataclasses.replace(
        base,
        id=f"sweep-{size}-b{batch}",
        transport=transport,
        transport_params=dict(params),
        synthetic=Synthetic(nbytes=size, transfers=batch, batch=batch, requests=requests),
        workload=Workload(requests=requests, duration_s=seconds,
                          arrival=Arrival(kind="closed", concurrency=depth)),
        pacing="emulated",
        pool_bytes=int(pool),
        slo={},
    )


def timeout_s(size: int, batch: int, seconds: float) -> float:
    """A point's run may take its time budget, the minimum writes at 100 MB/s, and a margin."""
    return seconds + MIN_WRITES * max(batch, 1) * size / 100e6 + 30.0


POINT_KEYS = ("transfers", "bytes", "duration_s", "throughput_gbps", "throughput_GBps", "latency_us",
              "cpu_s_per_gb", "spin_s_per_gb", "integrity", "latency_hist_us", "post_call_us", "retransmits")


def point_record(transport: str, size: int, batch: int, depth: int, result: Mapping[str, Any]) -> dict[str, Any]:
    """What a sweep report keeps of one point."""
    rec: dict[str, Any] = {"transport": transport, "size_bytes": size, "batch": batch, "depth": depth}
    rec.update({k: result.get(k) for k in POINT_KEYS})
    sender = (result.get("data_path") or {}).get("sender") or {}
    rec["data_path"] = sender.get("description")
    return rec


def best_gbps(sweep: Mapping[str, Any], transport: str) -> float | None:
    """The most a transport carried at any size of a sweep (what the pair can carry)."""
    vals = [p.get("throughput_gbps") for p in sweep.get("points") or () if p.get("transport") == transport]
    vals = [float(v) for v in vals if v is not None]
    return max(vals) if vals else None
