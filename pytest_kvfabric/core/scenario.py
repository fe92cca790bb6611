"""The Scenario: everything that decides which KV bytes move and when. Frozen and small.

The controller sends `Scenario.to_spec()` (plain JSON) to each agent; agents call
`Scenario.from_spec()` and rebuild the TransferPlan themselves, so the plan never crosses
the control channel. Profiles travel resolved (as dicts), so a user's own profile file
does not need to exist on a remote host.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .profiles import GpuProfile, ModelProfile

ACCESS_PATTERNS = ("layer", "block")
DISTRIBUTIONS = ("fixed", "uniform", "normal", "lognormal")
ARRIVALS = ("poisson", "closed")
PACINGS = ("emulated", "none")
# Fault injection (--kv-inject / kvfabric run --inject), applied once per run by the decode agent:
# corrupt: flip a byte inside a placed page; misplace: overwrite a placed page with another one;
# drop: lose one write (bytes and report); kill: SIGKILL the decode agent; stall: hang it.
FAULTS = ("corrupt", "misplace", "drop", "kill", "stall")
INJECT_PARAM = "_inject"  # the transport_params key carrying it; agents strip "_" keys for transports
MIB = 1 << 20
# The one pool default (emulated HBM per agent, all its ranks): bounded so a laptop runs it; long
# requests stream through reused slots. Suites, the pytest options and the CLI all fall back to it.
DEFAULT_POOL_MIB = 64


@dataclass(frozen=True)
class Deployment:
    """How one side (prefill or decode) is sharded. kv_dtype None means the model's default."""

    tp: int = 1
    pp: int = 1
    page_size: int = 16  # tokens per KV page (block)
    access: str = "layer"  # "layer": one transfer per layer per page; "block": one per page, all stage layers
    kv_dtype: str | None = None
    dp_attention: bool = False  # data-parallel attention: the MLA latent is not replicated across TP ranks
    chunk_tokens: int = 0  # chunked prefill chunk size in tokens; 0 = whole prompt in one chunk
    ep: int = 1  # expert parallelism: MoE experts spread over ep of the tp ranks (tp % ep == 0)
    max_batch_tokens: int = 0  # continuous batching: token budget per prefill step (then chunk_tokens is unused); 0 = one request per step
    framework: str = ""  # serving framework whose extra per-step host time the GPU profile lists ("" = none, the fitted baseline)


@dataclass(frozen=True)
class Distribution:
    """A seeded token-count distribution. Params used per kind:
    fixed(value), uniform(low, high), normal(mean, std, low, high clip),
    lognormal(mean = median of the distribution, std = sigma of the underlying normal, low, high clip)."""

    kind: str = "fixed"
    value: int | None = None
    low: int | None = None
    high: int | None = None
    mean: float | None = None
    std: float | None = None

    @classmethod
    def fixed(cls, value: int) -> "Distribution":
        return cls(kind="fixed", value=int(value))


@dataclass(frozen=True)
class Arrival:
    kind: str = "closed"  # "poisson" (open loop at rate_per_s) | "closed" (concurrency in flight)
    rate_per_s: float | None = None
    concurrency: int = 1


@dataclass(frozen=True)
class Workload:
    isl: Distribution = field(default_factory=lambda: Distribution.fixed(128))
    osl: Distribution = field(default_factory=lambda: Distribution.fixed(128))
    arrival: Arrival = field(default_factory=Arrival)
    requests: int = 1
    duration_s: float | None = None  # if set, stop issuing new requests after this long
    preset: str | None = None  # name of the application preset it came from, for reports


@dataclass(frozen=True)
class Synthetic:
    """Model-independent transfers for conformance: fixed sizes, alignment skew, batch shape.

    Each request moves `transfers` writes of `nbytes`; groups of `batch` become ready together,
    one group every `interval_us`; every offset is skewed by `offset_skew` bytes (unaligned)."""

    nbytes: int
    transfers: int = 1
    batch: int = 1
    requests: int = 1
    offset_skew: int = 0
    interval_us: float = 0.0


