"""Model and GPU profiles: frozen dataclasses, YAML loading, JSON-Schema validation.

Units: sizes in bytes or counts; GB/TB are decimal (1 GB = 1e9 B); Gb/s decimal gigabits.
Loading errors raise ProfileError naming the file, the field path and the reason.

INTERFACE (shared by emulator, plugin, CLI, agents). Field names are stable; the loader
functions below are implemented by the profiles module owner.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import ProfileError, UnknownIdError
from .profile_schema import read_yaml, validate

# What a run uses when nobody names a GPU or a model (plugin, suites, kvfabric run/sweep, capacity probe).
DEFAULT_GPU = "h100"
DEFAULT_MODEL = "llama3.1-8b"

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
        return _model_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<spec>") -> "ModelProfile":
        """Validate (schema + semantic checks) and build; errors name `source`."""
        return _model_from_dict(data, source)


@dataclass(frozen=True)
class GpuProfile:
    id: str
    name: str
    tflops: Mapping[str, float]  # dense peak per dtype: keys among bf16, fp8, fp4 (bf16 required)
    hbm_capacity_gb: float  # decimal GB
    hbm_tb_per_s: float  # decimal TB/s
    scaleup_gb_per_s: float  # per direction, decimal GB/s
    nic_gbps: float  # decimal Gb/s per GPU
    # Timing terms (emulator/timing.py has the formulas; README "Timing" the sources).
    compute_efficiency: float = 0.5  # achieved/peak FLOPS of a large GEMM (the GEMM curve's limit)
    memory_efficiency: float = 0.8  # achieved/peak HBM bandwidth
    gemm_half_gflop: float = 0.0  # per-GEMM GFLOP (per rank) at which GEMM efficiency is half its peak
    attention_efficiency: float = 0.5  # achieved/peak FLOPS of the attention kernel at long sequences
    attention_half_keys: float = 0.0  # keys per query at which attention efficiency is half its peak
    step_overhead_us: float = 0.0  # per forward step: scheduling, input preparation, sampling
    layer_overhead_us: float = 0.0  # per layer and step: kernel launches and small kernels
    decode_step_overhead_us: float = 0.0  # per decode step (engines replay decode as CUDA graphs)
    decode_layer_overhead_us: float = 0.0  # per layer and decode step
    allreduce_latency_us: float = 0.0  # fixed cost of one all-reduce
    allreduce_efficiency: float = 1.0  # achieved bus bandwidth / link bandwidth of an all-reduce
    alltoall_latency_us: float = 0.0  # fixed cost of one expert-parallel all-to-all (dispatch or combine)
    alltoall_efficiency: float = 1.0  # achieved / link bandwidth of an all-to-all
    scaleup_domain: int = 8  # GPUs joined by the scale-up link (NVLink domain); larger groups use the NIC
    allreduce_in_switch: bool = False  # the scale-up switch reduces (NVLink SHARP): all-reduce moves 1x, not 2(n-1)/n
    # Serving framework -> extra host time per forward step (prefill or decode) on top of the
    # step overheads above, which were fitted on TensorRT-LLM/NIM (README "Timing", framework overhead).
    framework_step_overhead_us: Mapping[str, float] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    source: str = ""
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (same shape as the YAML)."""
        return _gpu_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<spec>") -> "GpuProfile":
        """Validate (schema + semantic checks) and build; errors name `source`."""
        return _gpu_from_dict(data, source)


GPU_TIMING_FIELDS: tuple[str, ...] = (
    "gemm_half_gflop", "attention_efficiency", "attention_half_keys", "step_overhead_us", "layer_overhead_us",
    "decode_step_overhead_us", "decode_layer_overhead_us", "allreduce_latency_us", "allreduce_efficiency", "alltoall_latency_us", "alltoall_efficiency", "scaleup_domain",
    "allreduce_in_switch")
"""GPU profile fields the timing terms read beyond the datasheet figures and the two efficiencies."""


def shipped_profile_dir() -> Path:
    """Directory holding the shipped profiles/ (models/, gpus/)."""
    return Path(__file__).resolve().parents[1] / "data" / "profiles"



# --------------------------------------------------------------------------- dict forms

