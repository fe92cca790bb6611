"""pytest hooks only: options, fixtures, parametrization, suite collection, reports.

The work is done by plain modules: options (validation), suites (YAML), case (run + verdicts),
slo, report/*. Under pytest-xdist each worker runs its cases on its own host pair and ships
results back inside the reports' user_properties; only the controller writes the JSON report.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .harness import case as case_mod
from .measure import slo as slo_mod
from .errors import KvFabricError
from .harness.options import OPTIONS, Selection, resolve

SELECTION = pytest.StashKey[Selection]()
PAIRS = pytest.StashKey[case_mod.PairManager]()
BASELINE = pytest.StashKey[dict]()  # case id -> the baseline's sessions (report.baseline.case_sessions)
BASELINE_REPORT = pytest.StashKey[list]()  # the baseline's reports, one per session
SESSION_REPORT = pytest.StashKey[dict]()
BASELINE_TRANSPORTS = pytest.StashKey[frozenset]()  # transports the baseline measured
DEFAULT_SUITES_NOTE = pytest.StashKey[str]()  # built once at session end, for the JSON files and the summary
RESULTS = pytest.StashKey[dict]()
HTML_ERROR = pytest.StashKey[str]()
PROP = "kvfabric"  # user_properties key carrying a case's JSON record


# ---------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kvfabric", "KV-cache transfer scenarios (pytest-kvfabric)")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=opt.dest, metavar=opt.metavar, help=opt.help,
                        action="append" if opt.append else "store", default=None)
        parser.addini(opt.ini, help=f"default for {opt.flag}: {opt.help}",
                      type="linelist" if opt.append else "string", default=[] if opt.append else None)


def _getter(config: pytest.Config) -> Callable[[str], Any]:
    def get(dest: str) -> Any:
        value = config.getoption(dest, default=None)
        if value is None:
            value = config.getini(dest)
        return value if value not in ("",) else None

    return get


def _selection(config: pytest.Config) -> Selection:
    sel = config.stash.get(SELECTION, None)
    if sel is None:
        try:
            sel = resolve(_getter(config))
        except KvFabricError as exc:
            raise pytest.UsageError(f"kvfabric: {exc}") from None
        config.stash[SELECTION] = sel
    return sel


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """--kv-suite NAMES: add the named suite files to the paths pytest collects."""
    names = getattr(early_config.known_args_namespace, "kv_suite", None)
    if not names:
        return
    from .harness.suites import find_suite

    dirs = getattr(early_config.known_args_namespace, "kv_profiles", None) or []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        try:
            path = str(find_suite(name, dirs))
        except KvFabricError as exc:
            raise pytest.UsageError(f"kvfabric: {exc}") from None
        # `--kv-suite PATH` leaves PATH in args as the option's value, not as a path to collect
        positional = [a for i, a in enumerate(args) if not (i and args[i - 1] == "--kv-suite")]
        if path not in positional:
            args.append(path)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kv_slo(**thresholds): SLO thresholds for this test's KV-transfer cases "
                            f"(keys: {', '.join(slo_mod.VALID_KEYS)})")
    sel = _selection(config)
    if not hasattr(config, "workerinput"):
        for note in sel.warnings:  # options that do not apply to this run: said, not silently dropped
            config.issue_config_time_warning(pytest.PytestConfigWarning(note), stacklevel=2)
    winput = getattr(config, "workerinput", None)  # xdist worker identity comes from config, not env
    if winput:
        case_mod.set_worker(winput["workerid"], int(winput["workercount"]))
    else:
        case_mod.set_worker("main", 1)
    case_mod.forget_probes()
    if not hasattr(config, "workerinput") and not config.option.collectonly:
        for name in sel.transports:  # bad transport parameters are usage errors, not skips
            try:
                case_mod.probe_reason(name, sel.transport_params)
            except KvFabricError as exc:
                raise pytest.UsageError(f"kvfabric: transport {name}: {exc}") from None
    if sel.fabric == "hosts" and not hasattr(config, "workerinput"):
        _check_inventory(config, sel)
    config.stash[PAIRS] = case_mod.PairManager(sel)
    config.stash[RESULTS] = {}
    config.stash[BASELINE] = {}
    config.pluginmanager.register(ResultCollector(config), "kvfabric-results")
    config.pluginmanager.register(DefaultSuites(), "kvfabric-default-suites")
    if sel.baseline_path:
        from .report import baseline, jsonreport

        try:
            reports = [jsonreport.read(p) for p in sel.baseline_paths]
            config.stash[BASELINE_REPORT] = reports
            config.stash[BASELINE] = baseline.case_sessions(reports)
            config.stash[BASELINE_TRANSPORTS] = frozenset(
                r.get("transport") for rep in reports for r in rep["results"] if r.get("metrics"))
        except KvFabricError as exc:
            raise pytest.UsageError(f"kvfabric: --kv-baseline: {exc}") from None


def _check_inventory(config: pytest.Config, sel: Selection) -> None:
    """Inventory errors and more xdist workers than host pairs are usage errors, up front."""
    from .fabric import alloc
    from .fabric.hosts import load_inventory

    try:
        inv = load_inventory(sel.hosts)
        workers = getattr(config.option, "numprocesses", None)
        if isinstance(workers, int) and workers > 0:
            alloc.check_worker_count(workers, len(inv.pairs), inv.source)
    except KvFabricError as exc:
        raise pytest.UsageError(f"kvfabric: {exc}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    pairs = config.stash.get(PAIRS, None)
    if pairs is not None:
        pairs.close()


def pytest_report_header(config: pytest.Config) -> str:
    return _selection(config).header()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` with a host inventory starts one worker per host pair."""
    sel = _selection(config)
    if sel.fabric == "hosts" and sel.hosts:
        from .fabric.alloc import pairs_for_auto
        from .fabric.hosts import load_inventory

        return pairs_for_auto(load_inventory(sel.hosts))
    return None


