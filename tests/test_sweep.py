"""`kvfabric sweep`: size parsing and point shapes (pure), then a short real sweep over tcp."""
from __future__ import annotations

import json

import pytest

from pytest_kvfabric.run import sweepplan
from pytest_kvfabric.cli import main
from pytest_kvfabric.emulator.synthetic import build_synthetic_plan
from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.report.runs import kind_of
from pytest_kvfabric.core.scenario import Scenario


def test_default_sizes_are_powers_of_two_from_4kib_to_64mib():
    sizes = sweepplan.parse_sizes(sweepplan.DEFAULT_SIZES)
    assert sizes[0] == 4096 and sizes[-1] == 64 << 20 and len(sizes) == 15
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:]))


@pytest.mark.parametrize("text,expected", [
    ("4096", [4096]), ("1KB,1KiB", [1000, 1024]), ("3k..13k", [3072, 6144, 12288]), ("1M", [1 << 20]),
    (" 2 MiB , 1GiB", [2 << 20, 1 << 30]),
])
def test_sizes_accept_binary_and_decimal_units(text, expected):
    assert sweepplan.parse_sizes(text) == expected


@pytest.mark.parametrize("text,why", [("4XB", "not a size"), ("0", ">= 1"), ("64KiB..4KiB", "backwards"),
                                      ("", "no sizes"), ("-5", "not a size")])
def test_bad_sizes_name_the_flag_and_the_value(text, why):
    with pytest.raises(ProfileError, match=why) as exc:
        sweepplan.parse_sizes(text)
    assert "--sizes" in str(exc.value)


@pytest.mark.parametrize("size", [4096, 1 << 20, 64 << 20])
@pytest.mark.parametrize("batch", [1, 16])
def test_a_point_is_a_bounded_closed_loop_synthetic_scenario(size, batch):
    base = Scenario(id="x", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"))
    sc = sweepplan.point_scenario(base, "tcp", size, batch, 4, 1.0, {"connections": 2})
    assert sc.synthetic.nbytes == size and sc.synthetic.batch == batch == sc.synthetic.transfers
    assert sc.workload.duration_s == 1.0 and sc.workload.arrival.kind == "closed"
    assert sc.workload.arrival.concurrency == 4 and sc.verify and sc.transport_params == {"connections": 2}
    plan = build_synthetic_plan(sc)  # the pool holds the slots the plan needs
    assert len(plan.transfers) <= sweepplan.MAX_ROWS + batch
    assert len(plan.transfers) >= sweepplan.MIN_WRITES
    # Enough rows that a 400 Gb/s transport would still be busy for the whole time budget.
    assert len(plan.transfers) * size >= min(sweepplan.CEILING_BYTES_PER_S, sweepplan.MAX_ROWS * size)


def test_bad_flags_exit_2_with_one_line(capsys):
    for argv, needle in ((["--transport", "nope"], "nope"), (["--transport", "tcp", "--sizes", "12QB"], "--sizes"),
                         (["--transport", "tcp", "--batch", "0"], "--batch"),
                         (["--transport", "tcp", "--seconds", "0"], "--seconds")):
        assert main(["sweep", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err


def test_a_short_real_sweep_verifies_every_page_and_feeds_the_report(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    rc = main(["sweep", "--transport", "tcp", "--sizes", "64KiB,1MiB", "--seconds", "0.2", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert kind_of(data) == "sweep" and data["pair"] == "local"
    assert [p["size_bytes"] for p in data["points"]] == [65536, 1 << 20]
    for p in data["points"]:
        assert p["transfers"] >= 1 and p["integrity"]["errors"] == 0
        assert p["integrity"]["pages_checked"] == p["transfers"]  # every page verified
        assert p["throughput_gbps"] > 0 and p["latency_us"]["p99"] >= p["latency_us"]["p50"] > 0
        assert p["cpu_s_per_gb"]["sender"] > 0 and p["latency_hist_us"]["n"] == p["transfers"]
    table = capsys.readouterr().out
    assert "64KiB" in table and "1MiB" in table
    assert main(["report", str(out), "--html", str(tmp_path / "s.html")]) == 0