_MODEL_ORDER = ("id", "name", "aliases", "attention", "layers", "hidden_size", "heads", "kv_heads",
                "head_dim", "ffn_size", "vocab_size", "kv_dtype", "weight_dtype")


def _model_to_dict(m: ModelProfile) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(m, k) for k in _MODEL_ORDER}
    out["aliases"] = list(m.aliases)
    if m.mla is not None:
        out["mla"] = {k: getattr(m.mla, k) for k in
                      ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")}
        if m.mla.q_lora_rank is not None:
            out["mla"]["q_lora_rank"] = m.mla.q_lora_rank
    if m.sliding_window is not None:
        out["sliding_window"] = {"window": m.sliding_window.window,
                                 "layers": list(m.sliding_window.layers)}
    if m.moe is not None:
        out["moe"] = {k: getattr(m.moe, k) for k in
                      ("experts", "active_experts", "shared_experts", "expert_ffn_size", "dense_layers")}
    out["source"] = m.source
    return out


def _model_checks(d: Mapping[str, Any], source: str) -> None:
    """Rules JSON Schema cannot express (cross-field)."""
    attention, heads, kv_heads, layers = d["attention"], d["heads"], d["kv_heads"], d["layers"]
    if kv_heads > heads:
        raise ProfileError(source, "kv_heads", f"must be <= heads ({heads}), got {kv_heads}")
    if heads % kv_heads:
        raise ProfileError(source, "kv_heads",
                           f"heads ({heads}) must be a multiple of kv_heads, got {kv_heads}")
    if attention == "mha" and kv_heads != heads:
        raise ProfileError(source, "kv_heads",
                           f"attention 'mha' needs kv_heads == heads ({heads}), got {kv_heads}; use 'gqa'")
    mla = d.get("mla")
    if attention == "mla":
        if mla is None:
            raise ProfileError(source, "mla", "attention 'mla' requires an mla block "
                               "(kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim, v_head_dim)")
        qk = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
        if d["head_dim"] != qk:
            raise ProfileError(source, "head_dim", "for attention 'mla' must equal "
                               f"mla.qk_nope_head_dim + mla.qk_rope_head_dim ({qk}), got {d['head_dim']}")
    elif mla is not None:
        raise ProfileError(source, "mla", f"only allowed with attention 'mla' (attention is {attention!r})")
    sw = d.get("sliding_window")
    if sw is not None:
        for i, layer in enumerate(sw["layers"]):
            if layer >= layers:
                raise ProfileError(source, f"sliding_window.layers[{i}]",
                                   f"layer index must be < layers ({layers}), got {layer}")
    moe = d.get("moe")
    if moe is not None:
        if moe["active_experts"] > moe["experts"]:
            raise ProfileError(source, "moe.active_experts",
                               f"must be <= moe.experts ({moe['experts']}), got {moe['active_experts']}")
        if moe.get("dense_layers", 0) >= layers:
            raise ProfileError(source, "moe.dense_layers",
                               f"must be < layers ({layers}), got {moe['dense_layers']}")


def _model_from_dict(data: Mapping[str, Any], source: str, path: str | None = None) -> ModelProfile:
    data = dict(data) if isinstance(data, Mapping) else data
    validate(data, "model", source)
    _model_checks(data, source)
    mla = data.get("mla")
    sw = data.get("sliding_window")
    moe = data.get("moe")
    return ModelProfile(
        id=data["id"],
        name=data.get("name") or data["id"],
        attention=data["attention"],
        layers=data["layers"],
        hidden_size=data["hidden_size"],
        heads=data["heads"],
        kv_heads=data["kv_heads"],
        head_dim=data["head_dim"],
        ffn_size=data["ffn_size"],
        vocab_size=data["vocab_size"],
        kv_dtype=data.get("kv_dtype", "bf16"),
        weight_dtype=data.get("weight_dtype", "bf16"),
        mla=None if mla is None else MlaDims(
            kv_lora_rank=mla["kv_lora_rank"], qk_rope_head_dim=mla["qk_rope_head_dim"],
            qk_nope_head_dim=mla["qk_nope_head_dim"], v_head_dim=mla["v_head_dim"],
            q_lora_rank=mla.get("q_lora_rank")),
        sliding_window=None if sw is None else SlidingWindow(
            window=sw["window"], layers=tuple(sorted(sw["layers"]))),
        moe=None if moe is None else Moe(
            experts=moe["experts"], active_experts=moe["active_experts"],
            shared_experts=moe.get("shared_experts", 0), expert_ffn_size=moe["expert_ffn_size"],
            dense_layers=moe.get("dense_layers", 0)),
        aliases=tuple(data.get("aliases", ())),
        source=data.get("source", ""),
        path=path,
    )


_GPU_ORDER = ("id", "name", "aliases", "tflops", "hbm_capacity_gb", "hbm_tb_per_s",
              "scaleup_gb_per_s", "nic_gbps", "compute_efficiency", "memory_efficiency") + GPU_TIMING_FIELDS + ("source",)


def _gpu_to_dict(g: GpuProfile) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(g, k) for k in _GPU_ORDER}
    out["aliases"] = list(g.aliases)
    out["tflops"] = dict(g.tflops)
    if g.framework_step_overhead_us:
        out["framework_step_overhead_us"] = dict(g.framework_step_overhead_us)
    return out


