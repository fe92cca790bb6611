"""The HTML report, built from recorded JSON (no live run): every figure present and embedded,
nothing fetched from outside, figures rendered headless, many cases paged."""
from __future__ import annotations

import base64
import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_kvfabric.cli import main
from pytest_kvfabric.report import fig_cases, fig_compare, html, htmlfile, plotting
from pytest_kvfabric.report.runs import normalize

DATA = Path(__file__).parent / "data" / "report"
SESSION = DATA / "smoke-session.json"
RUN = DATA / "run-tcp.json"
SWEEP = DATA / "sweep.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Every tag with its attributes, the ids, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @property
    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if "id" in a}

    def imgs(self) -> list[str]:
        return [a["src"] for t, a in self.tags if t == "img"]


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    p.close()
    return p


def assert_self_contained(text: str, page: Page) -> None:
    assert not any(t in ("script", "link", "iframe", "object", "embed") for t, _ in page.tags)
    for _, attrs in page.tags:
        for name in ("src", "href", "action", "srcset", "poster"):
            if name not in attrs:
                continue
            v = (attrs[name] or "").strip().lower()
            assert not v.startswith(("http:", "https:", "//", "ftp:", "file:")), (name, v)
            if name == "href":
                assert v.startswith("#"), v  # in-page links only
    low = text.lower()
    assert "@import" not in low and "url(" not in low and "http://" not in low and "https://" not in low
    for src in page.imgs():
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_report_from_recorded_json_has_every_figure_and_fetches_nothing(tmp_path):
    out = tmp_path / "r.html"
    rc = main(["report", str(SESSION), str(RUN), "--html", str(out), "--png", str(tmp_path / "png"),
               "--baseline", str(SESSION)])
    assert rc == 0
    text = out.read_text()
    page = parse(text)
    assert_self_contained(text, page)
    for section in ("summary", "environment", "throughput", "latency", "exposed", "timeline", "cpu", "baseline"):
        assert section in page.ids, section
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == len(page.imgs()) >= 7
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    body = " ".join(page.text)
    for case in ("smoke/chat-layerwise[llama3.1-8b-zerocopy]", "run[llama3.1-8b-tcp]"):
        assert case in body
    assert "6.18" in body or json.loads(SESSION.read_text())["environment"]["kernel"] in body  # fingerprint shown


def test_sweep_input_adds_its_figure_and_table(tmp_path):
    out = tmp_path / "s.html"
    assert main(["report", str(SWEEP), "--html", str(out)]) == 0
    text = out.read_text()
    page = parse(text)
    assert_self_contained(text, page)
    assert any(i.startswith("sweep-") for i in page.ids)
    assert len(page.imgs()) == 1
    body = " ".join(page.text)
    assert "64KiB" in body and "64MiB" in body and "zerocopy" in body


def test_failed_verdicts_are_shown_with_measured_and_threshold():
    data = json.loads(SESSION.read_text())
    r = data["results"][0]
    r["outcome"] = "failed"
    r["verdicts"] = [{"key": "max_exposed_ms", "metric": "exposed", "measured": 105.2, "threshold": 10,
                      "passed": False, "note": ""}]
    run = normalize(data, "s.json", "s.json")
    text = html.summary_table([{**c, "label": c["case"]} for c in run.cases])
    assert "max_exposed_ms: 105 vs 10" in text
    assert 'class="failed"' in text


def test_repeats_give_intervals_and_missing_repeats_degrade():
    data = json.loads(SESSION.read_text())
    cur = normalize(data, "cur", "cur").cases[0]
    cur = {**cur, "label": cur["case"]}
    v, lo, hi = fig_compare.point(cur, "throughput_gbps")
    assert lo is None and hi is None and v == cur["metrics"]["throughput_gbps"]
    rep = copy.deepcopy(cur)
    rep["samples"] = [{"throughput_gbps": x} for x in (1.0, 3.0, 2.0)]
    assert fig_compare.point(rep, "throughput_gbps") == (2.0, 1.0, 3.0)
    figs = fig_compare.baseline([(cur, rep)])
    assert len(figs) == 1 and plotting.png(figs[0]).startswith(PNG_MAGIC)