@dataclass(frozen=True)
class Topology:
    """A traffic matrix (xPyD): prefill and decode instances, each its own agent(s), and the rule
    that routes requests to decode instances (emulator/flows.py: ROUTINGS and what each does)."""

    prefill: int = 1
    decode: int = 1
    routing: str = "round_robin"

    @property
    def shape(self) -> tuple[int, int]:
        return self.prefill, self.decode


@dataclass(frozen=True)
class Scenario:
    id: str
    model: ModelProfile
    gpu: GpuProfile
    prefill: Deployment = field(default_factory=Deployment)
    decode: Deployment = field(default_factory=Deployment)
    workload: Workload = field(default_factory=Workload)
    seed: int = 0
    pacing: str = "emulated"
    pool_bytes: int = DEFAULT_POOL_MIB * MIB  # emulated HBM per agent (all its ranks)
    transport: str = "tcp"
    transport_params: Mapping[str, Any] = field(default_factory=dict)
    slo: Mapping[str, Any] = field(default_factory=dict)  # SLO key -> threshold (see slo.py)
    verify: bool = True  # verify every page at the decode side (outside the timed path)
    synthetic: Synthetic | None = None  # conformance: fixed-size transfers instead of the model's layout
    rails: int = 1  # agents per instance and side; prefill rank k on rail k mod rails (emulator/flows.py)
    topology: Topology = field(default_factory=Topology)  # instances and routing (one pair by default)
    notes: tuple[str, ...] = ()  # what the harness changed and why (e.g. TP raised to fit HBM); reported, not sent

    def kv_dtype(self, side: str = "prefill") -> str:
        dep = self.prefill if side == "prefill" else self.decode
        return dep.kv_dtype or self.model.kv_dtype

    def replace(self, **changes: Any) -> "Scenario":
        return dataclasses.replace(self, **changes)

    def to_spec(self) -> dict[str, Any]:
        """Plain-JSON form sent to agents (profiles resolved to dicts)."""
        return {
            "id": self.id,
            "model": self.model.to_dict(),
            "gpu": self.gpu.to_dict(),
            "prefill": dataclasses.asdict(self.prefill),
            "decode": dataclasses.asdict(self.decode),
            "workload": dataclasses.asdict(self.workload),
            "seed": self.seed,
            "pacing": self.pacing,
            "pool_bytes": self.pool_bytes,
            "transport": self.transport,
            "transport_params": dict(self.transport_params),
            "slo": dict(self.slo),
            "verify": self.verify,
            "synthetic": dataclasses.asdict(self.synthetic) if self.synthetic else None,
            "rails": self.rails,
            "topology": dataclasses.asdict(self.topology),
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "Scenario":
        wl = dict(spec["workload"])
        workload = Workload(
            isl=Distribution(**wl.pop("isl")),
            osl=Distribution(**wl.pop("osl")),
            arrival=Arrival(**wl.pop("arrival")),
            **wl,
        )
        return cls(
            id=spec["id"],
            model=ModelProfile.from_dict(spec["model"]),
            gpu=GpuProfile.from_dict(spec["gpu"]),
            prefill=Deployment(**spec["prefill"]),
            decode=Deployment(**spec["decode"]),
            workload=workload,
            seed=int(spec["seed"]),
            pacing=spec["pacing"],
            pool_bytes=int(spec["pool_bytes"]),
            transport=spec["transport"],
            transport_params=dict(spec.get("transport_params", {})),
            slo=dict(spec.get("slo", {})),
            verify=bool(spec.get("verify", True)),
            synthetic=Synthetic(**spec["synthetic"]) if spec.get("synthetic") else None,
            rails=int(spec.get("rails", 1)),
            topology=Topology(**spec.get("topology") or {}),
        )

    @property
    def multi_agent(self) -> bool:
        """More than one agent per side: the flows runner (run/flows.py) runs it."""
        return self.rails != 1 or self.topology.shape != (1, 1)
