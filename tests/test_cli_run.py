"""`kvfabric run`: table, JSON keys, exit codes."""
from __future__ import annotations

import json
import re

import pytest

from pytest_kvfabric.cli import main
from pytest_kvfabric.transports.registry import probe

SMALL = ["--model", "llama3.1-8b", "--isl", "32", "--requests", "2", "--pool-mib", "4"]


def test_run_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["run", *SMALL, "--transport", "tcp", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "throughput Gb/s" in printed and "integrity" in printed
    assert "agent hot path" in printed and "sender " in printed  # which bookkeeping ran, per side
    d = json.loads(out.read_text())
    assert d["transport"] == "tcp" and d["gpu"] == "h100"  # --gpu defaults for run
    assert d["integrity"]["errors"] == 0 and d["integrity"]["pages_checked"] == d["transfers"] > 0
    assert d["requests_completed"] == d["requests"] == 2
    for key in ("throughput_gbps", "latency_us", "exposed_ms", "cpu_s_per_gb", "data_path", "bytes"):
        assert key in d
    assert set(d["cpu_s_per_gb"]) == {"sender", "receiver"}
    # emulated pacing busy-waits into every ready time: that CPU is reported apart, within the total
    assert set(d["spin_s_per_gb"]) == {"sender", "receiver"}
    assert 0 < d["spin_s_per_gb"]["sender"] <= d["cpu_s_per_gb"]["sender"]
    assert 0 <= d["spin_s_per_gb"]["receiver"] <= d["cpu_s_per_gb"]["receiver"]
    assert re.search(r"^of which spin s/GB +sender \S+ +receiver \S+$", printed, re.M)
    assert set(d["latency_us"]) == {"p50", "p90", "p99", "p999", "max"}


def test_run_reports_each_sides_busy_poll_window(tmp_path, capsys):
    # Spinning agents change what cpu s/GB and post lateness mean: the table and the JSON say so.
    out = tmp_path / "r.json"
    rc = main(["run", *SMALL, "--transport", "tcp", "--transport-param", "busy_poll_us=250", "--json", str(out)])
    assert rc == 0
    assert re.search(r"^busy poll us +sender 250 / receiver 250$", capsys.readouterr().out, re.M)
    d = json.loads(out.read_text())
    assert d["data_path"]["sender"]["busy_poll_us"] == d["data_path"]["receiver"]["busy_poll_us"] == 250


def test_run_pace_none_and_scenario_flags(tmp_path):
    out = tmp_path / "r.json"
    rc = main(["run", *SMALL, "--gpu", "a100", "--transport", "tcp", "--pace", "none",
               "--connections", "2", "--page-size", "32", "--seed", "3", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["pacing"] == "none" and d["gpu"] == "a100"
    assert d["data_path"]["sender"]["connections"] == 2
    assert d["post_lateness_us"]["p50"] is None


def test_bad_model_exits_2_with_one_line(capsys):
    rc = main(["run", "--model", "no-such-model", "--transport", "tcp"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-model" in err


def test_unknown_transport_exits_2(capsys):
    rc = main(["run", *SMALL, "--transport", "carrier-pigeon"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "carrier-pigeon" in err and "tcp" in err


def test_unavailable_transport_exits_1_with_reason(capsys):
    cap = probe("rdma")
    if cap.available:  # pragma: no cover - only on hosts with verbs devices
        return
    rc = main(["run", *SMALL, "--transport", "rdma"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "not available" in err and len(err.splitlines()) == 1


def test_repeat_writes_medians_and_every_run(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", *SMALL, "--transport", "tcp", "--repeat", "3", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert len(d["repeats"]) == 3 and all(r["integrity"]["errors"] == 0 for r in d["repeats"])
    tps = sorted(r["throughput_gbps"] for r in d["repeats"])
    assert d["throughput_gbps"] == tps[1]  # the median of three
    text = capsys.readouterr().out
    assert "over 3 repeats" in text and "throughput Gb/s" in text and "95% CI" in text


def test_repeat_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", *SMALL, "--transport", "tcp", "--repeat", "0"])
    assert exc.value.code == 2 and "--repeat" in capsys.readouterr().err
