"""Turn a Hugging Face `config.json` into a kvfabric model profile.

`profile_from_hf_config` is pure (dict in, profile dict out); `import_config` reads the file,
validates the result with the same schema and checks as shipped profiles, and writes YAML.
Covers llama/qwen/mistral-style GQA/MHA, deepseek_v3/kimi_k2-style MLA, and MoE configs
(Mixtral, Qwen-MoE, DeepSeek, gpt-oss), plus gpt-oss-style per-layer sliding windows.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ProfileError
from .limits import MAX_LAYERS, MAX_MODEL_DIM
from .profile_schema import json_type_name, parse_json_text, read_text
from .profiles import ModelProfile

_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
_SNAPSHOT_HASH = re.compile(r"^[0-9a-f]{40}$")


class _Config:
    """Typed access to one config mapping; every problem names the HF key."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, key: str, default: int | None = None, minimum: int = 1,
            maximum: int = MAX_MODEL_DIM) -> int:
        value = self.data.get(key)
        if value is None:
            if default is None:
                raise ProfileError(self.source, key, "missing key in the Hugging Face config")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(self.source, key,
                               f"expected integer, got {json_type_name(value)} {value!r}")
        if value < minimum:
            raise ProfileError(self.source, key, f"must be >= {minimum}, got {value}")
        if value > maximum:  # bounded before any per-layer list is built from it
            raise ProfileError(self.source, key, f"must be <= {maximum:,}, got {value:,}")
        return value

    def first_int(self, keys: tuple[str, ...], default: int | None = None, minimum: int = 1) -> int:
        for key in keys:
            if self.has(key):
                return self.int(key, minimum=minimum)
        if default is None:
            raise ProfileError(self.source, keys[0],
                               f"missing key in the Hugging Face config (also looked for {', '.join(keys[1:])})")
        return default


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    # Multimodal configs (Llama 4, Qwen-VL, ...) nest the language model under text_config.
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), Mapping):
        return config["text_config"]
    return config


def _weight_dtype(config: Mapping[str, Any]) -> str:
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        words = " ".join(str(quant.get(k, "")) for k in ("quant_method", "quant_algo", "fmt")).lower()
        if "fp4" in words:  # mxfp4 (gpt-oss), nvfp4 (modelopt)
            return "fp4"
        if "fp8" in words or "e4m3" in words:
            return "fp8"
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    return _DTYPES.get(str(dtype).replace("torch.", ""), "bf16")


def _sliding_window(cfg: _Config, layers: int) -> dict[str, Any] | None:
    types = cfg.data.get("layer_types")
    if isinstance(types, list):
        if len(types) != layers:
            raise ProfileError(cfg.source, "layer_types",
                               f"has {len(types)} entries, expected num_hidden_layers ({layers})")
        sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]
        if not sliding:
            return None
        return {"window": cfg.int("sliding_window"), "layers": sliding}
    if not cfg.has("sliding_window"):
        return None
    if "use_sliding_window" in cfg.data:  # Qwen2/3 style: opt-in, from layer max_window_layers on
        if not cfg.data["use_sliding_window"]:
            return None
        first = cfg.int("max_window_layers", default=0, minimum=0, maximum=MAX_LAYERS)
        sliding = list(range(first, layers))
    else:  # Mistral style: a non-null window applies to every layer
        sliding = list(range(layers))
    return {"window": cfg.int("sliding_window"), "layers": sliding} if sliding else None