_TIMING_TYPE: dict[str, Any] = {"scaleup_domain": int, "allreduce_in_switch": bool}


def _gpu_from_dict(data: Mapping[str, Any], source: str, path: str | None = None) -> GpuProfile:
    data = dict(data) if isinstance(data, Mapping) else data
    validate(data, "gpu", source)
    return GpuProfile(
        id=data["id"],
        name=data.get("name") or data["id"],
        tflops={k: float(v) for k, v in data["tflops"].items()},
        hbm_capacity_gb=float(data["hbm_capacity_gb"]),
        hbm_tb_per_s=float(data["hbm_tb_per_s"]),
        scaleup_gb_per_s=float(data["scaleup_gb_per_s"]),
        nic_gbps=float(data["nic_gbps"]),
        compute_efficiency=float(data.get("compute_efficiency", 0.5)),
        memory_efficiency=float(data.get("memory_efficiency", 0.8)),
        **{k: _TIMING_TYPE.get(k, float)(data[k]) for k in GPU_TIMING_FIELDS if k in data},
        framework_step_overhead_us={str(k).lower(): float(v) for k, v in data.get("framework_step_overhead_us", {}).items()},
        aliases=tuple(data.get("aliases", ())),
        source=data.get("source", ""),
        path=path,
    )


# --------------------------------------------------------------------------- files and search

_KIND_SUBDIR = {"model": "models", "gpu": "gpus"}
_YAML_SUFFIXES = (".yaml", ".yml")


def is_path_like(name: str) -> bool:
    """A name containing '/' or ending in .yaml/.yml names a file, not an id."""
    return "/" in name or os.sep in name or name.lower().endswith(_YAML_SUFFIXES)


def _stat_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1024)
def _read_cached(path: str, mtime_ns: int, size: int) -> Any:
    # Keyed by mtime and size so an edited file is re-read; callers must not mutate the result.
    return read_yaml(path)


@functools.lru_cache(maxsize=1024)
def _build_cached(kind: str, path: str, mtime_ns: int, size: int) -> ModelProfile | GpuProfile:
    data = _read_cached(path, mtime_ns, size)
    _check_kind(data, kind, path)
    build = _model_from_dict if kind == "model" else _gpu_from_dict
    return build(data, path, path)


def _detect_kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if data.get("kind") in _KIND_SUBDIR:
        return data["kind"]
    return "gpu" if "tflops" in data else "model"


def _check_kind(data: Any, kind: str, source: str) -> None:
    found = _detect_kind(data)
    if found is not None and found != kind:
        raise ProfileError(source, "", f"is a {found} profile, expected a {kind} profile")


def _load_file(path: str | Path, kind: str) -> ModelProfile | GpuProfile:
    p = Path(path).expanduser()
    p = p.resolve() if p.exists() else p
    return _build_cached(kind, *_stat_key(p))


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.suffix.lower() in _YAML_SUFFIXES and p.is_file())