def test_many_cases_page_and_stay_readable():
    data = json.loads(SESSION.read_text())
    base = data["results"][0]
    many = []
    for i in range(60):
        r = copy.deepcopy(base)
        r["scenario"] = f"s{i:02d}"
        r["case"] = r["nodeid"] = f"s{i:02d}[{r['model']}-{r['transport']}]"
        many.append(r)
    data["results"] = many
    run = normalize(data, "many", "many")
    for c in run.cases:
        c["label"] = c["case"]
    figs = fig_cases.throughput(run.cases)
    assert len(figs) == -(-60 // plotting.MAX_ROWS)
    for f in figs:
        assert len(f.axes[0].get_yticks()) <= plotting.MAX_ROWS
    assert len(fig_cases.cpu(run.cases)) == len(figs)


def test_old_reports_without_histograms_still_draw_a_cdf():
    data = json.loads(SESSION.read_text())
    for r in data["results"]:
        for k in ("latency_hist_us", "exposed_ms_requests", "timeline"):
            (r.get("metrics") or {}).pop(k, None)
    text, figs = html.build([normalize(data, "old", "old")])
    sections = {f.section for f in figs}
    assert {"throughput", "latency", "cpu"} <= sections and "timeline" not in sections


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    assert main(["report", str(bad), "--html", str(tmp_path / "o.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "x.json" in err and "not a kvfabric report" in err
    broken = tmp_path / "y.json"
    broken.write_text("{")
    assert main(["report", str(broken), "--html", str(tmp_path / "o.html")]) == 2
    assert "y.json" in capsys.readouterr().err
    assert not (tmp_path / "o.html").exists()


def test_figures_render_headless_without_a_display():
    """No pyplot, no GUI backend: a GUI default backend and no DISPLAY change nothing."""
    import os
    import subprocess
    import sys

    code = ("import sys; from pytest_kvfabric.report import html, htmlfile; "
            f"_, figs = html.build([htmlfile.load({str(SESSION)!r})]); "
            "assert figs and all(f.png.startswith(b'\\x89PNG') for f in figs); "
            "assert 'matplotlib.pyplot' not in sys.modules; print(len(figs))")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "TkAgg"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) >= 6


@pytest.mark.parametrize("name", ["smoke-session.json", "run-tcp.json", "sweep.json"])
def test_fixtures_are_small(name):
    assert (DATA / name).stat().st_size < 64_000


README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_figures_exist_and_are_small():
    import re

    text = README.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "docs/figures/sweep.png" in images and "docs/figures/exposed.png" in images
    for rel in images:
        p = README.parent / rel
        assert p.read_bytes().startswith(PNG_MAGIC) and p.stat().st_size < 100_000, rel


def test_readme_capacity_table_matches_the_plans():
    """The 'what the presets need' table is what the plan computes (llama3.1-8b column)."""
    import re

    from pytest_kvfabric.measure.capacity import needed_gbps
    from pytest_kvfabric.emulator.plan import build_plan
    from pytest_kvfabric.core.profiles import load_gpu, load_model
    from pytest_kvfabric.harness.suites import DEFAULT_GPU, load_suite

    text = README.read_text().split("### Capacity told up front", 1)[1]
    rows: dict[tuple[str, str], float] = {}
    for m in re.finditer(r"^\| ([\w-]+) / ([\w-]+)[^|]*\| ([\d.]+) Gb/s", text, re.M):
        rows[(m.group(1), m.group(2))] = float(m.group(3))
    assert ("chat", "chat-steady") in rows and ("deep-research", "research-burst") in rows
    suites = README.parent / "suites"
    for (suite, scen), want in rows.items():
        tpl = next(t for t in load_suite(suites / f"{suite}.yaml").scenarios if t.id == scen)
        sc = tpl.build(load_model("llama3.1-8b"), load_gpu(tpl.fields.get("gpu") or DEFAULT_GPU), "tcp")
        plan = build_plan(sc)
        got = needed_gbps(plan.total_bytes, float(plan.requests["prefill_ns"].sum()))
        assert round(got, 1) == want, (suite, scen, got)


SMALL_CASE = """
import pytest
from pytest_kvfabric.core.scenario import Synthetic

@pytest.mark.kv_slo(min_throughput_gbps=0.001)
def test_small(kv_run, kv_scenario):
    kv_run(kv_scenario.replace(synthetic=Synthetic(nbytes=65536, transfers=64, batch=16), pacing="none",
                               pool_bytes=8 << 20))
"""


def test_kv_html_with_a_baseline_draws_baseline_against_current(pytester):
    pytester.makepyfile(test_small=SMALL_CASE)
    pytester.runpytest("--kv-save-baseline=base.json").assert_outcomes(passed=1)
    result = pytester.runpytest("--kv-baseline=base.json", "--kv-max-regression=900", "--kv-html=page.html")
    result.assert_outcomes(passed=1)
    text = (pytester.path / "page.html").read_text()
    page = parse(text)
    assert_self_contained(text, page)
    assert {"summary", "throughput", "baseline"} <= page.ids


def test_inputs_with_one_file_name_are_told_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "run.json").write_text(RUN.read_text())
    assert htmlfile.labels([tmp_path / "a" / "run.json", tmp_path / "b" / "run.json", SESSION]) == [
        str(tmp_path / "a" / "run.json"), str(tmp_path / "b" / "run.json"), "smoke-session.json"]


def test_the_schema_rejects_a_malformed_histogram():
    from pytest_kvfabric.errors import ProfileError
    from pytest_kvfabric.report import jsonreport

    data = json.loads(SESSION.read_text())
    jsonreport.validate(data)
    data["results"][0]["metrics"]["latency_hist_us"]["counts"] = [1, -2]
    with pytest.raises(ProfileError, match="latency_hist_us"):
        jsonreport.validate(data)
