"""pytest hooks only: options, fixtures, parametrization, suite collection, reports.

The work is done by plain modules: options (validation), resolve (scenarios), suites (YAML),
case (run + verdicts), slo, report/*. The run's state is one harness.session.KvSession.
Under pytest-xdist each worker runs its cases on its own host pair and ships results back
inside the reports' user_properties; only the controller writes the JSON report. Plug-ins
extend a run through the hooks in hookspecs.py; the built-ins are trylast implementations here.
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
from .harness.reporting import PROP, KvReporter, merged as _merged
from .harness.session import KvSession

SESSION = pytest.StashKey[KvSession]()  # the run's state, one object


# ---------------------------------------------------------------- hooks for plug-ins (hookspecs.py)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(trylast=True)
def pytest_kvfabric_metrics(config: pytest.Config):
    """The built-in figures (measure/metrics.py)."""
    from .measure.metrics import BUILTIN

    return list(BUILTIN.metrics)


@pytest.hookimpl(trylast=True)
def pytest_kvfabric_fabrics(config: pytest.Config):
    """The shipped fabrics: loopback, a namespace pair, an inventory of host pairs."""
    from .harness.options import FABRICS

    return {name: case_mod.open_builtin for name in FABRICS}


@pytest.hookimpl(trylast=True)
def pytest_kvfabric_report_sections(config: pytest.Config, results, metrics):
    """The KV-transfer summary table, and the storage tier's when a case ran a store."""
    from .report import store_table, table

    sections = [("kvfabric KV-transfer summary", table.render(results, metrics))]
    store = store_table.render(results)
    if store:
        sections.append(("kvfabric storage tier (emulated TTFT: README, storage tier)", store))
    return sections


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


def _session(config: pytest.Config) -> KvSession:
    """The run's state, made on first use: the plug-ins' metrics and fabrics, then the options
    validated against them."""
    session = config.stash.get(SESSION, None)
    if session is None:
        from .measure.metrics import MetricSet

        try:
            metrics = MetricSet(_merged(config.hook.pytest_kvfabric_metrics(config=config)))
        except (ValueError, TypeError) as exc:
            raise pytest.UsageError(f"kvfabric: pytest_kvfabric_metrics: {exc}") from None
        fabrics: dict = {}
        for part in reversed(config.hook.pytest_kvfabric_fabrics(config=config)):
            fabrics.update(part or {})
        try:
            sel = resolve(_getter(config), metrics=metrics, fabrics=tuple(fabrics))
        except KvFabricError as exc:
            raise pytest.UsageError(f"kvfabric: {exc}") from None
        winput = getattr(config, "workerinput", None)  # xdist worker identity comes from config, not env
        worker, count = (winput["workerid"], int(winput["workercount"])) if winput else ("main", 1)
        pairs = case_mod.PairManager(sel, worker, count, fabrics[sel.fabric])
        session = config.stash[SESSION] = KvSession(sel, metrics, fabrics, pairs)
    return session


def _selection(config: pytest.Config) -> Selection:
    return _session(config).selection


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
    session = _session(config)
    sel = session.selection
    config.addinivalue_line("markers", "kv_slo(**thresholds): SLO thresholds for this test's KV-transfer cases "
                            f"(keys: {', '.join(slo_mod.valid_keys(session.metrics))})")
    if not hasattr(config, "workerinput"):
        for note in sel.warnings:  # options that do not apply to this run: said, not silently dropped
            config.issue_config_time_warning(pytest.PytestConfigWarning(note), stacklevel=2)
    if not hasattr(config, "workerinput") and not config.option.collectonly:
        for name in sel.transports:  # bad transport parameters are usage errors, not skips
            try:
                session.pairs.probe_reason(name, sel.transport_params)
            except KvFabricError as exc:
                raise pytest.UsageError(f"kvfabric: transport {name}: {exc}") from None
    if sel.fabric == "hosts" and not hasattr(config, "workerinput"):
        _check_inventory(config, sel)
    config.pluginmanager.register(KvReporter(config, session, _getter(config)("kv_html")), "kvfabric-results")
    config.pluginmanager.register(DefaultSuites(), "kvfabric-default-suites")
    if sel.baseline_path:
        from .report import baseline, jsonreport

        try:
            from .harness.options import baseline_list

            session.baseline_reports = [jsonreport.read(p) for p in baseline_list(sel.baseline_path)]
            session.baseline_samples = baseline.case_sessions(session.baseline_reports, session.metrics)
            session.baseline_transports = frozenset(
                r.get("transport") for rep in session.baseline_reports for r in rep["results"] if r.get("metrics"))
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
    session = config.stash.get(SESSION, None)
    if session is not None:
        session.pairs.close()


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

from .core.profiles import DEFAULT_GPU, DEFAULT_MODEL  # noqa: E402


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
                    slo_mod.coerce(key, value, f"{item.nodeid}: @pytest.mark.kv_slo", _session(config).metrics)
                except KvFabricError as exc:
                    raise pytest.UsageError(f"kvfabric: {exc}") from None


def _marker_slo(node: pytest.Item) -> dict[str, Any]:
    metrics = _session(node.config).metrics
    out: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("kv_slo"))):  # closest marker wins
        out.update({k: slo_mod.coerce(k, v, metrics=metrics) for k, v in mark.kwargs.items()})
    return out


