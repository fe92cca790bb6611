"""bench_engines refuses, with the exact reason, to compare against an engine it cannot run."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_engines  # noqa: E402

from pytest_kvfabric.transports import registry
from pytest_kvfabric.transports.base import Capability


def test_unknown_engine_is_named(capsys):
    assert bench_engines.main(["--engines", "tcp,ucx-magic"]) == 2
    assert "unknown size or engine 'ucx-magic'" in capsys.readouterr().err


def test_missing_engine_exits_2_with_the_probe_reason(monkeypatch, capsys):
    real = registry.probe

    def probe(name, options=None):
        if name == "nixl":
            return Capability.missing("NIXL's Python API cannot be imported (No module named 'nixl_cu12')")
        return real(name, options)

    monkeypatch.setattr(registry, "probe", probe)
    assert bench_engines.main(["--engines", "tcp,nixl-tcp", "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert "nixl-tcp unavailable: NIXL's Python API cannot be imported" in err
