from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from pytest_kvfabric.cli import main
from pytest_kvfabric.commands._scenario_args import add_scenario_args, scenario_from_args


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code)
    out, err = capsys.readouterr()
    return rc, out, err


def test_kvcache_json_has_published_figure(capsys):
    rc, out, _ = run(capsys, "kvcache", "--model", "deepseek-v3", "--isl", "1000", "--json")
    assert rc == 0
    data = json.loads(out)
    for key in ("model", "kv_dtype", "bytes_per_token", "bytes_per_token_per_layer", "bytes_per_page",
                "bytes_per_request", "bytes_per_rank_per_token"):
        assert key in data
    assert data["bytes_per_token"] == 70_272 and data["bytes_per_request"] == 70_272_000
    assert len(data["bytes_per_token_per_layer"]) == 61


def test_kvcache_table_tp_and_dtype(capsys):
    rc, out, _ = run(capsys, "kvcache", "--model", "llama3-70b", "--kv-dtype", "fp8", "--tp", "8", "--pp", "2")
    assert rc == 0
    assert "163,840" in out and "bytes_per_rank_per_token" in out and "10,240" in out  # 40 layers x 1 head


def test_plan_json_summary(capsys):
    rc, out, _ = run(capsys, "plan", "--model", "llama3-70b", "--gpu", "h100", "--isl", "2048",
                     "--prefill-tp", "8", "--decode-tp", "4", "--json")
    assert rc == 0
    s = json.loads(out)
    assert s["total_bytes"] == 2048 * 327_680 and s["transfers"] == 128 * 80 * 8
    assert s["prefill_ms"] > 0 and s["decode_step_ms"] > 0
    assert s["required_gbps"] == pytest.approx(s["total_bytes"] * 8 / (s["prefill_ms"] * 1e6))


def test_plan_table_block_and_preset(capsys):
    rc, out, _ = run(capsys, "plan", "--model", "llama3.1-8b", "--gpu", "h200", "--workload", "chat",
                     "--requests", "3", "--access", "block", "--seed", "5")
    assert rc == 0
    assert "required_gbps" in out and "transfer bytes" in out and "ready_ms" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["plan", "--model", "llama3-70b", "--gpu", "h100", "--decode-tp", "3"], "decode.tp"),
        (["plan", "--model", "nope", "--gpu", "h100"], "unknown model 'nope'; valid:"),
        (["plan", "--model", "llama3-70b", "--gpu", "h100", "--isl", "0"], "--isl: must be >= 1"),
        (["plan", "--model", "llama3-70b", "--gpu", "h100", "--access", "row"], "--access"),
        (["plan", "--model", "llama3.1-8b", "--gpu", "h100", "--access", "block", "--pool-mib", "1"],
         "pool_bytes"),
        (["kvcache", "--model", "llama3-70b", "--tp", "5"], "tp: tp=5"),
        (["kvcache", "--model", "llama3-70b", "--workload", "chat"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2_one_line(capsys, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_status():
    proc = subprocess.run([sys.executable, "-m", "pytest_kvfabric.cli", "kvcache", "--model", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_hbm_fit_is_checked_naming_both_figures(capsys):
    rc, out, err = run(capsys, "plan", "--model", "llama3.1-405b", "--gpu", "a100")
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "GB of weights" in err and "a100's 80 GB of HBM" in err, err


def test_scenario_args_shared_helper():
    parser = argparse.ArgumentParser()
    add_scenario_args(parser)
    args = parser.parse_args(["--model", "deepseek-v3", "--gpu", "gb200", "--prefill-tp", "8", "--decode-tp", "4",
                              "--prefill-pp", "2", "--chunk", "4096", "--workload", "coding", "--isl", "9000",
                              "--kv-dtype", "fp8", "--pool-mib", "64", "--seed", "9", "--dp-attention"])
    sc = scenario_from_args(args)
    assert (sc.prefill.tp, sc.prefill.pp, sc.decode.tp, sc.decode.pp) == (8, 2, 4, 1)
    assert sc.prefill.chunk_tokens == 4096 and sc.decode.chunk_tokens == 0
    assert sc.kv_dtype("decode") == "fp8" and sc.prefill.dp_attention
    assert sc.workload.preset == "coding" and sc.workload.isl.value == 9000
    assert sc.pool_bytes == 64 << 20 and sc.seed == 9
    assert sc.gpu.id == "gb200" and sc.model.id == "deepseek-v3"