def _moe(cfg: _Config, layers: int, ffn_size: int) -> dict[str, Any] | None:
    experts = cfg.first_int(("n_routed_experts", "num_local_experts", "num_experts"), default=0, minimum=0)
    if experts == 0:
        return None
    active = cfg.first_int(("num_experts_per_tok", "experts_per_token", "num_selected_experts"))
    expert_ffn = cfg.int("moe_intermediate_size") if cfg.has("moe_intermediate_size") else ffn_size
    shared = cfg.int("n_shared_experts", default=0, minimum=0)
    if not shared and cfg.has("shared_expert_intermediate_size"):
        # Qwen2-MoE: one wide shared expert, counted as its width in expert units.
        width = cfg.int("shared_expert_intermediate_size", minimum=0)
        shared = -(-width // expert_ffn)
    dense = cfg.int("first_k_dense_replace", default=0, minimum=0)
    only = cfg.data.get("mlp_only_layers") or []
    if only:
        if not isinstance(only, list) or sorted(only) != list(range(len(only))):
            raise ProfileError(cfg.source, "mlp_only_layers",
                               f"only leading dense layers can be represented, got {only!r}")
        dense = max(dense, len(only))
    for key in ("decoder_sparse_step", "moe_layer_freq"):
        if cfg.has(key) and cfg.int(key) != 1:
            raise ProfileError(cfg.source, key,
                               f"only MoE in every layer after the leading dense ones (1) can be represented, got {cfg.data[key]}")
    return {"experts": experts, "active_experts": active, "shared_experts": shared,
            "expert_ffn_size": expert_ffn, "dense_layers": min(dense, layers)}


def model_id_from(name: str) -> str:
    """'meta-llama/Llama-3.1-8B' -> 'llama-3.1-8b' (a valid profile id)."""
    last = name.rstrip("/").split("/")[-1].lower()
    ident = re.sub(r"[^a-z0-9._+-]+", "-", last).strip("-._+")
    return ident or "model"


def profile_from_hf_config(config: Mapping[str, Any], model_id: str | None = None,
                           source: str = "<config>") -> dict[str, Any]:
    """Model-profile dict (YAML shape) from a parsed config.json; ProfileError names the HF key."""
    if not isinstance(config, Mapping):
        raise ProfileError(source, "", f"expected a JSON object, got {json_type_name(config)}")
    name_or_path = str(config.get("_name_or_path") or "")
    cfg = _Config(_text_config(config), source)
    layers = cfg.int("num_hidden_layers", maximum=MAX_LAYERS)
    hidden = cfg.int("hidden_size")
    heads = cfg.int("num_attention_heads")
    ffn_size = cfg.int("intermediate_size")
    vocab = cfg.int("vocab_size")
    out: dict[str, Any] = {}
    if cfg.has("kv_lora_rank"):  # MLA: the KV is the compressed latent + the rope key
        rope, nope = cfg.int("qk_rope_head_dim"), cfg.int("qk_nope_head_dim")
        mla: dict[str, Any] = {"kv_lora_rank": cfg.int("kv_lora_rank"), "qk_rope_head_dim": rope,
                               "qk_nope_head_dim": nope, "v_head_dim": cfg.int("v_head_dim")}
        if cfg.has("q_lora_rank"):
            mla["q_lora_rank"] = cfg.int("q_lora_rank")
        attention, kv_heads, head_dim = "mla", heads, nope + rope
    else:
        mla = None
        kv_heads = cfg.int("num_key_value_heads", default=heads)
        if cfg.has("head_dim"):
            head_dim = cfg.int("head_dim")
        elif hidden % heads:
            raise ProfileError(source, "head_dim", f"missing, and hidden_size ({hidden}) is not "
                               f"divisible by num_attention_heads ({heads})")
        else:
            head_dim = hidden // heads
        attention = "mha" if kv_heads == heads else "gqa"
    ident = model_id or model_id_from(name_or_path or "model")
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    out.update({
        "id": ident,
        "name": name_or_path.rstrip("/").split("/")[-1] if name_or_path else ident,
        "aliases": [],
        "attention": attention,
        "layers": layers,
        "hidden_size": hidden,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "ffn_size": ffn_size,
        "vocab_size": vocab,
        "kv_dtype": "fp16" if _DTYPES.get(dtype.replace("torch.", "")) == "fp16" else "bf16",
        "weight_dtype": _weight_dtype(config),
    })
    if mla is not None:
        out["mla"] = mla
    sliding = _sliding_window(cfg, layers)
    if sliding is not None:
        out["sliding_window"] = sliding
    moe = _moe(cfg, layers, ffn_size)
    if moe is not None:
        out["moe"] = moe
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name_or_path):
        out["source"] = f"https://huggingface.co/{name_or_path}/blob/main/config.json"
    else:
        out["source"] = "Hugging Face config.json"
    return out


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, but short integer lists (sliding-window layers) on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(x, int) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _default_id(path: Path, config: Mapping[str, Any]) -> str:
    """From `_name_or_path`, else the file name (x.json), else the model's directory name
    (for a hub cache snapshot, models--org--name)."""
    if config.get("_name_or_path"):
        return model_id_from(str(config["_name_or_path"]))
    if path.stem.lower() != "config":
        return model_id_from(path.stem)
    parent = path.resolve().parent
    if _SNAPSHOT_HASH.match(parent.name) and parent.parent.name == "snapshots":
        return model_id_from(parent.parent.parent.name.split("--")[-1])
    return model_id_from(parent.name)


def read_config(path: str | Path) -> dict[str, Any]:
    source = str(path)
    data = parse_json_text(read_text(path, "JSON"), source)
    if not isinstance(data, dict):
        raise ProfileError(source, "", f"expected a JSON object, got {json_type_name(data)}")
    return data


def import_config(path: str | Path, out_path: str | Path | None = None,
                  model_id: str | None = None) -> Path:
    """Write the profile for config `path` to `out_path` (default ./<model-id>.yaml; a
    directory gets <model-id>.yaml inside) and return the written path."""
    path = Path(path)
    config = read_config(path)
    data = profile_from_hf_config(config, model_id or _default_id(path, config), source=str(path))
    data["source"] = f"{data['source']} (imported from {path.resolve()})"
    ModelProfile.from_dict(data, source=str(path))  # same schema + checks as shipped profiles
    target = Path(out_path) if out_path is not None else Path.cwd() / f"{data['id']}.yaml"
    if target.is_dir():
        target = target / f"{data['id']}.yaml"
    header = (f"# kvfabric model profile, generated by `kvfabric profile import {path}`.\n"
              "# For MLA models head_dim = qk_nope_head_dim + qk_rope_head_dim; the KV size comes "
              "from the mla block.\n")
    text = header + yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ProfileError(str(target), "", f"cannot write profile: {exc.strerror or exc}") from None
    return target
