"""The shipped validation table, `kvfabric validate` and `kvfabric calibrate`."""
from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from pytest_kvfabric.calibration.fit import with_params
from pytest_kvfabric.calibration.predict import Measurement, predict
from pytest_kvfabric.calibration.table import load_table, shipped_table_path
from pytest_kvfabric.cli import main
from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.profile_schema import read_yaml, validate
from pytest_kvfabric.core.profiles import load_gpu, load_model


def test_shipped_table_parses_against_its_schema_and_cites_every_row():
    data = read_yaml(shipped_table_path())
    validate(data, "validation", "published.yaml")
    table = load_table(shipped_table_path())
    assert len(table.rows) >= 16
    sources = {m.source for m in table.rows}
    assert len(sources) >= 5
    assert {table.split_of(m) for m in table.rows} == {"fit", "holdout", "fleet_average"}
    for m in table.rows:
        assert m.url.startswith("https://"), m.id
        assert len(m.note) >= 20 and m.measured > 0, m.id
    # a split is per source: no source has rows on both sides
    for s in sources:
        assert len({table.split_of(m) for m in table.rows if m.source == s}) == 1


def test_table_row_without_url_is_rejected(tmp_path):
    data = read_yaml(shipped_table_path())
    del data["rows"][0]["url"]
    bad = tmp_path / "t.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=r"rows\[0\]\.url: missing required field"):
        load_table(bad)


def test_validate_json_reports_every_row_and_both_splits(capsys):
    assert main(["validate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == len(load_table(shipped_table_path()).rows)
    assert set(out["summary"]["ours"]) == {"fit", "holdout", "fleet_average", "all"}
    # "all" is the point measurements: a fleet average is its own group, never in "all"
    ours = out["summary"]["ours"]
    assert ours["all"]["rows"] == ours["fit"]["rows"] + ours["holdout"]["rows"]
    fleet = [r for r in out["rows"] if r["split"] == "fleet_average"]
    assert len(fleet) == ours["fleet_average"]["rows"] >= 1
    for r in out["rows"]:
        assert r["ratio"] == pytest.approx(r["predicted"] / r["measured"])
        assert r["roofline"] > 0


def _synthetic_rows(gpu) -> list[Measurement]:
    """Measurements a GPU with known terms would produce: TTFT over ISL and TP, TPOT over batch."""
    m = load_model("llama3.1-8b")
    rows = []
    for tp in (1, 2, 4):
        for isl in (16, 256, 2048, 8192):
            rows.append(Measurement(id=f"ttft-tp{tp}-{isl}", model=m.id, gpu=gpu.id, metric="ttft_ms", measured=1.0, isl=isl, tp=tp))
    for batch in (1, 16, 64):
        rows.append(Measurement(id=f"tpot-b{batch}", model=m.id, gpu=gpu.id, metric="tpot_ms", measured=1.0, isl=1024,
                                osl=256, batch=batch))
    return [dataclasses.replace(r, measured=predict(r, m, gpu)) for r in rows]


def test_calibrate_recovers_known_parameters(tmp_path, capsys):
    names = ["compute_efficiency", "gemm_half_gflop", "layer_overhead_us", "allreduce_latency_us",
             "decode_step_overhead_us"]
    truth = [0.55, 4.0, 60.0, 25.0, 700.0]
    start = load_gpu("h100")
    real = with_params(start, names, truth)
    rows = _synthetic_rows(real)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"rows": [{k: v for k, v in dataclasses.asdict(r).items() if v not in (None, "")
                                              and k != "gpu"} for r in rows]}))
    out = tmp_path / "cal.yaml"
    assert main(["calibrate", "--gpu", "h100", "--measurements", str(path), "-o", str(out),
                 "--params", ",".join(names)]) == 0
    text = capsys.readouterr().out
    assert "before:" in text and "after :" in text
    fitted = read_yaml(out)
    validate(fitted, "gpu", str(out))
    for name, want in zip(names, truth):
        assert fitted[name] == pytest.approx(want, rel=0.05), name
    assert "calibrated by kvfabric calibrate" in fitted["source"]


def test_calibrate_needs_enough_rows(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"rows": [{"id": "a", "model": "llama3.1-8b", "tp": 1, "weight_dtype": "bf16",
                                              "batch": 1, "isl": 128, "osl": 1, "metric": "ttft_ms", "measured": 10}]}))
    rc = main(["calibrate", "--gpu", "h100", "--measurements", str(path), "-o", str(tmp_path / "o.yaml")])
    assert rc == 2
    assert "1 measurement(s) cannot fit" in capsys.readouterr().err


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(rows=[]), "rows: must not be empty"),
    (lambda d: d["sources"]["trtllm-perf-v05"].update(split="sideways"), "sources.trtllm-perf-v05.split: must be one of fit, holdout"),
    (lambda d: d["rows"][1].update(metric="joules"), "rows[1].metric: must be one of"),
    (lambda d: d["rows"][2].update(source="nowhere"), "rows[2].source: unknown source 'nowhere'"),
    (lambda d: d["rows"][0].update(tp=4, ep=3), "rows[0].ep: must divide tp (4), got 3"),
])
def test_validate_bad_table_is_one_line_naming_the_file(tmp_path, capsys, change, needle):
    data = read_yaml(shipped_table_path())
    change(data)
    bad = tmp_path / "t.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["validate", "--table", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and needle in err, err
