"""Capacity told up front (pure): the bandwidth a paced scenario needs against what the pair
carried, and the sentence that says so when an SLO miss follows from too little of it.

`needed_gbps` is the plan's sustained rate: every byte of the run over the emulated prefill time
of all its requests back to back (the rate at which streaming hides the transfer behind prefill;
`kvfabric plan` prints it as required_gbps). `carried_gbps` comes from a short unpaced probe of
the same transport on the same pair (capacity_probe.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from .metrics import BUILTIN

# SLOs a too-slow link can miss on its own (declared on each metric: link_bound=True).
TIMING_KEYS = BUILTIN.link_bound_slo_keys


def needed_gbps(total_bytes: int, prefill_ns_sum: float) -> float | None:
    return total_bytes * 8 / prefill_ns_sum if prefill_ns_sum > 0 else None


@dataclass(frozen=True)
class Capacity:
    needed_gbps: float | None
    carried_gbps: float | None
    source: str  # how carried_gbps was measured

    @property
    def short(self) -> bool:
        """The pair carried less than the scenario needs."""
        return self.needed_gbps is not None and self.carried_gbps is not None and self.carried_gbps < self.needed_gbps

    def sentence(self) -> str:
        need = "-" if self.needed_gbps is None else f"{self.needed_gbps:.3g}"
        have = "-" if self.carried_gbps is None else f"{self.carried_gbps:.3g}"
        return f"scenario needs {need} Gb/s; this pair carried {have} Gb/s ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "short": self.short}


def explains(capacity: Capacity | None, failed_keys: Iterable[str]) -> str | None:
    """The capacity note for an SLO failure, or None when capacity does not explain it."""
    if capacity is None or not capacity.short:
        return None
    keys = sorted(set(failed_keys) & TIMING_KEYS)
    if not keys:
        return None
    return (f"capacity: {capacity.sentence()}: {', '.join(keys)} missed because the link is too slow for this "
            "scenario, not necessarily because of the transport (run it on a deployment-class link, or lower the load)")


def from_record(rec: Mapping[str, Any] | None) -> Capacity | None:
    if not rec:
        return None
    return Capacity(rec.get("needed_gbps"), rec.get("carried_gbps"), str(rec.get("source", "")))
