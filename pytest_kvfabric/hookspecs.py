"""Hooks a plug-in implements to extend a kvfabric run (as pytest-xdist and pytest-benchmark do).

Implement them in an installed pytest plugin or in a conftest.py that pytest loads before
configuring (the rootdir's or one next to the tests named on the command line): the run's
metrics, fabrics and SLO keys are fixed when the session starts. The shipped behaviour is
itself a set of `trylast` implementations in plugin.py, so a plug-in's results come first
in the lists pluggy returns and the plugin puts its own in front when it merges them.

A transport is added with the `pytest_kvfabric.transports` entry point (transports/registry.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import pytest

if TYPE_CHECKING:
    from .measure.metrics import Metric


@pytest.hookspec
def pytest_kvfabric_metrics(config: pytest.Config) -> "Sequence[Metric] | None":
    """Extra figures for every case: a list of measure.metrics.Metric.

    A Metric says once what the figure is called, its unit and direction, how it is computed
    from a case's metrics dict (`compute`) and where it shows: written into the JSON report at
    `path`, a JUnit property, a terminal-table column (`column`), an SLO key (`slo`) and a
    baseline-gated metric (`gate_pct`, then also a `--kv-max-regression KEY=PCT` key).
    Keys and SLO keys must not repeat a built-in one (a usage error names it)."""


@pytest.hookspec
def pytest_kvfabric_report_sections(config: pytest.Config, results: Sequence[Mapping[str, Any]],
                                    metrics: Any) -> "Sequence[tuple[str, str]] | None":
    """Sections of the terminal summary: a list of (title, text). `results` are the session's
    case records (as in the JSON report's "results"), `metrics` the run's MetricSet. The
    built-in section is the KV-transfer summary table."""


@pytest.hookspec
def pytest_kvfabric_fabrics(config: pytest.Config) -> "Mapping[str, Callable[..., Any]] | None":
    """Fabrics `--kv-fabric NAME` may name: {name: opener}. An opener is called once per process
    as opener(selection, worker_index, worker_count) and returns (fabric.base.HostPair, closer);
    it raises harness.case.PairUnavailable (the cases skip with its text) or a KvFabricError
    (they fail, named). The built-ins are local, netns and hosts."""
