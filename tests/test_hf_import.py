"""Hugging Face config.json -> model profile: the published configs reproduce the shipped profiles."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_kvfabric import cli
from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.hf_import import import_config, model_id_from, profile_from_hf_config
from pytest_kvfabric.core.profiles import ModelProfile, load_model

DATA = Path(__file__).parent / "data" / "hf"
FIXTURES = ["llama3.1-8b", "deepseek-v3", "qwen3-235b-a22b", "mixtral-8x7b", "gpt-oss-120b"]
NOT_ARCHITECTURE = {"id", "name", "aliases", "source", "path"}


def _config(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def _arch(profile: ModelProfile) -> dict:
    return {k: v for k, v in profile.to_dict().items() if k not in NOT_ARCHITECTURE}


@pytest.mark.parametrize("name", FIXTURES)
def test_published_config_reproduces_shipped_profile(name: str):
    imported = ModelProfile.from_dict(profile_from_hf_config(_config(name), name))
    assert _arch(imported) == _arch(load_model(name))


@pytest.mark.parametrize("name", FIXTURES)
def test_import_writes_loadable_yaml(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    written = import_config(DATA / f"{name}.json")
    assert written == tmp_path / f"{name}.yaml"  # default ./<model-id>.yaml (id from the file name)
    loaded = load_model(str(written))
    assert loaded.id == name and _arch(loaded) == _arch(load_model(name))
    assert "imported from" in loaded.source


def test_kinds_detected():
    assert profile_from_hf_config(_config("deepseek-v3"))["attention"] == "mla"
    assert profile_from_hf_config(_config("llama3.1-8b"))["attention"] == "gqa"
    mha = dict(_config("llama3.1-8b"))
    del mha["num_key_value_heads"]
    p = profile_from_hf_config(mha)
    assert (p["attention"], p["kv_heads"], p["head_dim"]) == ("mha", 32, 128)


def test_weight_dtype_from_quantization_config():
    assert profile_from_hf_config(_config("deepseek-v3"))["weight_dtype"] == "fp8"
    assert profile_from_hf_config(_config("gpt-oss-120b"))["weight_dtype"] == "fp4"
    assert profile_from_hf_config(_config("mixtral-8x7b"))["weight_dtype"] == "bf16"
    fp16 = dict(_config("llama3.1-8b"), torch_dtype="float16")
    assert profile_from_hf_config(fp16)["weight_dtype"] == "fp16"


def test_explicit_head_dim_wins():
    cfg = dict(_config("llama3.1-8b"), hidden_size=5120, num_attention_heads=64, head_dim=128)
    assert profile_from_hf_config(cfg)["head_dim"] == 128


def test_sliding_window_variants():
    mistral = dict(_config("mixtral-8x7b"), sliding_window=4096)
    sw = profile_from_hf_config(mistral)["sliding_window"]
    assert sw == {"window": 4096, "layers": list(range(32))}
    qwen = dict(_config("qwen3-235b-a22b"), sliding_window=32768, use_sliding_window=False)
    assert "sliding_window" not in profile_from_hf_config(qwen)
    qwen_on = dict(qwen, use_sliding_window=True, max_window_layers=90)
    assert profile_from_hf_config(qwen_on)["sliding_window"]["layers"] == [90, 91, 92, 93]


def test_kimi_k2_style_mla_moe():
    cfg = dict(_config("deepseek-v3"), model_type="kimi_k2", num_attention_heads=64, num_key_value_heads=64,
               n_routed_experts=384, first_k_dense_replace=1, vocab_size=163840,
               _name_or_path="moonshotai/Kimi-K2-Instruct")
    p = profile_from_hf_config(cfg)
    assert p["id"] == "kimi-k2-instruct"
    assert p["source"] == "https://huggingface.co/moonshotai/Kimi-K2-Instruct/blob/main/config.json"
    assert _arch(ModelProfile.from_dict(p)) == _arch(load_model("kimi-k2"))


def test_model_id_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert model_id_from("meta-llama/Llama-3.1-8B") == "llama-3.1-8b"
    named = tmp_path / "x" / "config.json"
    named.parent.mkdir()
    named.write_text(json.dumps(dict(_config("llama3.1-8b"), _name_or_path="meta-llama/Llama-3.1-8B")))
    assert import_config(named, tmp_path).name == "llama-3.1-8b.yaml"
    snap = tmp_path / "models--Qwen--Qwen3-235B-A22B" / "snapshots" / ("a" * 40) / "config.json"
    snap.parent.mkdir(parents=True)
    snap.write_text(json.dumps(_config("qwen3-235b-a22b")))
    assert import_config(snap, tmp_path / "out.yaml") == tmp_path / "out.yaml"
    assert yaml.safe_load((tmp_path / "out.yaml").read_text())["id"] == "qwen3-235b-a22b"
    plain = tmp_path / "My-Model" / "config.json"
    plain.parent.mkdir()
    plain.write_text(json.dumps(_config("mixtral-8x7b")))
    monkeypatch.chdir(tmp_path)
    assert import_config(plain) == tmp_path / "my-model.yaml"
    assert import_config(plain, model_id="mx").name == "mx.yaml"


# --------------------------------------------------------------------------- bad configs

def _bad(tmp_path: Path, content: str | dict) -> ProfileError:
    p = tmp_path / "config.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ProfileError) as exc:
        import_config(p, tmp_path / "out.yaml")
    assert exc.value.source == str(p) and str(p) in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "out.yaml").exists()
    return exc.value


@pytest.mark.parametrize("key", ["num_hidden_layers", "hidden_size", "num_attention_heads",
                                 "intermediate_size", "vocab_size"])
def test_missing_key_named(tmp_path: Path, key: str):
    cfg = _config("llama3.1-8b")
    del cfg[key]
    err = _bad(tmp_path, cfg)
    assert err.field == key and "missing key" in err.reason


def test_missing_mla_key_named(tmp_path: Path):
    cfg = _config("deepseek-v3")
    del cfg["qk_rope_head_dim"]
    assert _bad(tmp_path, cfg).field == "qk_rope_head_dim"


def test_missing_top_k_named(tmp_path: Path):
    cfg = _config("mixtral-8x7b")
    del cfg["num_experts_per_tok"]
    err = _bad(tmp_path, cfg)
    assert err.field == "num_experts_per_tok" and "experts_per_token" in err.reason


@pytest.mark.parametrize("base, changes, field, reason", [
    ("llama3.1-8b", {"num_hidden_layers": "32"}, "num_hidden_layers", "expected integer, got string '32'"),
    ("llama3.1-8b", {"hidden_size": 0}, "hidden_size", "must be >= 1, got 0"),
    ("llama3.1-8b", {"num_key_value_heads": 5}, "kv_heads", "heads (32) must be a multiple of kv_heads, got 5"),
    ("llama3.1-8b", {"layer_types": ["full_attention"]}, "layer_types",
     "has 1 entries, expected num_hidden_layers (32)"),
    ("qwen3-235b-a22b", {"decoder_sparse_step": 2}, "decoder_sparse_step", "can be represented, got 2"),
    ("qwen3-235b-a22b", {"mlp_only_layers": [5]}, "mlp_only_layers", "only leading dense layers"),
    ("qwen3-235b-a22b", {"num_experts_per_tok": 129}, "moe.active_experts", "must be <= moe.experts (128)"),
])
def test_bad_values(tmp_path: Path, base: str, changes: dict, field: str, reason: str):
    err = _bad(tmp_path, dict(_config(base), **changes))
    assert err.field == field and reason in err.reason, str(err)


def test_not_json(tmp_path: Path):
    err = _bad(tmp_path, '{"hidden_size": 4096,\n  oops}')
    assert "not valid JSON" in err.reason and "line 2" in err.reason
    assert "expected a JSON object" in _bad(tmp_path, "[1, 2]").reason


# --------------------------------------------------------------------------- CLI

def test_cli_import_prints_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "ds.yaml"
    assert cli.main(["profile", "import", str(DATA / "deepseek-v3.json"), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert load_model(str(out)).mla.kv_lora_rank == 512


def test_cli_import_default_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["profile", "import", str(DATA / "gpt-oss-120b.json")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "gpt-oss-120b.yaml")


def test_cli_import_bad_config_subprocess(tmp_path: Path):
    cfg = _config("llama3.1-8b")
    del cfg["vocab_size"]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "pytest_kvfabric.cli", "profile", "import", str(p),
                           "-o", str(tmp_path / "o.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"kvfabric: error: {p}: vocab_size: missing key in the Hugging Face config"


def test_cli_import_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exc:
        cli.main(["profile", "import"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kvfabric: error:")
