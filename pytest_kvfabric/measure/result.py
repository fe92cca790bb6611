"""Result of one scenario run: the figures `kvfabric run --json` writes, under stable names.

Every time is measured on the PREFILL agent's monotonic clock (agents on different hosts
share no clock). A write completes when the prefill agent reads the target's ACK, so a
write's latency includes half a round trip after the bytes were placed.
See the README section on `kvfabric run` for every key, its unit and how it is computed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping


def plain(value: Any) -> Any:
    """JSON-ready Python values without a JSON round trip: numpy scalars and arrays become
    Python numbers and lists, tuples lists, mapping keys strings; other objects their str."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return plain(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return plain(tolist())
    return str(value)


@dataclass
class Result:
    scenario: str
    transport: str
    model: str
    gpu: str
    pair: str
    bytes: int = 0
    transfers: int = 0
    requests: int = 0
    requests_completed: int = 0
    duration_s: float = 0.0
    throughput_gbps: float | None = None
    throughput_GBps: float | None = None  # noqa: N815 - unit spelled as in the JSON
    latency_us: dict[str, float | None] = field(default_factory=dict)
    exposed_ms: dict[str, float | None] = field(default_factory=dict)
    exposed_fraction: dict[str, float | None] = field(default_factory=dict)  # exposed / prefill time
    transfer_ms: dict[str, float | None] = field(default_factory=dict)
    ttft_ms: dict[str, float | None] = field(default_factory=dict)
    tpot_ms: dict[str, float | None] = field(default_factory=dict)
    post_lateness_us: dict[str, float | None] = field(default_factory=dict)
    post_call_us: dict[str, float | None] = field(default_factory=dict)  # how long each post() held the sender
    cpu_s_per_gb: dict[str, float | None] = field(default_factory=dict)
    spin_s_per_gb: dict[str, float | None] = field(default_factory=dict)  # of cpu_s_per_gb: busy-waiting
    retransmits: int | None = None
    connect_ms: float | None = None
    register_ms: float | None = None
    integrity: dict[str, Any] = field(default_factory=dict)
    data_path: dict[str, Any] = field(default_factory=dict)
    ttft_met_fraction: float | None = None
    notifications: int = 0  # per-request notifications the decode side received from its transport
    pacing: str = "emulated"
    # Compact distributions for plots and the HTML report (README: `kvfabric run` JSON keys).
    latency_hist_us: dict[str, Any] | None = None  # log-spaced histogram of write latency (histogram.py)
    exposed_ms_requests: dict[str, Any] = field(default_factory=dict)  # {stride, values}: per completed request
    timeline: dict[str, Any] | None = None  # one request's layers: ready vs posted/completed/placed
    # Multi-agent runs (run/flows.py; measure/flowstats.py defines every figure); None for one pair.
    rails: int = 1
    topology: dict[str, Any] | None = None  # {"prefill", "decode", "routing"}
    per_rail: list[dict[str, Any]] | None = None  # per rail: bytes, throughput, latency, exposed, interface
    per_instance: dict[str, list[dict[str, Any]]] | None = None  # {"prefill": [...], "decode": [...]}
    flows: list[dict[str, Any]] | None = None  # per flow (sender -> receiver agent), retransmits included
    fairness_jain: float | None = None  # Jain's index over the flows' throughputs
    incast: list[dict[str, Any]] | None = None  # per decode instance with fan-in > 1
    incast_penalty_ms: float | None = None  # the largest incast penalty (exposed p99 vs one sender)
    flow_start_late_us: dict[str, float | None] | None = None  # how late flows began after the common start

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (keys documented in the README, `kvfabric run` section; stable across releases)."""
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Result":
        """A Result from its dict form; figures it has no field for (a plug-in's metrics) are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def ok(self) -> bool:
        return not self.integrity.get("errors") and self.requests_completed == self.requests
