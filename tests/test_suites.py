"""Suite YAML: schema validation with file + YAML path + reason; templates build scenarios."""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.harness.suites import list_suites, load_suite, parse_suite

SHIPPED = Path(__file__).resolve().parent.parent / "suites"


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_suites_validate_and_build(path):
    suite = load_suite(path)
    assert suite.scenarios
    model, gpu = load_model("llama3.1-8b"), load_gpu("h100")
    for tpl in suite.scenarios:
        sc = tpl.build(model, gpu, "tcp")
        assert sc.id == f"{suite.name}/{tpl.id}"
        assert sc.pool_bytes > 0


def test_every_application_preset_has_a_suite():
    assert {"smoke", "conformance", "chat", "coding", "summarization", "deep-research"} <= set(list_suites())


@pytest.mark.parametrize(
    "text,field,reason",
    [
        ("suite: x\nscenarios: [{id: a, slo: {p99_latency_us: fast}}]", "scenarios[0].slo.p99_latency_us", "expected number, got string 'fast'"),
        ("suite: x\nscenarios: [{id: a, bogus: 1}]", "scenarios[0].bogus", "unknown field 'bogus'"),
        ("suite: x\nsuite: y\nscenarios: [{id: a}]", "", "duplicate key 'suite'"),
        ("suite: x\nscenarios: [{id: a, prefill: {tp: 0}}]", "scenarios[0].prefill.tp", "must be >= 1, got 0"),
        ("suite: x\nscenarios: [{id: a}, {id: a}]", "scenarios[1].id", "duplicate id"),
        ("suite: x\nscenarios: [{id: a, workload: {isl: {kind: uniform, low: 9}}}]", "scenarios[0].workload.isl.high", "required"),
        ("suite: x\nscenarios: [{id: a, workload: {arrival: {kind: poisson}}}]", "scenarios[0].workload.arrival.rate_per_s", "required"),
        ("suite: x\nscenarios: []", "scenarios", "must not be empty"),
        ("suite: x\nscenarios: [{id: a, prefill: {ep: 0}}]", "scenarios[0].prefill.ep", "must be >= 1, got 0"),
        ("suite: x\nscenarios: [{id: a, prefill: {max_batch_tokens: -1}}]", "scenarios[0].prefill.max_batch_tokens", "must be >= 0, got -1"),
        ("suite: x\nscenarios: [{id: a, workload: {isl: 5}\n", "line", "not valid YAML"),
    ],
)
def test_bad_suites_name_file_path_and_reason(text, field, reason):
    with pytest.raises(ProfileError) as info:
        suite = parse_suite(text, "bad.yaml")
        for tpl in suite.scenarios:  # some errors surface when the workload is built
            tpl.build(load_model("llama3.1-8b"), load_gpu("h100"), "tcp")
    msg = str(info.value)
    assert msg.startswith("bad.yaml: ")
    assert field in msg and reason in msg, msg


def test_suite_deployment_takes_ep_and_max_batch_tokens():
    suite = parse_suite("suite: x\nscenarios: [{id: a, prefill: {tp: 8, ep: 8, max_batch_tokens: 4096}, decode: {tp: 8, ep: 4}}]", "ok.yaml")
    sc = suite.scenarios[0].build(load_model("deepseek-v3"), load_gpu("h200"), "tcp")
    assert (sc.prefill.ep, sc.prefill.max_batch_tokens, sc.decode.ep) == (8, 4096, 4)
