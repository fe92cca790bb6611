"""Model and GPU profiles: frozen dataclasses, YAML loading, JSON-Schema validation.

Units: sizes in bytes or counts; GB/TB are decimal (1 GB = 1e9 B); Gb/s decimal gigabits.
Loading errors raise ProfileError naming the file, the field path and the reason.

INTERFACE (shared by emulator, plugin, CLI, agents). Field names are stable; the loader
functions below are implemented by the profiles module owner.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

KV_DTYPE_BITS: Mapping[str, int] = {"fp4": 4, "fp8": 8, "bf16": 16, "fp16": 16, "fp32": 32}
"""Bits per KV element. fp4 packs two elements per byte (block scales are not modelled)."""


@dataclass(frozen=True)
class MlaDims:
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None


@dataclass(frozen=True)
class SlidingWindow:
    window: int  # tokens kept by a sliding-window layer
    layers: tuple[int, ...]  # indices of the sliding-window layers (0-based)


@dataclass(frozen=True)
class Moe:
    experts: int
    active_experts: int
    shared_experts: int
    expert_ffn_size: int
    dense_layers: int  # number of leading dense (non-MoE) layers


@dataclass(frozen=True)
class ModelProfile:
    id: str
    name: str
    attention: str  # "mha" | "gqa" | "mla"
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int  # explicit; never derived from hidden_size/heads
    ffn_size: int  # dense FFN intermediate size
    vocab_size: int
    kv_dtype: str = "bf16"  # default KV dtype
    weight_dtype: str = "bf16"  # dtype of most weights (timing: weight bytes and peak FLOPS)
    mla: MlaDims | None = None
    sliding_window: SlidingWindow | None = None
    moe: Moe | None = None
    aliases: tuple[str, ...] = ()
    source: str = ""
    path: str | None = None  # file it was loaded from (None for built in / spec)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (same shape as the YAML), used to ship a resolved profile to agents."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<spec>") -> "ModelProfile":
        raise NotImplementedError


@dataclass(frozen=True)
class GpuProfile:
    id: str
    name: str
    tflops: Mapping[str, float]  # dense peak per dtype: keys among bf16, fp8, fp4 (bf16 required)
    hbm_capacity_gb: float  # decimal GB
    hbm_tb_per_s: float  # decimal TB/s
    scaleup_gb_per_s: float  # per direction, decimal GB/s
    nic_gbps: float  # decimal Gb/s per GPU
    compute_efficiency: float = 0.5  # achieved/peak FLOPS for prefill
    memory_efficiency: float = 0.8  # achieved/peak HBM bandwidth
    aliases: tuple[str, ...] = ()
    source: str = ""
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<spec>") -> "GpuProfile":
        raise NotImplementedError


def shipped_profile_dir() -> Path:
    """Directory holding the shipped profiles/ (models/, gpus/)."""
    return Path(__file__).resolve().parent / "data" / "profiles"


def load_model(name_or_path: str, search_dirs: Sequence[str | Path] = ()) -> ModelProfile:
    """Resolve a model id, alias, or path to a YAML file. User dirs are searched before shipped ones."""
    raise NotImplementedError


def load_gpu(name_or_path: str, search_dirs: Sequence[str | Path] = ()) -> GpuProfile:
    raise NotImplementedError


def list_models(search_dirs: Sequence[str | Path] = ()) -> list[ModelProfile]:
    raise NotImplementedError


def list_gpus(search_dirs: Sequence[str | Path] = ()) -> list[GpuProfile]:
    raise NotImplementedError