# ---------------------------------------------------------------- parametrization + fixtures

DEFAULT_MODEL = "llama3.1-8b"


def _model_ids(sel: Selection) -> list[str]:
    return [m.id for m in sel.models] if sel.models else [DEFAULT_MODEL]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sel = _selection(metafunc.config)
    if "kv_model" in metafunc.fixturenames:
        metafunc.parametrize("kv_model", _model_ids(sel), indirect=True, ids=str)
    if "kv_transport" in metafunc.fixturenames:
        metafunc.parametrize("kv_transport", list(sel.transports), indirect=True, ids=str)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("kv_slo"):
            if mark.args:
                raise pytest.UsageError(f"kvfabric: {item.nodeid}: kv_slo takes keyword arguments only")
            for key, value in mark.kwargs.items():
                try:
                    slo_mod.coerce(key, value, f"{item.nodeid}: @pytest.mark.kv_slo")
                except KvFabricError as exc:
                    raise pytest.UsageError(f"kvfabric: {exc}") from None


def _marker_slo(node: pytest.Item) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("kv_slo"))):  # closest marker wins
        out.update({k: slo_mod.coerce(k, v) for k, v in mark.kwargs.items()})
    return out


@pytest.fixture(scope="session")
def kv_selection(pytestconfig: pytest.Config) -> Selection:
    """The validated kvfabric options of this session."""
    return _selection(pytestconfig)


@pytest.fixture(scope="session")
def kv_gpu(kv_selection: Selection):
    """The GPU profile (--kv-gpu, default h100)."""
    from .core.profiles import load_gpu

    return kv_selection.gpu or load_gpu("h100", kv_selection.profile_dirs)


@pytest.fixture
def kv_model(request: pytest.FixtureRequest, kv_selection: Selection):
    """The model profile of this case (parametrized over --kv-model)."""
    from .core.profiles import load_model

    name = getattr(request, "param", None) or _model_ids(kv_selection)[0]
    for m in kv_selection.models or ():
        if m.id == name:
            return m
    return load_model(name, kv_selection.profile_dirs)


@pytest.fixture
def kv_transport(request: pytest.FixtureRequest, kv_selection: Selection) -> str:
    """The transport name of this case (parametrized over --kv-transport); skips, with the
    probe's exact reason, when this host cannot run it."""
    name = getattr(request, "param", None) or kv_selection.transports[0]
    if kv_selection.fabric != "local":
        return name  # probed on the pair's hosts when the case runs (kv_run)
    reason = case_mod.probe_reason(name, kv_selection.transport_params)
    if reason:
        callspec = getattr(request.node, "callspec", None)  # the id kv_run would give it (the baseline key)
        cid = f"{Path(str(request.node.path)).stem}::{request.node.originalname}" + (
            f"[{callspec.id}]" if callspec is not None else "")
        _remember(request.node, {"case": cid, "transport": name, "reason": reason, "unavailable": True})
        failure = _unavailable_failure(request.config, name, reason)
        if failure:
            pytest.fail(failure, pytrace=False)
        pytest.skip(reason)
    return name


