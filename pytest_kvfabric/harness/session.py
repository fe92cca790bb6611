"""The run-wide state of one kvfabric pytest session, in one object (one per process: the
controller and each xdist worker have their own). The plugin keeps it under one stash key;
nothing about a run lives in module globals. No pytest here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..measure.metrics import MetricSet
from .case import Opener, PairManager
from .options import Selection


@dataclass
class KvSession:
    selection: Selection  # the validated options
    metrics: MetricSet  # built-in metrics and the plug-ins' (pytest_kvfabric_metrics)
    fabrics: Mapping[str, Opener]  # --kv-fabric names and their openers (pytest_kvfabric_fabrics)
    pairs: PairManager  # this process's host pair and its probe cache
    # nodeid -> the case's record (the JSON report's "results" entry), gathered from every
    # test report (on the xdist controller, from all workers)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # nodeid -> the record a case made in this process: read as it is, not parsed back from JSON
    local_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline_reports: list[dict[str, Any]] = field(default_factory=list)  # --kv-baseline, one per session
    # case id -> the baseline's sessions, each its repeats' figures (report.baseline.case_sessions)
    baseline_samples: dict[str, list[list[dict[str, float]]]] = field(default_factory=dict)
    baseline_transports: frozenset[str] = frozenset()  # transports the baseline measured
    default_suites_note: str | None = None  # why the default suites run (said once)
    html_error: str | None = None
    report: dict[str, Any] | None = None  # the session JSON report, built once at the end

    @property
    def worker(self) -> str:
        return self.pairs.worker

    @property
    def is_worker(self) -> bool:
        return self.pairs.worker != "main"