def _candidate_files(kind: str, search_dirs: Sequence[str | Path]) -> Iterator[tuple[Path, bool]]:
    """(file, flat) in search order: each user dir (its models/ or gpus/ subdir, then YAML
    files directly in it), then the shipped dir. `flat` files may hold either kind."""
    for d in search_dirs:
        d = Path(d).expanduser()
        if not d.is_dir():
            raise ProfileError(str(d), "", "profile directory does not exist")
        sub = d / _KIND_SUBDIR[kind]
        if sub.is_dir():
            for f in _yaml_files(sub):
                yield f.resolve(), False
        for f in _yaml_files(d):
            yield f.resolve(), True
    shipped = shipped_profile_dir() / _KIND_SUBDIR[kind]
    if shipped.is_dir():
        for f in _yaml_files(shipped):
            yield f.resolve(), False


def _names_of(path: Path, data: Any) -> list[str]:
    if not isinstance(data, dict):
        return [path.stem]
    ident = data.get("id")
    names = [ident if isinstance(ident, str) and ident else path.stem]
    aliases = data.get("aliases")
    if isinstance(aliases, list):
        names += [a for a in aliases if isinstance(a, str)]
    return names


def _index(kind: str, search_dirs: Sequence[str | Path]) -> tuple[dict[str, Path], list[Path]]:
    """Map lower-cased id/alias -> file (first found wins) and the files that own an id.

    Only files whose id is asked for are fully validated, so one broken user file does not
    block loading another profile; an unparseable file is indexed under its file stem."""
    by_name: dict[str, Path] = {}
    owners: list[Path] = []
    for f, flat in _candidate_files(kind, search_dirs):
        key = _stat_key(f)
        try:
            data = _read_cached(*key)
        except ProfileError:
            data = None
        if flat and data is not None and _detect_kind(data) not in (None, kind):
            continue
        names = _names_of(f, data)
        if names[0].lower() in by_name:
            continue  # shadowed by an earlier (user) profile with the same id
        owners.append(f)
        for n in names:
            by_name.setdefault(n.lower(), f)
    return by_name, owners


def _load(kind: str, name_or_path: str, search_dirs: Sequence[str | Path]) -> Any:
    if is_path_like(name_or_path):
        return _load_file(name_or_path, kind)
    by_name, _ = _index(kind, search_dirs)
    f = by_name.get(name_or_path.strip().lower())
    if f is None:
        raise UnknownIdError(kind, name_or_path, sorted(set(valid_names(kind, search_dirs))))
    return _build_cached(kind, *_stat_key(f))


def valid_names(kind: str, search_dirs: Sequence[str | Path] = ()) -> list[str]:
    """Every id and alias that resolves for `kind` ('model' or 'gpu'), in search order."""
    by_name, owners = _index(kind, search_dirs)
    out: list[str] = []
    for f in owners:
        try:
            data = _read_cached(*_stat_key(f))
        except ProfileError:
            data = None
        out += [n for n in _names_of(f, data) if by_name.get(n.lower()) == f]
    return out


def load_model(name_or_path: str, search_dirs: Sequence[str | Path] = ()) -> ModelProfile:
    """Resolve a model id, alias, or path to a YAML file. User dirs are searched before shipped ones."""
    return _load("model", name_or_path, search_dirs)


def load_gpu(name_or_path: str, search_dirs: Sequence[str | Path] = ()) -> GpuProfile:
    """Resolve a GPU id, alias, or path to a YAML file. User dirs are searched before shipped ones."""
    return _load("gpu", name_or_path, search_dirs)


def _list(kind: str, search_dirs: Sequence[str | Path]) -> list[Any]:
    _, owners = _index(kind, search_dirs)
    profiles = [_build_cached(kind, *_stat_key(f)) for f in owners]
    return sorted(profiles, key=lambda p: p.id)


def list_models(search_dirs: Sequence[str | Path] = ()) -> list[ModelProfile]:
    """Every resolvable model profile (validated; a bad file raises ProfileError), sorted by id."""
    return _list("model", search_dirs)


def list_gpus(search_dirs: Sequence[str | Path] = ()) -> list[GpuProfile]:
    """Every resolvable GPU profile (validated; a bad file raises ProfileError), sorted by id."""
    return _list("gpu", search_dirs)
