"""A generated corpus of bad inputs: every one is refused with one line naming where and why.

Each strategy takes a valid input (a shipped profile, suite, inventory, HF config, option set or
command line) and spoils one field with a value that is bad by construction (NaN, infinity, out
of range, wrong type) or spoils the file itself (deep nesting, non-UTF-8, a list as a key).
Acceptance is a failure, so is any exception other than the project's own one-line error.
Everything runs in-process (the CLI through `cli.main`), so hundreds of cases take seconds.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_kvfabric import cli
from pytest_kvfabric.core import limits
from pytest_kvfabric.errors import KvFabricError, ProfileError
from pytest_kvfabric.fabric.hosts import load_inventory
from pytest_kvfabric.core.hf_import import import_config
from pytest_kvfabric.harness.options import resolve
from pytest_kvfabric.core.profiles import load_gpu, load_model, shipped_profile_dir
from pytest_kvfabric.report import jsonreport
from pytest_kvfabric.harness.suites import load_suite, shipped_suite_dir

ROOT = Path(__file__).resolve().parent
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])
NOT_A_NUMBER = st.one_of(st.text(min_size=1, max_size=8).filter(lambda s: not _yaml_number(s)),
                         st.lists(st.integers(), min_size=1, max_size=3), st.just({"a": 1}))


def _yaml_number(text: str) -> bool:
    try:
        return isinstance(yaml.safe_load(text), (int, float))
    except yaml.YAMLError:
        return False


def bad_int(minimum: int, maximum: int) -> st.SearchStrategy[Any]:
    """Values no integer field in [minimum, maximum] may take."""
    return st.one_of(NONFINITE, NOT_A_NUMBER, st.booleans(),
                     st.integers(max_value=minimum - 1), st.integers(min_value=maximum + 1),
                     st.integers(min_value=maximum + 1, max_value=10**400),
                     st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()))


def bad_float(minimum: float, maximum: float, exclusive: bool = False) -> st.SearchStrategy[Any]:
    low = st.floats(max_value=minimum, exclude_max=not exclusive, allow_nan=False, allow_infinity=False)
    return st.one_of(NONFINITE, NOT_A_NUMBER, st.booleans(), low,
                     st.floats(min_value=maximum, exclude_min=True, allow_nan=False, allow_infinity=False))


def _set(data: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _write(tmp: Path, name: str, data: Any) -> Path:
    p = tmp / name
    text = json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data, sort_keys=False)
    p.write_text(text)
    return p


def _refused(load: Any, path: Path, field: str) -> None:
    with pytest.raises(KvFabricError) as exc:
        load(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    assert field in msg, msg


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad")


MODEL = yaml.safe_load((shipped_profile_dir() / "models" / "llama3.1-8b.yaml").read_text())
GPU = yaml.safe_load((shipped_profile_dir() / "gpus" / "h100.yaml").read_text())
SUITE = yaml.safe_load((shipped_suite_dir() / "smoke.yaml").read_text())
HF = json.loads((ROOT / "data" / "hf" / "gpt-oss-120b.json").read_text())
INVENTORY = {"pairs": [{"name": "a", "prefill": {"ssh": "h1", "data_addr": "10.0.0.1", "interface": "eth1"},
                        "decode": {"ssh": "h2", "data_addr": "10.0.0.2", "interface": "eth1"}}]}

MODEL_FIELDS = {("layers",): (1, limits.MAX_LAYERS), **{(k,): (1, limits.MAX_MODEL_DIM) for k in (
    "hidden_size", "heads", "kv_heads", "head_dim", "ffn_size", "vocab_size")}}
GPU_FIELDS = {("tflops", "bf16"): (limits.MIN_GPU_FIGURE, limits.MAX_GPU_FIGURE),
              **{(k,): (limits.MIN_GPU_FIGURE, limits.MAX_GPU_FIGURE) for k in (
                  "hbm_capacity_gb", "hbm_tb_per_s", "scaleup_gb_per_s", "nic_gbps")},
              ("compute_efficiency",): (0.0, 1.0)}
S0 = ("scenarios", 0)
SUITE_INTS = {S0 + ("workload", "requests"): (1, limits.MAX_REQUESTS),
              S0 + ("workload", "isl"): (1, limits.MAX_TOKENS),
              S0 + ("prefill", "tp"): (1, limits.MAX_MODEL_DIM),
              ("defaults", "seed"): (0, limits.MAX_SEED)}
SUITE_FLOATS = {("defaults", "pool_mib"): (0.0, float(limits.MAX_POOL_MIB)),
                S0 + ("timeout_s",): (0.0, limits.MAX_TIMEOUT_S)}
HF_FIELDS = {("num_hidden_layers",): (1, limits.MAX_LAYERS), ("sliding_window",): (1, limits.MAX_MODEL_DIM),
             ("hidden_size",): (1, limits.MAX_MODEL_DIM), ("vocab_size",): (1, limits.MAX_MODEL_DIM)}


def test_the_unspoiled_inputs_load(tmp):
    load_model(str(_write(tmp, "m.yaml", MODEL)))
    load_gpu(str(_write(tmp, "g.yaml", GPU)))
    load_suite(_write(tmp, "s.yaml", SUITE))
    load_inventory(_write(tmp, "i.yaml", INVENTORY))
    import_config(_write(tmp, "c.json", HF), tmp / "out.yaml")


@SETTINGS
@given(data=st.data())
def test_model_profile_numbers(tmp, data):
    path = data.draw(st.sampled_from(sorted(MODEL_FIELDS)))
    value = data.draw(bad_int(*MODEL_FIELDS[path]))
    _refused(lambda p: load_model(str(p)), _write(tmp, "m.yaml", _set(MODEL, path, value)), path[-1])


@SETTINGS
@given(data=st.data())
def test_gpu_profile_numbers(tmp, data):
    path = data.draw(st.sampled_from(sorted(GPU_FIELDS)))
    lo, hi = GPU_FIELDS[path]
    value = data.draw(bad_float(lo, hi, exclusive=path == ("compute_efficiency",)))
    _refused(lambda p: load_gpu(str(p)), _write(tmp, "g.yaml", _set(GPU, path, value)), path[-1])


@SETTINGS
@given(data=st.data())
def test_suite_numbers(tmp, data):
    if data.draw(st.booleans()):
        path = data.draw(st.sampled_from(sorted(SUITE_INTS)))
        value = data.draw(bad_int(*SUITE_INTS[path]))
    else:
        path = data.draw(st.sampled_from(sorted(SUITE_FLOATS)))
        value = data.draw(bad_float(*SUITE_FLOATS[path], exclusive=True))
    _refused(load_suite, _write(tmp, "s.yaml", _set(SUITE, path, value)), path[-1])


@SETTINGS
@given(kind=st.sampled_from(["normal", "lognormal"]), which=st.sampled_from(["mean", "std"]),
       value=st.one_of(NONFINITE, st.floats(min_value=limits.MAX_TOKENS, exclude_min=True, allow_infinity=False)))
def test_suite_distributions(tmp, kind, which, value):
    dist = {"kind": kind, "mean": 100.0, "std": 1.0, which: value}
    _refused(load_suite, _write(tmp, "s.yaml", _set(SUITE, S0 + ("workload", "isl"), dist)), which)


@SETTINGS
@given(value=bad_int(1, 65535))
def test_inventory_port(tmp, value):
    _refused(load_inventory, _write(tmp, "i.yaml", _set(INVENTORY, ("pairs", 0, "prefill", "port"), value)),
             "port")


@SETTINGS
@given(data=st.data())
def test_hf_config_numbers(tmp, data):
    path = data.draw(st.sampled_from(sorted(HF_FIELDS)))
    value = data.draw(bad_int(*HF_FIELDS[path]).filter(lambda v: not isinstance(v, float) or math.isfinite(v)))
    _refused(lambda p: import_config(p, tmp / "out.yaml"), _write(tmp, "c.json", _set(HF, path, value)), "")


def _nested(depth: int, opener: str) -> str:
    return {"[": "[" * depth + "]" * depth, "{": '{"a": ' * depth + "1" + "}" * depth}[opener]


@SETTINGS
@given(kind=st.sampled_from(["model", "gpu", "suite", "inventory", "hf", "baseline"]),
       spoil=st.sampled_from(["deep", "utf8", "listkey", "nan"]),
       depth=st.integers(min_value=limits.MAX_DEPTH + 1, max_value=100_000),
       opener=st.sampled_from(["[", "{"]),
       junk=st.binary(min_size=1, max_size=16).filter(lambda b: _not_utf8(b)))
def test_spoiled_files(tmp, kind, spoil, depth, opener, junk):
    is_json = kind in ("hf", "baseline")
    name = f"f.{'json' if is_json else 'yaml'}"
    if spoil == "deep":
        body = (f'{{"x": {_nested(depth, opener)}}}' if is_json else f"x: {_nested(depth, opener)}\n").encode()
    elif spoil == "utf8":
        body = b"id: x\n" + junk
    elif spoil == "listkey":
        if is_json:
            return  # JSON keys are always strings
        body = b"? [a, b]\n: 1\n"
    else:
        body = b'{"x": NaN}' if is_json else b"x: .nan\n"
    p = tmp / name
    p.write_bytes(body)
    load = {"model": lambda q: load_model(str(q)), "gpu": lambda q: load_gpu(str(q)), "suite": load_suite,
            "inventory": load_inventory, "hf": lambda q: import_config(q, tmp / "out.yaml"),
            "baseline": jsonreport.read}[kind]
    _refused(load, p, "")


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# ---- pytest options (resolve is what pytest_configure calls; errors become UsageError) ------

OPTION_BAD = {
    "kv_seed": bad_int(0, limits.MAX_SEED),
    "kv_pool_mib": bad_float(1, limits.MAX_POOL_MIB),
    "kv_timeout": bad_float(0.1, limits.MAX_TIMEOUT_S),
    "kv_max_regression": bad_float(0, limits.MAX_REGRESSION_PCT),
    "kv_netns_mtu": bad_int(68, 65535),
    "kv_rdma_tc": bad_int(0, 255),
    "kv_rdma_gid_index": bad_int(0, 255),
}


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # nan, inf, -inf, 1e+300
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(data=st.data())
def test_pytest_options(data):
    dest = data.draw(st.sampled_from(sorted(OPTION_BAD)))
    text = _as_text(data.draw(OPTION_BAD[dest]))
    flag = "--" + dest.replace("_", "-")
    with pytest.raises(ProfileError) as exc:
        resolve(lambda d: text if d == dest else None)
    assert flag in str(exc.value) and "\n" not in str(exc.value)


# ---- the kvfabric command line, in-process ------------------------------------------------

CLI_BAD = {
    "--isl": bad_int(1, limits.MAX_TOKENS), "--osl": bad_int(1, limits.MAX_TOKENS),
    "--requests": bad_int(1, limits.MAX_REQUESTS), "--seed": bad_int(0, limits.MAX_SEED),
    "--pool-mib": bad_int(1, limits.MAX_POOL_MIB), "--page-size": bad_int(1, limits.MAX_TOKENS),
    "--chunk": bad_int(0, limits.MAX_TOKENS), "--prefill-tp": bad_int(1, limits.MAX_MODEL_DIM),
}


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cli_flags(capsys, data):
    flag = data.draw(st.sampled_from(sorted(CLI_BAD)))
    text = _as_text(data.draw(CLI_BAD[flag]))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main(["plan", "--model", "llama3.1-8b", "--gpu", "h100", f"{flag}={text}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("kvfabric: error:"), err
    assert flag in err, err


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["compare", "run"]),
       value=st.one_of(NONFINITE, st.floats(max_value=0, allow_nan=False, allow_infinity=False)))
def test_cli_timeouts_and_regressions(capsys, command, value):
    argv = (["compare", "a.json", "b.json", f"--max-regression={value!r}"] if command == "compare"
            else ["run", "--model", "llama3.1-8b", "--transport", "tcp", f"--timeout={value!r}"])
    if command == "compare" and value == 0:
        return  # 0% is a valid (strict) gate
    capsys.readouterr()
    try:  # argparse exits; a value checked after parsing (compare's thresholds) returns the code
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err


# ---- transport parameters (declared in transports/params.py) -----------------------------

from pytest_kvfabric.transports.params import (  # noqa: E402
    DEVMEM_PARAMS, FRAMEWORK_KEYS, IOURING_PARAMS, RDMA_PARAMS, STREAM_PARAMS, check)

ALL_PARAMS = STREAM_PARAMS + IOURING_PARAMS + DEVMEM_PARAMS + RDMA_PARAMS
# values no validated parameter (devmem interface, rx_queues) takes
BAD_VALIDATED = {
    "interface": st.one_of(st.integers(), st.floats(), st.just(""), st.text(min_size=16, max_size=20),
                           st.text(max_size=5).map(lambda t: t + "/x"), st.just("eth 1")),
    "rx_queues": st.one_of(st.floats(), st.booleans(), st.just([]), st.integers(max_value=-1),
                           st.integers(min_value=4096), st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
                           st.just("auto:0"), st.just("auto:"), st.text(alphabet="xyz-", min_size=1, max_size=5),
                           st.integers(0, 9).map(lambda q: [q, q])),
}
DECLARED = {p.name for p in ALL_PARAMS}


@settings(max_examples=80, deadline=None, derandomize=True)
@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=16).filter(
    lambda n: n not in DECLARED and n not in FRAMEWORK_KEYS and not n.startswith("_")), value=st.integers())
def test_unknown_transport_parameters_are_refused_listing_the_valid_ones(name, value):
    why = check({"tcp": STREAM_PARAMS}, {name: value})
    assert why is not None and f"unknown parameter {name!r} for transport tcp; valid: busy_poll_us" in why


def _bad_param_value(p, data):
    if p.validate is not None:
        return data.draw(BAD_VALIDATED[p.name])
    if p.kind is bool:
        return data.draw(st.one_of(st.integers(), st.text(max_size=5), st.floats()))
    if p.kind is str:
        wrong_type = st.one_of(st.integers(), st.floats(), st.lists(st.text(), max_size=2))
        if p.choices:
            return data.draw(st.one_of(wrong_type, st.text(max_size=8).filter(lambda t: t not in p.choices)))
        return data.draw(wrong_type)
    if p.kind is int:
        bad = bad_int(int(p.minimum), int(p.maximum)).filter(lambda v: not isinstance(v, dict))
        if p.choices:  # in range yet not one of them (rdma path_mtu)
            bad = st.one_of(bad, st.integers(int(p.minimum), int(p.maximum)).filter(lambda v: v not in p.choices))
        return data.draw(bad)
    return data.draw(bad_float(p.minimum, p.maximum).filter(lambda v: not isinstance(v, dict)))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_bad_values_of_declared_transport_parameters_are_refused(data):
    p = data.draw(st.sampled_from(ALL_PARAMS))
    value = _bad_param_value(p, data)
    if p.kind is float and isinstance(value, int) and not isinstance(value, bool) and p.minimum <= value <= p.maximum:
        return  # an integer in range is a fine float
    why = check({"x": (p,)}, {p.name: value})
    assert why is not None and why.startswith(f"transport x parameter {p.name}: "), (p, value, why)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.data())
def test_good_values_of_declared_transport_parameters_pass(data):
    p = data.draw(st.sampled_from([q for q in ALL_PARAMS if q.kind in (int, float)]))
    lo, hi = p.minimum, p.maximum
    value = (data.draw(st.sampled_from(p.choices)) if p.choices
             else data.draw(st.integers(int(lo), int(hi))) if p.kind is int
             else data.draw(st.floats(lo, hi, allow_nan=False)))
    assert check({"x": (p,)}, {p.name: value}) is None