def _unavailable_failure(config: pytest.Config, transport: str, reason: str) -> str | None:
    """Why a missing transport fails this case instead of skipping it, or None (skip).

    A gate must not turn green because the upgrade broke the data path it was to judge."""
    sel = _selection(config)
    if sel.baseline_path and transport in sel.named_transports and transport in config.stash.get(
            BASELINE_TRANSPORTS, frozenset()):
        return f"transport {transport} unavailable since the baseline ({sel.baseline_path} ran it): {reason}"
    if transport in sel.require_transports:
        return f"transport {transport} is required (--kv-require-transport) but unavailable: {reason}"
    return None


@pytest.fixture
def kv_scenario(request: pytest.FixtureRequest, kv_model, kv_gpu, kv_transport: str, kv_selection: Selection):
    """A small default scenario for this case (chat-sized request, emulated pacing); tests
    derive their own with `kv_scenario.replace(...)`. SLOs: marker, then --kv-slo."""
    from .emulator.memory import fit_to_hbm
    from .core.scenario import Distribution, Scenario, Workload

    sel = kv_selection
    slo = {**_marker_slo(request.node), **sel.slo}
    sc = Scenario(
        id=f"{Path(str(request.node.path)).stem}::{request.node.originalname}",
        model=kv_model,
        gpu=kv_gpu,
        workload=Workload(isl=Distribution.fixed(512), osl=Distribution.fixed(128), requests=2),
        seed=sel.seed or 0,
        pacing=sel.pacing or "emulated",
        pool_bytes=int((sel.pool_mib or 64) * 1024 * 1024),
        transport=kv_transport,
        transport_params=dict(sel.transport_params),
        slo=slo,
    )
    # the fixture's deployments are defaults nobody chose: raise TP until the model fits (noted)
    sc, notes = fit_to_hbm(sc, ("prefill", "decode"), sc.id)
    return sc.replace(notes=tuple(notes)) if notes else sc


@pytest.fixture
def kv_pair(pytestconfig: pytest.Config):
    """This worker's host pair (loopback, its own namespace pair, or its inventory pair),
    opened once per worker and torn down at the end of the session."""
    try:
        return pytestconfig.stash[PAIRS].get()
    except case_mod.PairUnavailable as exc:
        pytest.skip(f"fabric {_selection(pytestconfig).fabric}: {exc}")


@pytest.fixture
def kv_run(request: pytest.FixtureRequest, kv_scenario, kv_selection: Selection, pytestconfig: pytest.Config):
    """Run a scenario between a prefill and a decode agent; return its Result.

    `kv_run()` runs kv_scenario; `kv_run(scenario)` or `kv_run(**changes)` another one.
    SLO misses and baseline regressions fail the test with a table (check=False: only measure).
    """

    def run(scenario=None, *, check: bool = True, **changes: Any):
        sc = scenario if scenario is not None else kv_scenario
        if changes:
            sc = sc.replace(**changes)
        if scenario is not None:  # a user's own scenario still obeys --kv-slo and the marker
            sc = sc.replace(slo={**sc.slo, **_marker_slo(request.node), **kv_selection.slo})
        # The case id follows the test's own parametrization id, so a baseline matches it.
        callspec = getattr(request.node, "callspec", None)
        cid = f"{sc.id}[{callspec.id}]" if callspec is not None else case_mod.case_id(
            sc.id, "synthetic" if sc.synthetic else sc.model.id, sc.transport)
        return _run_and_judge(request.node, pytestconfig, sc, cid, check)

    return run


# ---------------------------------------------------------------- running a case


def _remember(item: pytest.Item, record: dict[str, Any]) -> None:
    item.user_properties[:] = [p for p in item.user_properties if p[0] != PROP]
    item.user_properties.append((PROP, json.dumps(record, default=str)))


