"""The plugin as users run it (pytester): options, ini keys, markers, ids, suite collection."""
from __future__ import annotations

import re
from pathlib import Path

import os

import pytest

SHIPPED_SUITES = Path(__file__).resolve().parent.parent / "suites"

USES_FIXTURES = """
def test_x(kv_model, kv_transport):
    assert kv_model.id and kv_transport
"""


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--kv-transport=bogus"], "unknown transport; valid: tcp, zerocopy, iouring, devmem, rdma"),
        (["--kv-model=gpt-9"], "unknown model 'gpt-9'; valid:"),
        (["--kv-gpu=tpu9"], "unknown gpu 'tpu9'; valid:"),
        (["--kv-fabric=cloud"], "unknown fabric; valid: local, netns, hosts"),
        (["--kv-fabric=hosts"], "needs --kv-hosts PATH"),
        (["--kv-hosts=/nonexistent.yaml"], "no such file"),
        (["--kv-slo=p99=3"], "unknown SLO key; valid:"),
        (["--kv-slo=p99_latency_us=soon"], "expected a number"),
        (["--kv-seed=-3"], "must be >= 0"),
        (["--kv-seed=abc"], "expected int"),
        (["--kv-max-regression=x"], "--kv-max-regression: (every metric): expected a percentage"),
        (["--kv-max-regression=throughput=nan"], "--kv-max-regression: throughput: must be a finite number >= 0"),
        (["--kv-max-regression=latency_p99=-1"], "must be a finite number >= 0, got -1"),
        (["--kv-max-regression=speed=5"], "--kv-max-regression: speed: unknown metric; valid: throughput, latency_p50"),
        (["--kv-repeat=0"], "--kv-repeat: must be >= 1"),
        (["--kv-repeat=2000"], "--kv-repeat: 2000: must be <= 1000"),
        (["--kv-gate-undecided=maybe"], "--kv-gate-undecided: maybe: valid: pass, fail"),
        (["--kv-baseline=/nonexistent.json"], "no such file"),
        (["--kv-profiles=/nonexistent-dir"], "not a directory"),
        (["--kv-pool-mib=0"], "must be >= 1"),
        (["--kv-pacing=turbo"], "valid: emulated, none"),
        (["--kv-on-copy=ignore"], "valid: fail, skip"),
        (["--kv-transport-param=connections"], "expected KEY=VALUE"),
        (["--kv-netns-offloads=gro=maybe"], "expected FEATURE=on|off"),
        (["--kv-netns-cpu-split=maybe"], "expected on or off"),
        (["--kv-suite=nosuch"], "unknown suite 'nosuch'; valid:"),
    ],
)
def test_bad_option_values_are_usage_errors_listing_valid_values(pytester, args, expected):
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str(), result.stderr.str()
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    "ini,expected",
    [
        ("kv_transport = bogus", "unknown transport"),
        ("kv_model = gpt-9", "unknown model 'gpt-9'"),
        ("kv_fabric = cloud", "unknown fabric"),
        ("kv_slo =\n    nope=1", "unknown SLO key"),
    ],
)
def test_bad_ini_values_are_usage_errors(pytester, ini, expected):
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str()


def test_ini_values_select_like_flags_and_flags_win(pytester):
    pytester.makeini("[pytest]\nkv_transport = zerocopy\nkv_model = deepseek-v3\n")
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_x[[]deepseek-v3-zerocopy[]]*"])
    result = pytester.runpytest("--collect-only", "-q", "--kv-transport=tcp")
    result.stdout.fnmatch_lines(["*test_x[[]deepseek-v3-tcp[]]*"])


def test_parametrization_ids_are_model_then_transport(pytester):
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("--collect-only", "-q", "--kv-model=deepseek-r1,llama3.1-8b",
                                "--kv-transport=tcp,zerocopy")
    out = result.stdout.str()
    ids = re.findall(r"test_x\[([^\]]+)\]", out)
    assert ids == ["deepseek-v3-tcp", "deepseek-v3-zerocopy", "llama3.1-8b-tcp", "llama3.1-8b-zerocopy"]


def test_all_models_and_transports(pytester):
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("--collect-only", "-q", "--kv-model=all", "--kv-transport=all")
    out = result.stdout.str()
    for expected in ("deepseek-v3-rdma", "gpt-oss-120b-devmem", "kimi-k2-iouring", "mixtral-8x22b-tcp"):
        assert f"test_x[{expected}]" in out


def test_model_given_as_a_profile_path(pytester):
    src = Path(__file__).resolve().parent.parent / "profiles" / "models" / "llama3.1-8b.yaml"
    mine = pytester.path / "my-model.yaml"
    mine.write_text(src.read_text().replace("id: llama3.1-8b", "id: my-llama"))
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("--collect-only", "-q", f"--kv-model={mine}")
    result.stdout.fnmatch_lines(["*test_x[[]my-llama-tcp[]]*"])


