"""Model/GPU profiles: shipped files, search order, caching, and the one-line errors for bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_kvfabric import cli
from pytest_kvfabric.errors import ProfileError, UnknownIdError
from pytest_kvfabric.core.profiles import (
    GpuProfile, ModelProfile, list_gpus, list_models, load_gpu, load_model, shipped_profile_dir,
)

SHIPPED = shipped_profile_dir()
MODEL_FILES = sorted((SHIPPED / "models").glob("*.yaml"))
GPU_FILES = sorted((SHIPPED / "gpus").glob("*.yaml"))
REQUIRED_MODELS = {"deepseek-v3", "kimi-k2", "llama3.1-8b", "llama3-70b", "llama3.1-405b", "qwen3-32b",
                   "qwen2.5-72b", "qwen3-235b-a22b", "mixtral-8x7b", "mixtral-8x22b", "gpt-oss-120b"}
REQUIRED_GPUS = {"a100", "h100", "h200", "b200", "gb200", "mi300x", "h800"}


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _model(**changes) -> dict:
    data = _raw(SHIPPED / "models" / "llama3.1-8b.yaml")
    data.update(id="test-model", aliases=[])
    data.update(changes)
    return data


# --------------------------------------------------------------------------- shipped profiles

def test_all_required_profiles_ship():
    assert REQUIRED_MODELS <= {m.id for m in list_models()}
    assert REQUIRED_GPUS <= {g.id for g in list_gpus()}


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_shipped_model_loads_by_id_and_path(path: Path):
    by_id = load_model(path.stem)
    assert by_id.id == path.stem
    assert by_id.path == str(path.resolve())
    assert by_id.source.startswith("https://huggingface.co/")
    assert load_model(str(path)) == by_id
    assert ModelProfile.from_dict(by_id.to_dict(), source=str(path)) == \
        ModelProfile(**{**by_id.__dict__, "path": None})


@pytest.mark.parametrize("path", GPU_FILES, ids=lambda p: p.stem)
def test_shipped_gpu_loads_and_round_trips(path: Path):
    gpu = load_gpu(path.stem)
    assert gpu.id == path.stem and gpu.tflops["bf16"] > 0 and gpu.source.startswith(("http", "H100"))
    assert GpuProfile.from_dict(gpu.to_dict()) == GpuProfile(**{**gpu.__dict__, "path": None})
    assert json.loads(json.dumps(gpu.to_dict())) == gpu.to_dict()  # plain JSON


def test_round_trip_through_json_keeps_every_block():
    m = load_model("deepseek-v3")
    d = json.loads(json.dumps(m.to_dict()))
    again = ModelProfile.from_dict(d)
    assert again.mla == m.mla and again.moe == m.moe and again.to_dict() == d
    g = load_model("gpt-oss-120b")
    assert ModelProfile.from_dict(g.to_dict()).sliding_window == g.sliding_window


def test_reference_architecture_facts():
    ds = load_model("deepseek-v3")
    assert (ds.attention, ds.layers, ds.heads, ds.kv_heads, ds.head_dim, ds.weight_dtype) == \
        ("mla", 61, 128, 128, 192, "fp8")
    assert (ds.mla.kv_lora_rank, ds.mla.qk_rope_head_dim, ds.mla.q_lora_rank) == (512, 64, 1536)
    assert (ds.moe.experts, ds.moe.active_experts, ds.moe.shared_experts, ds.moe.dense_layers) == (256, 8, 1, 3)
    k2 = load_model("kimi-k2")
    assert (k2.heads, k2.moe.experts, k2.moe.dense_layers, k2.vocab_size) == (64, 384, 1, 163840)
    q = load_model("qwen3-32b")
    assert q.head_dim == 128 and q.hidden_size // q.heads == 80  # explicit, not derived
    qm = load_model("qwen3-235b-a22b")
    assert (qm.kv_heads, qm.moe.experts, qm.moe.shared_experts, qm.moe.expert_ffn_size) == (4, 128, 0, 1536)
    oss = load_model("gpt-oss-120b")
    assert oss.weight_dtype == "fp4" and oss.sliding_window.window == 128
    assert oss.sliding_window.layers == tuple(range(0, 36, 2))
    assert load_model("llama3.1-405b").layers == 126
    h800, h100 = load_gpu("h800"), load_gpu("h100")
    assert h800.tflops == h100.tflops and h800.scaleup_gb_per_s == 200 and h800.nic_gbps == 400
    assert "fp8" not in load_gpu("a100").tflops and load_gpu("b200").tflops["fp4"] == 9000


def test_aliases_and_case():
    assert load_model("deepseek-r1").id == "deepseek-v3"
    assert load_model("llama3.1-70b").id == "llama3-70b"
    assert load_model("DeepSeek-V3").id == "deepseek-v3"
    assert load_gpu("H100").id == "h100"


# --------------------------------------------------------------------------- search directories

def test_user_dir_shadows_shipped(tmp_path: Path):
    _write(tmp_path / "models" / "mine.yaml", _model(id="deepseek-v3", layers=7))
    assert load_model("deepseek-v3", [tmp_path]).layers == 7
    assert load_model("deepseek-v3").layers == 61
    # The shipped alias still resolves to the shipped file; the user's id wins.
    ids = [m.id for m in list_models([tmp_path])]
    assert ids.count("deepseek-v3") == 1
    assert next(m for m in list_models([tmp_path]) if m.id == "deepseek-v3").layers == 7


def test_flat_user_dir_holds_models_and_gpus(tmp_path: Path):
    _write(tmp_path / "tiny.yml", _model(id="tiny", aliases=["tiny-alias"], layers=2))
    gpu = _raw(SHIPPED / "gpus" / "h100.yaml")
    gpu.update(id="h100", aliases=[], nic_gbps=100)
    _write(tmp_path / "lab-gpu.yaml", gpu)
    assert load_model("tiny-alias", [tmp_path]).layers == 2
    assert load_gpu("h100", [tmp_path]).nic_gbps == 100
    assert "tiny" not in {g.id for g in list_gpus([tmp_path])}
    assert "h100" in {g.id for g in list_gpus([tmp_path])}
    with pytest.raises(UnknownIdError):
        load_gpu("tiny", [tmp_path])


def test_first_user_dir_wins(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a / "x.yaml", _model(id="x", layers=3))
    _write(b / "x.yaml", _model(id="x", layers=5))
    assert load_model("x", [a, b]).layers == 3
    assert load_model("x", [b, a]).layers == 5


def test_path_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    p = _write(tmp_path / "custom.yaml", _model(id="custom", layers=9))
    assert load_model(str(p)).layers == 9
    monkeypatch.chdir(tmp_path)
    assert load_model("custom.yaml").layers == 9  # .yaml suffix makes it a path
    assert load_model("./custom.yaml").path == str(p.resolve())


def test_edited_file_is_reloaded(tmp_path: Path):
    p = _write(tmp_path / "m.yaml", _model(layers=4))
    assert load_model(str(p)).layers == 4
    _write(p, _model(layers=40))
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert load_model(str(p)).layers == 40


def test_broken_user_file_only_fails_when_used(tmp_path: Path):
    _write(tmp_path / "broken.yaml", "layers: [1, 2\n")
    _write(tmp_path / "ok.yaml", _model(id="ok"))
    assert load_model("ok", [tmp_path]).id == "ok"
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_model("broken", [tmp_path])
    with pytest.raises(ProfileError, match="broken.yaml"):
        list_models([tmp_path])


def test_missing_search_dir(tmp_path: Path):
    with pytest.raises(ProfileError) as exc:
        load_model("deepseek-v3", [tmp_path / "nope"])
    assert str(tmp_path / "nope") in str(exc.value) and "does not exist" in str(exc.value)


# --------------------------------------------------------------------------- bad profiles

def _load_error(tmp_path: Path, content: dict | str, loader=load_model) -> ProfileError:
    p = _write(tmp_path / "bad.yaml", content)
    with pytest.raises(ProfileError) as exc:
        loader(str(p))
    err = exc.value
    assert err.source == str(p.resolve())
    assert str(err).startswith(str(p.resolve()))
    assert "\n" not in str(err)
    return err


def _assert_error(err: ProfileError, field: str, reason: str) -> None:
    assert err.field == field, str(err)
    assert reason in err.reason, str(err)
    assert f": {field}: " in str(err) if field else True
    assert reason in str(err)


def test_not_yaml(tmp_path: Path):
    err = _load_error(tmp_path, "id: x\nlayers: [1, 2\nheads: 3\n")
    _assert_error(err, "", "file is not valid YAML")
    assert "line 3" in err.reason


@pytest.mark.parametrize("content, reason", [
    ("", "got an empty file"),
    ("- a\n- b\n", "expected a mapping of fields at the top level, got array"),
    ("id: x\nid: y\n", "duplicate key 'id'"),
])
def test_not_a_profile_mapping(tmp_path: Path, content: str, reason: str):
    _assert_error(_load_error(tmp_path, content), "", reason)


@pytest.mark.parametrize("changes, field, reason", [
    ({"layerz": 3}, "layerz", "unknown field 'layerz'"),
    ({"moe": {"experts": 8, "active_experts": 2, "expert_ffn_size": 10, "expertz": 1}},
     "moe.expertz", "unknown field 'expertz'"),
    ({"layers": "x"}, "layers", "expected integer, got string 'x'"),
    ({"layers": 32.5}, "layers", "expected integer, got number 32.5"),
    ({"layers": True}, "layers", "expected integer, got boolean"),
    ({"layers": 0}, "layers", "must be > 0, got 0"),
    ({"hidden_size": -4096}, "hidden_size", "must be > 0, got -4096"),
    ({"moe": {"experts": -4, "active_experts": 2, "expert_ffn_size": 10}}, "moe.experts", "must be > 0, got -4"),
    ({"moe": {"experts": 8, "active_experts": 2, "expert_ffn_size": 10, "shared_experts": -1}},
     "moe.shared_experts", "must be >= 0, got -1"),
    ({"moe": {"experts": 8, "active_experts": 9, "expert_ffn_size": 10}},
     "moe.active_experts", "must be <= moe.experts (8), got 9"),
    ({"moe": {"experts": 8, "active_experts": 2, "expert_ffn_size": 10, "dense_layers": 32}},
     "moe.dense_layers", "must be < layers (32), got 32"),
    ({"moe": {"experts": 8, "active_experts": 2}}, "moe.expert_ffn_size", "missing required field"),
    ({"sliding_window": {"window": 0, "layers": [0]}}, "sliding_window.window", "must be > 0, got 0"),
    ({"sliding_window": {"window": 128, "layers": [0, 1, 2, 40]}},
     "sliding_window.layers[3]", "layer index must be < layers (32), got 40"),
    ({"sliding_window": {"window": 128, "layers": [0, -1]}}, "sliding_window.layers[1]", "must be >= 0, got -1"),
    ({"kv_heads": 6}, "kv_heads", "heads (32) must be a multiple of kv_heads, got 6"),
    ({"kv_heads": 64}, "kv_heads", "must be <= heads (32), got 64"),
    ({"attention": "mha"}, "kv_heads", "attention 'mha' needs kv_heads == heads"),
    ({"attention": "mla"}, "mla", "attention 'mla' requires an mla block"),
    ({"mla": {"kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128}},
     "mla", "only allowed with attention 'mla'"),
    ({"attention": "sparse"}, "attention", "must be one of mha, gqa, mla; got 'sparse'"),
    ({"kv_dtype": "int8"}, "kv_dtype", "must be one of fp4, fp8, bf16, fp16, fp32; got 'int8'"),
    ({"weight_dtype": "fp6"}, "weight_dtype", "must be one of fp4, fp8, bf16, fp16, fp32"),
    ({"id": "has space"}, "id", "must be an id"),
    ({"aliases": "x"}, "aliases", "expected array, got string 'x'"),
])
def test_bad_model_field(tmp_path: Path, changes: dict, field: str, reason: str):
    _assert_error(_load_error(tmp_path, _model(**changes)), field, reason)


def test_missing_required_model_field(tmp_path: Path):
    data = _model()
    del data["vocab_size"]
    _assert_error(_load_error(tmp_path, data), "vocab_size", "missing required field")


def test_mla_head_dim_must_be_qk_dims(tmp_path: Path):
    data = _raw(SHIPPED / "models" / "deepseek-v3.yaml")
    data["head_dim"] = 128
    _assert_error(_load_error(tmp_path, data), "head_dim", "mla.qk_nope_head_dim + mla.qk_rope_head_dim (192)")


def _gpu(**changes) -> dict:
    data = _raw(SHIPPED / "gpus" / "h100.yaml")
    data.update(changes)
    return data


@pytest.mark.parametrize("changes, field, reason", [
    ({"tflops": {"fp8": 1979}}, "tflops.bf16", "missing required field"),
    ({"tflops": {"bf16": 989, "int8": 1979}}, "tflops.int8", "unknown field 'int8'"),
    ({"tflops": {"bf16": -1}}, "tflops.bf16", "must be > 0, got -1"),
    ({"nic_gbps": 0}, "nic_gbps", "must be > 0, got 0"),
    ({"hbm_capacity_gb": "80GB"}, "hbm_capacity_gb", "expected number, got string '80GB'"),
    ({"memory_efficiency": 1.5}, "memory_efficiency", "must be <= 1, got 1.5"),
    ({"nic": 400}, "nic", "unknown field 'nic'"),
])
def test_bad_gpu_field(tmp_path: Path, changes: dict, field: str, reason: str):
    _assert_error(_load_error(tmp_path, _gpu(**changes), loader=load_gpu), field, reason)


def test_wrong_kind_of_profile(tmp_path: Path):
    _assert_error(_load_error(tmp_path, _gpu()), "", "is a gpu profile, expected a model profile")
    _assert_error(_load_error(tmp_path, _model(), loader=load_gpu), "", "is a model profile, expected a gpu profile")


def test_missing_file(tmp_path: Path):
    with pytest.raises(ProfileError, match="file not found"):
        load_model(str(tmp_path / "none.yaml"))


def test_unknown_id_lists_valid_ids_and_aliases(tmp_path: Path):
    with pytest.raises(UnknownIdError) as exc:
        load_model("gpt-5")
    msg = str(exc.value)
    assert "unknown model 'gpt-5'" in msg and "\n" not in msg
    for name in ("deepseek-v3", "deepseek-r1", "llama3.1-70b", "gpt-oss-120b"):
        assert name in exc.value.valid and name in msg
    _write(tmp_path / "mine.yaml", _model(id="mine"))
    with pytest.raises(UnknownIdError) as exc:
        load_gpu("h1000", [tmp_path])
    assert "h100" in exc.value.valid and "mine" not in exc.value.valid
    with pytest.raises(UnknownIdError) as exc:
        load_model("nope", [tmp_path])
    assert "mine" in exc.value.valid


def test_from_dict_names_its_source():
    with pytest.raises(ProfileError) as exc:
        ModelProfile.from_dict(_model(layers=-1), source="<spec>")
    assert str(exc.value) == "<spec>: layers: must be > 0, got -1"


# --------------------------------------------------------------------------- CLI

def test_cli_profiles_table(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in REQUIRED_MODELS | REQUIRED_GPUS:
        assert name in out
    assert "256 experts, top-8 + 1 shared, first 3 dense" in out


def test_cli_profiles_json_with_user_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    _write(tmp_path / "models" / "mine.yaml", _model(id="mine", layers=3))
    assert cli.main(["profiles", "--profiles", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    mine = next(m for m in data["models"] if m["id"] == "mine")
    assert mine["layers"] == 3 and mine["path"] == str((tmp_path / "models" / "mine.yaml").resolve())
    assert {g["id"] for g in data["gpus"]} >= REQUIRED_GPUS


def test_cli_bad_profile_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = _write(tmp_path / "models" / "bad.yaml", _model(id="bad", moe={"experts": -4, "active_experts": 1,
                                                                          "expert_ffn_size": 8}))
    assert cli.main(["profiles", "--profiles", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kvfabric: error: {bad.resolve()}: moe.experts: must be > 0, got -4"


def test_cli_subprocess_no_traceback(tmp_path: Path):
    _write(tmp_path / "x.yaml", "id: [\n")
    proc = subprocess.run([sys.executable, "-m", "pytest_kvfabric.cli", "profiles", "--profiles", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str((tmp_path / "x.yaml").resolve()) in lines[0] and "not valid YAML" in lines[0]