def _run_and_judge(item: pytest.Item, config: pytest.Config, scenario, cid: str, check: bool,
                   timeout_s: float | None = None):
    sel = _selection(config)
    from .report.fpdiff import ran_under_tcg

    outcome = case_mod.run_case(scenario, config.stash[PAIRS], sel, config.stash[BASELINE], cid,
                                timeout_s=timeout_s,
                                baseline_tcg=ran_under_tcg(*config.stash.get(BASELINE_REPORT, [])))
    _remember(item, outcome.record())
    for key, value in outcome.junit_properties():
        item.user_properties.append((key, value))
    if outcome.skip_reason:
        failure = _unavailable_failure(config, scenario.transport, outcome.skip_reason) if outcome.unavailable else None
        if failure:
            pytest.fail(failure, pytrace=False)
        pytest.skip(outcome.skip_reason)
    if outcome.error:
        pytest.fail(outcome.error, pytrace=False)
    if not check:
        return outcome.result
    failures = []
    if outcome.slo_failed:
        zero_copy_only = all(v.key == "require_zero_copy" for v in outcome.verdicts if not v.passed)
        if zero_copy_only and sel.on_copy == "skip":
            pytest.skip("zero-copy required but " + "; ".join(v.note for v in outcome.verdicts if not v.passed))
        note = outcome.capacity_note()  # "scenario needs 34.5 Gb/s; this pair carried 20 Gb/s ..."
        failures.append("SLO missed:\n" + slo_mod.failure_table(outcome.verdicts) + (f"\n{note}" if note else ""))
    if outcome.regressed or (sel.gate_undecided == "fail" and outcome.undecided):
        from .report.baseline import render_changes

        what = "regressed" if outcome.regressed else "undecided (--kv-gate-undecided=fail)"
        failures.append(f"{what} against baseline {sel.baseline_path}:\n" + render_changes(outcome.changes))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    return outcome.result


# ---------------------------------------------------------------- suites as test items

_SUITE_HINT = re.compile(r"^scenarios\s*:", re.MULTILINE)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    config = parent.config
    explicit = {str(Path(p).resolve()) for p in config.args}
    suites = {str(p.resolve()) for p in _selection(config).suites}
    resolved = str(file_path.resolve())
    is_suite = resolved in explicit or resolved in suites or file_path.parent.name == "suites"
    if not is_suite:
        try:
            is_suite = bool(_SUITE_HINT.search(file_path.read_text(errors="replace")))
        except OSError:
            return None
    return SuiteFile.from_parent(parent, path=file_path) if is_suite else None


class SuiteFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from .harness.suites import DEFAULT_MODELS, load_suite

        sel = _selection(self.config)
        try:
            suite = load_suite(self.path)
        except KvFabricError as exc:
            raise self.CollectError(f"kvfabric suite error: {exc}") from None
        for tpl in suite.scenarios:
            transports = [t for t in sel.transports if not tpl.transports or t in tpl.transports]
            if tpl.synthetic:
                models: list[str | None] = [None]
            elif sel.models:
                models = [m.id for m in sel.models]
            else:
                models = list(tpl.models or DEFAULT_MODELS)
            for model in models:
                for transport in transports:
                    label = f"{model}-{transport}" if model else transport
                    item = SuiteItem.from_parent(self, name=f"{tpl.id}[{label}]", template=tpl,
                                                 model_id=model, transport=transport)
                    if tpl.slow:
                        item.add_marker(pytest.mark.slow)
                    yield item