def test_report_header_names_the_selection(pytester):
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--kv-transport=tcp,zerocopy", "--kv-model=deepseek-v3", "--kv-gpu=b200")
    result.stdout.fnmatch_lines(["kvfabric: transports=tcp,zerocopy models=deepseek-v3 gpu=b200 fabric=local"])


def test_unknown_marker_key_is_a_usage_error(pytester):
    pytester.makepyfile("""
        import pytest
        @pytest.mark.kv_slo(p99_latency=5)
        def test_x(kv_model):
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "p99_latency: unknown SLO key" in result.stderr.str()


def test_marker_bad_value_is_a_usage_error(pytester):
    pytester.makepyfile("""
        import pytest
        @pytest.mark.kv_slo(min_throughput_gbps="lots")
        def test_x():
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "min_throughput_gbps: expected a number" in result.stderr.str()


def test_marker_is_registered(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.kv_slo(**thresholds)*"])


def test_unavailable_transport_is_a_skip_with_the_probes_reason(pytester):
    pytester.makepyfile(USES_FIXTURES)
    result = pytester.runpytest("-rs", "--kv-transport=rdma")
    result.assert_outcomes(skipped=1)
    from pytest_kvfabric.transports.registry import probe

    reason = probe("rdma").reason
    assert reason
    assert reason.splitlines()[0][:60] in result.stdout.str()


def test_shipped_suite_collects_scenario_model_transport_items(pytester):
    result = pytester.runpytest("--collect-only", "-q", str(SHIPPED_SUITES / "smoke.yaml"),
                                "--kv-model=deepseek-v3", "--kv-transport=tcp,zerocopy")
    out = result.stdout.str()
    assert "smoke.yaml::chat-layerwise[deepseek-v3-tcp]" in out
    assert "smoke.yaml::tp8-to-tp4[deepseek-v3-zerocopy]" in out
    assert result.ret == 0


def test_synthetic_scenarios_are_not_multiplied_by_models(pytester):
    result = pytester.runpytest("--collect-only", "-q", str(SHIPPED_SUITES / "conformance.yaml"),
                                "--kv-model=deepseek-v3,llama3.1-8b")
    out = result.stdout.str()
    assert "conformance.yaml::size-1k[tcp]" in out
    assert "conformance.yaml::fanout-tp8-to-tp4[deepseek-v3-tcp]" in out
    assert "conformance.yaml::fanout-tp8-to-tp4[llama3.1-8b-tcp]" in out


def test_kv_suite_option_collects_a_shipped_suite_by_name(pytester):
    result = pytester.runpytest("--collect-only", "-q", "--kv-suite=smoke", "--kv-model=llama3.1-8b")
    out = result.stdout.str()
    for scenario in ("chat-layerwise", "tp8-to-tp4", "block-burst", "poisson-open-loop"):
        assert f"{scenario}[llama3.1-8b-tcp]" in out
    assert "4 tests collected" in out


def test_suite_file_with_an_error_fails_collection_naming_file_path_reason(pytester):
    suites = pytester.mkdir("suites")
    (suites / "broken.yaml").write_text("suite: broken\nscenarios:\n  - id: a\n    slo: {max_exposed_ms: -1}\n")
    result = pytester.runpytest("suites/broken.yaml")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*broken.yaml: scenarios[[]0[]].slo.max_exposed_ms: must be >= 0, got -1*"])


def test_non_suite_yaml_is_left_alone(pytester):
    pytester.makefile(".yaml", config="key: value\n")
    pytester.makepyfile("def test_plain(): pass")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


@pytest.mark.skipif(os.geteuid() != 0, reason="the netns fabric needs root")
def test_netns_cpu_split_reaches_the_pair_the_tests_get(pytester):
    pytester.makepyfile("""
        from pytest_kvfabric.core.scenario import Synthetic

        def test_pair(kv_pair):
            split = kv_pair.details["cpu_split"]
            assert split and not set(split["prefill"]) & set(split["decode"])
            assert "taskset -c" in kv_pair.decode.gateway_spec

        def test_run(kv_run, kv_scenario):
            small = dict(synthetic=Synthetic(nbytes=65536, transfers=32, batch=8), pacing="none", pool_bytes=8 << 20)
            assert kv_run(kv_scenario.replace(**small)).to_dict()["integrity"]["errors"] == 0
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--kv-fabric=netns", "--kv-netns-cpu-split=on",
                                "--kv-json=report.json")
    result.assert_outcomes(passed=2)
    import json

    recs = [r for r in json.loads((pytester.path / "report.json").read_text())["results"] if r["interfaces"]]
    cpus = [i["cpus"] for i in recs[0]["interfaces"]]
    assert len(cpus) == 2 and all(cpus) and not set(cpus[0]) & set(cpus[1])  # the record says who had which CPUs
