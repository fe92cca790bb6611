"""The controller's side of a session's results: gathering every case's record from the test
reports (from every xdist worker), the JSON and HTML reports, the terminal summary and the gate.

One KvReporter per session, registered by plugin.py with the run's KvSession (session.py);
the summary's sections come from the pytest_kvfabric_report_sections hook (hookspecs.py).
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from ..errors import KvFabricError
from .session import KvSession

PROP = "kvfabric"  # user_properties key carrying a case's JSON record (to the xdist controller, JUnit)


def merged(lists) -> list:
    """A list hook's results, the built-in (trylast, hence last) first."""
    return [x for part in reversed(lists) for x in (part or ())]


class KvReporter:
    """Gathers every case's record from test reports (on the xdist controller, from all workers)
    and writes what the session reports."""

    def __init__(self, config: pytest.Config, session: KvSession, html_path: str | None) -> None:
        self.config = config
        self.session = session
        self.html_path = html_path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        session = self.session
        record = session.local_records.get(report.nodeid)  # made in this process: no parsing back
        if record is None:  # from an xdist worker: its JSON text crossed the process boundary
            record = next((json.loads(v) for k, v in report.user_properties if k == PROP), None)
        if record is None:
            return
        results = session.results
        entry = results.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed"})
        entry.update({k: v for k, v in record.items() if v is not None or k not in entry})
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            if not entry.get("reason"):
                entry["reason"] = _first_line(report.longreprtext)
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
            entry["reason"] = entry.get("reason") or _skip_reason(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):
            return
        sel = self.session.selection
        if not (sel.json_path or sel.save_baseline or self.html_path):
            return
        from ..report import jsonreport

        report = session_report(self.config, self.session, exitstatus)
        for path in filter(None, (sel.json_path, sel.save_baseline)):
            jsonreport.write(path, report)
        if self.html_path:
            _write_html(self.session, self.html_path, report, sel.baseline_path)

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        kv = self.session
        if hasattr(config, "workerinput") or not kv.results:
            return
        results = list(kv.results.values())
        for r in results:
            r.setdefault("case", r["nodeid"])
        for title, text in merged(config.hook.pytest_kvfabric_report_sections(
                config=config, results=results, metrics=kv.metrics)):
            terminalreporter.write_sep("=", title)
            terminalreporter.write_line(text)
        from ..lab.env import virtualized, TCG_NOTE

        if virtualized() == "tcg":
            terminalreporter.write_line(f"kvfabric: {TCG_NOTE}")
        sel = kv.selection
        baseline = kv.baseline_samples
        if sel.baseline_path:
            _gate_summary(terminalreporter, config, kv, exitstatus, results)
            ran = {r["case"] for r in results if r.get("metrics")}
            only_old = sorted(set(baseline) - ran)
            only_new = sorted(ran - set(baseline))
            if only_old:
                terminalreporter.write_line(f"kvfabric: {len(only_old)} baseline case(s) not run: {', '.join(only_old)}")
            if only_new:
                terminalreporter.write_line(f"kvfabric: {len(only_new)} case(s) not in the baseline: {', '.join(only_new)}")
        for path in filter(None, (sel.json_path, sel.save_baseline)):
            terminalreporter.write_line(f"kvfabric: JSON report written to {path}")
        if self.html_path:
            terminalreporter.write_line(kv.html_error or f"kvfabric: HTML report written to {self.html_path}")


def _first_line(text: str) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    return str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)


def session_report(config: pytest.Config, kv: KvSession, exitstatus: int | None) -> dict[str, Any]:
    """The session JSON report, built once."""
    if kv.report is None:
        kv.report = _build_session_report(config, kv, exitstatus)
    return kv.report


def _build_session_report(config: pytest.Config, kv: KvSession, exitstatus: int | None) -> dict[str, Any]:
    from ..report import fingerprint, jsonreport

    sel = kv.selection
    results = list(kv.results.values())
    for r in results:
        r.setdefault("case", r["nodeid"])
    models = sorted({r.get("model") for r in results if r.get("model")})
    env = fingerprint.fingerprint(interfaces=_interfaces(results), extra={"hosts": _hosts(results)})
    session = {
        "transports": list(sel.transports),
        "models": [m.id for m in sel.models] if sel.models else models,
        "gpu": sel.gpu.id if sel.gpu else None,
        "fabric": sel.fabric,
        "seed": sel.seed,
        "args": [str(a) for a in config.invocation_params.args],
        "exitstatus": None if exitstatus is None else int(exitstatus),
        "baseline": {"path": sel.baseline_path, "max_regression_pct": sel.max_regression_pct,
                     "thresholds_pct": dict(sel.thresholds), "undecided": sel.gate_undecided}
        if sel.baseline_path else None,
        "repeat": sel.repeat,
        "netns": {k: v for k, v in sel.netns.items()} if sel.fabric == "netns" else None,
    }
    return jsonreport.build(session, env, results)


def _interfaces(results: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """Data-plane interfaces the cases used (reported by the fabric in each record)."""
    seen: dict[tuple[str, str | None], None] = {}
    for r in results:
        for iface in r.get("interfaces") or ():
            seen[(iface["name"], iface.get("netns"))] = None
    return list(seen) or [("lo", None)]


def _hosts(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-host fingerprints of remote pairs (hosts fabric), keyed by host name."""
    hosts: dict[str, Any] = {}
    for r in results:
        hosts.update(r.get("host_fingerprints") or {})
    return hosts


def _write_html(kv: KvSession, path: str, report: dict[str, Any], baseline_path: str | None) -> None:
    """The HTML report of this session (and its baseline, when one was given)."""
    from ..report import htmlfile

    try:
        from .options import baseline_list

        base = [htmlfile.load(p) for p in baseline_list(baseline_path)]
        htmlfile.write(path, [htmlfile.from_session(report)], base)
    except (OSError, KvFabricError) as exc:
        kv.html_error = f"kvfabric: HTML report not written to {path}: {exc}"


def _gate_summary(terminalreporter, config: pytest.Config, kv: KvSession, exitstatus: int,
                  results: list[dict[str, Any]]) -> None:
    """Above the verdicts, what changed in the environment; then every case's metric verdicts."""
    from ..report import baseline, fpdiff

    terminalreporter.write_sep("-", "kvfabric baseline gate")
    olds, new = kv.baseline_reports, session_report(config, kv, exitstatus)
    terminalreporter.write_line(fpdiff.render(fpdiff.diff(olds[-1], new), tcg=fpdiff.ran_under_tcg(*olds, new)))
    terminalreporter.write_line(baseline.sessions_line(olds))
    changes = [baseline.Change.from_dict(c) for r in sorted(results, key=lambda r: r["case"])
               for c in r.get("gate") or ()]
    if changes:
        cmp = baseline.Comparison(tuple(changes), (), ())
        terminalreporter.write_line(baseline.render_changes(changes))
        terminalreporter.write_line(f"kvfabric: {baseline.summary_line(cmp)}; undecided "
                                    + ("fails (--kv-gate-undecided=fail)" if kv.selection.gate_undecided == "fail"
                                       else "passes (--kv-gate-undecided=pass)"))