class SuiteItem(pytest.Item):
    def __init__(self, *, template, model_id: str | None, transport: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.template = template
        self.model_id = model_id
        self.transport = transport

    def _scenario(self):
        from .emulator.memory import check_hbm_fit, fit_to_hbm
        from .core.profiles import load_gpu, load_model
        from .harness.suites import DEFAULT_GPU

        sel = _selection(self.config)
        tpl = self.template
        model = None
        if self.model_id is not None:
            model = next((m for m in sel.models or () if m.id == self.model_id), None) or load_model(
                self.model_id, sel.profile_dirs)
        else:
            model = load_model(DEFAULT_MODEL, sel.profile_dirs)  # unused by synthetic plans; keeps the spec whole
        gpu = sel.gpu or load_gpu(tpl.gpu or DEFAULT_GPU, sel.profile_dirs)
        sc = tpl.build(model, gpu, self.transport, seed=sel.seed, slo_overrides=sel.slo,
                       transport_params=sel.transport_params)
        # HBM fit: TP the suite gives is binding for the models and GPU the suite names; where the
        # suite leaves it out, or --kv-model/--kv-gpu swapped what it was written for, it is a
        # floor raised to the smallest TP that fits (noted in the report). Still no fit: an error.
        overridden = bool(sel.models) or sel.gpu is not None
        free = [side for side in ("prefill", "decode") if overridden or "tp" not in tpl.fields.get(side, {})]
        sc, notes = fit_to_hbm(sc, free, f"{tpl.source}: {tpl.where}")
        if notes:
            sc = sc.replace(notes=tuple(notes))
        check_hbm_fit(sc, f"{tpl.source}: {tpl.where}")
        changes: dict[str, Any] = {}
        if sel.pool_mib:
            changes["pool_bytes"] = int(sel.pool_mib * 1024 * 1024)
        if sel.pacing:
            changes["pacing"] = sel.pacing
        return sc.replace(**changes) if changes else sc

    def runtest(self) -> None:
        try:
            scenario = self._scenario()
        except KvFabricError as exc:
            pytest.fail(f"kvfabric: {exc}", pytrace=False)
        cid = case_mod.case_id(scenario.id, self.model_id or "synthetic", self.transport)
        # the suite's timeout_s (defaults < scenario), unless --kv-timeout overrides it
        _run_and_judge(self, self.config, scenario, cid, check=True, timeout_s=self.template.fields.get("timeout_s"))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        if isinstance(excinfo.value, KvFabricError):
            return f"kvfabric: {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{self.template.suite}::{self.name}"


# ---------------------------------------------------------------- default suites

KV_FIXTURES = frozenset({"kv_run", "kv_scenario", "kv_pair", "kv_transport", "kv_model"})


def is_kv_case(item: pytest.Item) -> bool:
    """A KV-transfer case: a suite scenario, or a test that asks for one of our fixtures."""
    return isinstance(item, SuiteItem) or bool(KV_FIXTURES & set(getattr(item, "fixturenames", ()) or ()))


class DefaultSuites:
    """`pytest --kv-transport=tcp --kv-model=deepseek-v3` where nothing KV-related was collected
    (an empty directory, a CI repository, this project's own unit tests): add the default suites
    (--kv-default-suites / ini kv_default_suites, default smoke) to what runs, never removing
    the user's own tests. --kv-suite names suites explicitly and turns this off."""

    @pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, which then applies to these too
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        sel = _selection(config)
        if not sel.kv_asked or sel.suites or any(is_kv_case(i) for i in items):
            return
        from .harness.suites import find_suite

        for name in sel.default_suites:
            path = find_suite(name, sel.profile_dirs).resolve()
            try:  # a node id like any collected file's; the absolute path for the shipped copy
                nodeid = path.relative_to(config.rootpath).as_posix()
            except ValueError:
                nodeid = path.as_posix()
            node = SuiteFile.from_parent(session, path=path, nodeid=nodeid)
            found = list(node.collect())
            # Tell the reporters, so "collected N items" and the summary count these too.
            config.hook.pytest_collectreport(report=pytest.CollectReport(node.nodeid, "passed", None, found))
            items.extend(found)
        flags = " and ".join(f for f, given in (("--kv-transport", config.getoption("kv_transport")),
                                                ("--kv-model", config.getoption("kv_model"))) if given)
        config.stash[DEFAULT_SUITES_NOTE] = (
            f"kvfabric: running the default suites {', '.join(sel.default_suites)}: {flags or 'kv_transport/kv_model (ini)'} "
            "given and no KV-transfer case collected (choose with --kv-suite NAMES or ini kv_default_suites)")

    def pytest_report_collectionfinish(self, config: pytest.Config) -> str | None:
        return config.stash.get(DEFAULT_SUITES_NOTE, None)


# ---------------------------------------------------------------- results, summary, JSON


class ResultCollector:
    """Gathers every case's record from test reports (on the xdist controller, from all workers)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = next((json.loads(v) for k, v in report.user_properties if k == PROP), None)
        if record is None:
            return
        results = self.config.stash[RESULTS]
        entry = results.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed"})
        entry.update({k: v for k, v in record.items() if v is not None or k not in entry})
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            if not entry.get("reason"):
                entry["reason"] = _first_line(report.longreprtext)
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
            entry["reason"] = entry.get("reason") or _skip_reason(report)


def _first_line(text: str) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    return str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _session_report(config: pytest.Config, exitstatus: int | None) -> dict[str, Any]:
    cached = config.stash.get(SESSION_REPORT, None)
    if cached is None:
        cached = config.stash[SESSION_REPORT] = _build_session_report(config, exitstatus)
    return cached


def _build_session_report(config: pytest.Config, exitstatus: int | None) -> dict[str, Any]:
    from .report import fingerprint, jsonreport

    sel = _selection(config)
    results = list(config.stash[RESULTS].values())
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _is_worker(config):
        return
    sel = _selection(config)
    html_path = _getter(config)("kv_html")
    if not (sel.json_path or sel.save_baseline or html_path):
        return
    from .report import jsonreport

    report = _session_report(config, exitstatus)
    for path in filter(None, (sel.json_path, sel.save_baseline)):
        jsonreport.write(path, report)
    if html_path:
        _write_html(config, html_path, report, sel.baseline_path)


def _write_html(config: pytest.Config, path: str, report: dict[str, Any], baseline_path: str | None) -> None:
    """The HTML report of this session (and its baseline, when one was given)."""
    from .report import htmlfile

    try:
        from .harness.options import baseline_list

        base = [htmlfile.load(p) for p in baseline_list(baseline_path)]
        htmlfile.write(path, [htmlfile.from_session(report)], base)
    except (OSError, KvFabricError) as exc:
        config.stash[HTML_ERROR] = f"kvfabric: HTML report not written to {path}: {exc}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _is_worker(config):
        return
    results = list(config.stash.get(RESULTS, {}).values())
    if not results:
        return
    from .report import table

    for r in results:
        r.setdefault("case", r["nodeid"])
    terminalreporter.write_sep("=", "kvfabric KV-transfer summary")
    terminalreporter.write_line(table.render(results))
    from .lab.env import virtualized, TCG_NOTE

    if virtualized() == "tcg":
        terminalreporter.write_line(f"kvfabric: {TCG_NOTE}")
    sel = _selection(config)
    baseline = config.stash.get(BASELINE, {})
    if sel.baseline_path:
        _gate_summary(terminalreporter, config, exitstatus, results)
        ran = {r["case"] for r in results if r.get("metrics")}
        only_old = sorted(set(baseline) - ran)
        only_new = sorted(ran - set(baseline))
        if only_old:
            terminalreporter.write_line(f"kvfabric: {len(only_old)} baseline case(s) not run: {', '.join(only_old)}")
        if only_new:
            terminalreporter.write_line(f"kvfabric: {len(only_new)} case(s) not in the baseline: {', '.join(only_new)}")
    for path in filter(None, (sel.json_path, sel.save_baseline)):
        terminalreporter.write_line(f"kvfabric: JSON report written to {path}")
    html_path = _getter(config)("kv_html")
    if html_path:
        terminalreporter.write_line(config.stash.get(HTML_ERROR, None) or f"kvfabric: HTML report written to {html_path}")


def _gate_summary(terminalreporter, config: pytest.Config, exitstatus: int, results: list[dict[str, Any]]) -> None:
    """Above the verdicts, what changed in the environment; then every case's metric verdicts."""
    from .report import baseline, fpdiff

    terminalreporter.write_sep("-", "kvfabric baseline gate")
    olds, new = config.stash[BASELINE_REPORT], _session_report(config, exitstatus)
    terminalreporter.write_line(fpdiff.render(fpdiff.diff(olds[-1], new), tcg=fpdiff.ran_under_tcg(*olds, new)))
    terminalreporter.write_line(baseline.sessions_line(olds))
    changes = [baseline.Change.from_dict(c) for r in sorted(results, key=lambda r: r["case"])
               for c in r.get("gate") or ()]
    if changes:
        cmp = baseline.Comparison(tuple(changes), (), ())
        terminalreporter.write_line(baseline.render_changes(changes))
        terminalreporter.write_line(f"kvfabric: {baseline.summary_line(cmp)}; undecided "
                                    + ("fails (--kv-gate-undecided=fail)" if _selection(config).gate_undecided == "fail"
                                       else "passes (--kv-gate-undecided=pass)"))
