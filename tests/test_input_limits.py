"""The bounds in limits.py are the ones the schemas enforce, and pytest refuses bad values up front."""
from __future__ import annotations

import json

import pytest

from pytest_kvfabric.core import limits
from pytest_kvfabric.core.profile_schema import load_schema

pytest_plugins = ["pytester"]


def test_schemas_carry_the_declared_bounds():
    model, gpu, suite = load_schema("model"), load_schema("gpu"), load_schema("suite")
    assert model["$defs"]["posint"]["maximum"] == limits.MAX_MODEL_DIM
    assert model["$defs"]["layers"]["maximum"] == limits.MAX_LAYERS
    assert gpu["$defs"]["posnum"]["maximum"] == limits.MAX_GPU_FIGURE
    assert gpu["$defs"]["posnum"]["minimum"] == limits.MIN_GPU_FIGURE
    assert suite["$defs"]["requests"]["maximum"] == limits.MAX_REQUESTS
    assert suite["$defs"]["tokens"]["maximum"] == limits.MAX_TOKENS
    fields = suite["$defs"]["scenarioFields"]["properties"]
    assert fields["pool_mib"]["maximum"] == limits.MAX_POOL_MIB
    assert fields["seed"]["maximum"] == limits.MAX_SEED
    assert fields["timeout_s"]["maximum"] == limits.MAX_TIMEOUT_S


def test_every_schema_number_is_bounded_above():
    """A number field without a maximum is how `layers: 1000000000` got in: none is left."""
    unbounded = []
    for name in ("model", "gpu", "suite", "hosts"):
        def walk(node, path):
            if isinstance(node, dict):
                t = node.get("type")
                if t in ("integer", "number") and "maximum" not in node and "slo" not in path:
                    unbounded.append(f"{name}:{path}")
                for k, v in node.items():
                    walk(v, f"{path}/{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}[{i}]")
        walk(load_schema(name), "")
    assert unbounded == []


def test_plan_size_is_refused_before_allocation_with_the_figure(capsys):
    from pytest_kvfabric import cli

    rc = cli.main(["plan", "--model", "llama3.1-8b", "--gpu", "h100", "--isl", "1048576", "--prefill-tp", "8", "--decode-tp", "8",
                   "--requests", "16"])  # fits HBM at TP8, but not the plan-size limit
    err = capsys.readouterr().err
    assert rc == 2 and "the plan would hold 268,435,456 transfers (10.5 GiB)" in err and "the limit is 16,777,216" in err


def test_broken_pipe_is_quiet(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "pytest_kvfabric.cli", "plan", "--model", "llama3.1-8b",
                             "--gpu", "h100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("args, expected", [
    (["--kv-timeout=inf"], "--kv-timeout: must be a finite number, got inf"),
    (["--kv-max-regression=nan"], "--kv-max-regression: (every metric): must be a finite number >= 0, got nan"),
    (["--kv-seed=-1"], "--kv-seed: must be >= 0, got -1"),
    (["--kv-netns-mtu=100000"], "--kv-netns-mtu: must be <= 65,535, got 100,000"),
    (["--kv-rdma-tc=-1"], "--kv-rdma-tc: must be >= 0, got -1"),
    (["--kv-json=/proc/x/r.json"], "--kv-json: /proc/x/r.json: directory /proc/x does not exist"),
    (["--kv-save-baseline=."], "--kv-save-baseline: . is a directory, expected a file path"),
])
def test_pytest_refuses_bad_values_before_any_test_runs(pytester, args, expected):
    pytester.makepyfile("def test_ran(): open('ran', 'w').close()")
    res = pytester.runpytest(*args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in res.stderr.str()
    assert not (pytester.path / "ran").exists()


def test_help_describes_the_command_in_whole_sentences(capsys):
    from pytest_kvfabric import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "compare reports." in out and "Each subcommand lives" not in out


@pytest.mark.parametrize("params, expected", [
    ({"conections": 4}, "unknown parameter 'conections' for transport tcp; valid: busy_poll_us"),
    ({"bogus": 1}, "unknown parameter 'bogus'"),
    ({"mode": "send_zc"}, "unknown parameter 'mode' for transport tcp"),
    ({"connections": 0}, "transport tcp parameter connections: must be >= 1, got 0"),
    ({"connections": float("nan")}, "expected an integer"),
    ({"nodelay": "maybe"}, "expected true or false"),
])
def test_transport_parameters_are_declared_and_checked(params, expected):
    from pytest_kvfabric.transports.registry import check_params

    assert expected in (check_params(["tcp"], params) or "")


def test_a_parameter_applies_to_the_transports_declaring_it():
    from pytest_kvfabric.transports.registry import check_params

    assert check_params(["tcp", "iouring"], {"mode": "send_zc", "connections": 2}) is None
    assert "must be one of send, send_zc" in check_params(["tcp", "iouring"], {"mode": "zc"})
    assert check_params(["tcp"], {"token": "x", "_inject": "corrupt"}) is None  # framework keys


def test_suite_naming_an_unknown_transport_is_an_error(tmp_path):
    from pytest_kvfabric.errors import ProfileError
    from pytest_kvfabric.harness.suites import load_suite

    p = tmp_path / "s.yaml"
    p.write_text("suite: s\nscenarios:\n  - id: a\n    transports: [tpc]\n")
    with pytest.raises(ProfileError, match=r"scenarios\[0\].transports\[0\]: unknown transport 'tpc'; valid: tcp"):
        load_suite(p)


def test_suite_timeout_s_is_honoured(pytester):
    """A case given a timeout far below its run time fails; it used to run to the end and pass."""
    pytester.makefile(".yaml", slow_suite="""
suite: slow
defaults: {pool_mib: 32}
scenarios:
  - id: long
    timeout_s: 0.5
    workload: {isl: 4096, requests: 200}
""")
    res = pytester.runpytest("slow_suite.yaml")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*timed out*"])


def test_netns_options_on_another_fabric_are_warned_not_dropped(pytester):
    pytester.makepyfile("def test_x(): pass")
    res = pytester.runpytest("--kv-netns-mtu=4000", "--kv-netns-offloads=gro=off")
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*--kv-netns-mtu, --kv-netns-offloads applies only to --kv-fabric=netns; "
                              "ignored with --kv-fabric=local*"])


@pytest.mark.parametrize("text, expected", [
    ("p99_latency_us=inf", "must be a finite number"), ("min_throughput_gbps=nan", "must be a finite number"),
    ("p99_latency_us=-1", "must be >= 0"), ("p99_latency_us=" + "9" * 400, "must be a finite number"),
])
def test_slo_thresholds_are_finite(text, expected):
    from pytest_kvfabric.errors import ProfileError
    from pytest_kvfabric.measure.slo import parse_assignments

    with pytest.raises(ProfileError, match=expected):
        parse_assignments([text])


def test_rdma_options_without_the_rdma_transport_are_warned_not_passed_on(pytester):
    pytester.makepyfile("def test_x(): pass")
    res = pytester.runpytest("--kv-rdma-tc=5")
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*--kv-rdma-tc applies only to the rdma transport; ignored with --kv-transport=tcp*"])
    bad = pytester.runpytest("--kv-rdma-tc=-1")  # a bad value is refused whatever the transport
    assert bad.ret == pytest.ExitCode.USAGE_ERROR and "--kv-rdma-tc: must be >= 0, got -1" in bad.stderr.str()