@pytest.fixture(scope="session")
def kv_selection(pytestconfig: pytest.Config) -> Selection:
    """The validated kvfabric options of this session."""
    return _selection(pytestconfig)


@pytest.fixture(scope="session")
def kv_gpu(kv_selection: Selection):
    """The GPU profile (--kv-gpu, default h100)."""
    from .core.profiles import load_gpu

    return kv_selection.gpu or load_gpu(DEFAULT_GPU, kv_selection.profile_dirs)


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
    from .fabric.select import probes_here

    if not probes_here(kv_selection.fabric):
        return name  # probed on the pair's hosts when the case runs (kv_run)
    reason = _session(request.config).pairs.probe_reason(name, kv_selection.transport_params)
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
    if sel.baseline_path and transport in sel.named_transports and transport in _session(config).baseline_transports:
        return f"transport {transport} unavailable since the baseline ({sel.baseline_path} ran it): {reason}"
    if transport in sel.require_transports:
        return f"transport {transport} is required (--kv-require-transport) but unavailable: {reason}"
    return None


@pytest.fixture
def kv_scenario(request: pytest.FixtureRequest, kv_model, kv_gpu, kv_transport: str, kv_selection: Selection):
    """A small default scenario for this case (chat-sized request, emulated pacing); tests
    derive their own with `kv_scenario.replace(...)`. Resolved as harness/resolve.py documents:
    shipped defaults < this fixture's request < marker < command line."""
    from .harness import resolve

    sc = resolve.resolve(resolve.FIXTURE_FIELDS, id=f"{Path(str(request.node.path)).stem}::{request.node.originalname}",
                         model=kv_model, gpu=kv_gpu, transport=kv_transport,
                         overrides=resolve.Overrides.from_selection(kv_selection), marker_slo=_marker_slo(request.node),
                         # the fixture's deployments are defaults nobody chose: raise TP until the model fits (noted)
                         free_sides=("prefill", "decode"), check_fit=False)
    return sc


@pytest.fixture
def kv_pair(pytestconfig: pytest.Config):
    """This worker's host pair (loopback, its own namespace pair, or its inventory pair),
    opened once per worker and torn down at the end of the session."""
    try:
        return _session(pytestconfig).pairs.get()
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
        if scenario is not None:  # the test's own scenario (layer 5): the command line still wins
            from .harness import resolve

            sc = resolve.finish(sc, resolve.Overrides.from_selection(kv_selection), _marker_slo(request.node), own=True)
        # The case id follows the test's own parametrization id, so a baseline matches it.
        callspec = getattr(request.node, "callspec", None)
        cid = f"{sc.id}[{callspec.id}]" if callspec is not None else case_mod.case_id(
            sc.id, "synthetic" if sc.synthetic else sc.model.id, sc.transport)
        return _run_and_judge(request.node, pytestconfig, sc, cid, check)

    return run


# ---------------------------------------------------------------- running a case


def _remember(item: pytest.Item, record: dict[str, Any]) -> None:
    """Keep a case's record: as it is for this process's collector, as JSON text in the
    user_properties for the xdist controller and the JUnit XML (which only carry text)."""
    _session(item.config).local_records[item.nodeid] = record
    item.user_properties[:] = [p for p in item.user_properties if p[0] != PROP]
    item.user_properties.append((PROP, json.dumps(record, default=str)))


def _run_and_judge(item: pytest.Item, config: pytest.Config, scenario, cid: str, check: bool,
                   timeout_s: float | None = None):
    session = _session(config)
    sel = session.selection
    from .report.fpdiff import ran_under_tcg

    outcome = case_mod.run_case(scenario, session.pairs, sel, session.baseline_samples, cid,
                                timeout_s=timeout_s, metric_set=session.metrics,
                                baseline_tcg=ran_under_tcg(*session.baseline_reports))
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
        from .core.profiles import load_gpu, load_model
        from .harness import resolve

        sel = _selection(self.config)
        tpl = self.template
        model_id = self.model_id or DEFAULT_MODEL  # synthetic plans do not use it; it keeps the spec whole
        model = next((m for m in sel.models or () if m.id == model_id), None) or load_model(model_id, sel.profile_dirs)
        gpu = sel.gpu or load_gpu(tpl.gpu or DEFAULT_GPU, sel.profile_dirs)
        # HBM fit: TP the suite gives is binding for the models and GPU the suite names; where the
        # suite leaves it out, or --kv-model/--kv-gpu swapped what it was written for, it is a
        # floor raised to the smallest TP that fits (noted in the report). Still no fit: an error.
        overridden = bool(sel.models) or sel.gpu is not None
        free = [side for side in ("prefill", "decode") if overridden or "tp" not in tpl.fields.get(side, {})]
        return tpl.build(model, gpu, self.transport, overrides=resolve.Overrides.from_selection(sel),
                         free_sides=free, check_fit=True)

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
        _session(config).default_suites_note = (
            f"kvfabric: running the default suites {', '.join(sel.default_suites)}: {flags or 'kv_transport/kv_model (ini)'} "
            "given and no KV-transfer case collected (choose with --kv-suite NAMES or ini kv_default_suites)")

    def pytest_report_collectionfinish(self, config: pytest.Config) -> str | None:
        return _session(config).default_suites_note
