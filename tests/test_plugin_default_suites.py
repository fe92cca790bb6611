"""Issue 24 as users meet it (pytester): the headline command runs the default suites where
nothing KV-related was collected, and a transport that disappears fails the gate."""
from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from pytest_kvfabric.cli import main as kvfabric

HERE = Path(__file__).parent
NAME = "tcp-switchable"
DOWN = "NIC firmware 2.1 no longer exposes the feature"
TINY = "suite: tiny\nscenarios:\n  - {id: small, pacing: none, synthetic: {nbytes: 65536, transfers: 32, batch: 8}}\n"


@pytest.fixture
def tiny_dir(tmp_path_factory) -> Path:
    """A user suite directory outside the tested directory (so only --kv-profiles finds it)."""
    d = tmp_path_factory.mktemp("suites")
    (d / "tiny.yaml").write_text(TINY)
    return d


def test_headline_command_in_an_empty_directory_collects_the_default_suites(pytester):
    result = pytester.runpytest("--kv-transport=tcp", "--kv-model=deepseek-v3", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "kvfabric: running the default suites smoke: --kv-transport and --kv-model given and no KV-transfer "
        "case collected*",
        "*smoke.yaml::chat-layerwise[[]deepseek-v3-tcp[]]",
        "*smoke.yaml::poisson-open-loop[[]deepseek-v3-tcp[]]",
        "4 tests collected*",
    ])


def test_default_suites_run_and_pass_and_the_ini_key_chooses_them(pytester, tiny_dir):
    pytester.makeini(f"[pytest]\nkv_default_suites = tiny\nkv_profiles = {tiny_dir}\n")
    result = pytester.runpytest("--kv-transport=tcp")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["kvfabric: running the default suites tiny: --kv-transport given*",
                                 "*tiny/small[[]synthetic-tcp[]]*local*passed*"])


def test_own_tests_are_kept_and_nothing_is_added_without_kv_options_or_with_kv_cases(pytester):
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    both = pytester.runpytest("--kv-transport=tcp", "--collect-only", "-q")
    both.stdout.fnmatch_lines(["*test_plain.py::test_plain", "*smoke.yaml::chat-layerwise[[]llama3.1-8b-tcp[]]"])
    plain = pytester.runpytest("--collect-only", "-q")  # no --kv-transport/--kv-model: as before
    plain.stdout.fnmatch_lines(["test_plain.py::test_plain", "1 test collected*"])
    assert "default suites" not in plain.stdout.str()
    pytester.makepyfile(test_kv="def test_kv(kv_transport):\n    pass\n")
    mine = pytester.runpytest("--kv-transport=tcp", "--collect-only", "-q")
    mine.stdout.fnmatch_lines(["2 tests collected*"])
    assert "default suites" not in mine.stdout.str()


@pytest.mark.parametrize("args,expected", [
    (["--kv-default-suites=nosuch"], "unknown suite 'nosuch'; valid:"),
    (["--kv-require-transport=pigeon"], "--kv-require-transport: pigeon: unknown transport; valid: tcp"),
])
def test_bad_values_are_usage_errors(pytester, args, expected):
    result = pytester.runpytest("--kv-transport=tcp", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR and expected in result.stderr.str()


@pytest.fixture
def switchable(tmp_path_factory, monkeypatch):
    """The plug-in transport installed as pip would (module + dist-info with the entry point),
    visible to this process and to the agents it starts (PYTHONPATH)."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(HERE / "example_transport" / "kvf_switchable_transport.py", site)
    dist = site / "kvf_switchable-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kvf-switchable\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[pytest_kvfabric.transports]\n{NAME} = kvf_switchable_transport:SwitchableTransport\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{Path(__file__).resolve().parents[1]}")
    monkeypatch.delenv("KVF_SWITCHABLE_DOWN", raising=False)
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("kvf_switchable_transport", None)


def test_a_transport_gone_since_the_baseline_fails_the_gate_naming_it(pytester, tiny_dir, switchable, monkeypatch,
                                                                      capsys):
    args = ["--kv-transport", NAME, "--kv-suite", str(tiny_dir / "tiny.yaml")]
    pytester.runpytest(*args, "--kv-save-baseline=base.json").assert_outcomes(passed=1)
    monkeypatch.setenv("KVF_SWITCHABLE_DOWN", DOWN)
    gated = pytester.runpytest(*args, "--kv-baseline=base.json", "--kv-json=gated.json")
    gated.assert_outcomes(failed=1)
    gated.stdout.fnmatch_lines([f"*transport {NAME} unavailable since the baseline (base.json ran it): "
                                f"{NAME}: {DOWN}*"])
    # Without a baseline it is a skip, unless the user requires the transport.
    skipped = pytester.runpytest(*args, "-rs", "--kv-json=new.json")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines([f"SKIPPED*{NAME}: {DOWN}"])
    required = pytester.runpytest(*args, "--kv-require-transport=named")
    required.assert_outcomes(failed=1)
    required.stdout.fnmatch_lines([f"*transport {NAME} is required (--kv-require-transport) but unavailable*{DOWN}*"])
    pytester.makepyfile(test_fx="def test_fx(kv_run):\n    kv_run()\n")  # a test of one's own: same rule
    fx = pytester.runpytest("test_fx.py", "--kv-transport", NAME, f"--kv-require-transport={NAME}")
    fx.assert_outcomes(errors=1)
    fx.stdout.fnmatch_lines([f"*transport {NAME} is required (--kv-require-transport) but unavailable*{DOWN}*"])
    # kvfabric compare says the same of the report in which it was skipped, and exits 1.
    base, new = str(pytester.path / "base.json"), str(pytester.path / "new.json")
    capsys.readouterr()
    assert kvfabric(["compare", base, new, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["unavailable_since_baseline"] == [{"case": f"tiny/small[synthetic-{NAME}]", "reason": f"{NAME}: {DOWN}"}]
    assert kvfabric(["compare", base, new]) == 1
    assert f"FAILED tiny/small[synthetic-{NAME}]: unavailable since the baseline: {NAME}: {DOWN}" in capsys.readouterr().out
