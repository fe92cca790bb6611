"""Scenario suites: YAML files (suites/*.yaml) validated against schemas/suite.schema.json.

A suite holds scenario templates; a template becomes a Scenario once a model, GPU and
transport are chosen. Errors name the file, the YAML path (``scenarios[2].slo.x``) and why.
No pytest here: the plugin turns templates into test items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ProfileError
from ..core.profile_schema import parse_yaml_text, read_yaml, validate
from .resolve import build_workload
from ..core.profiles import DEFAULT_GPU, DEFAULT_MODEL, GpuProfile, ModelProfile
from ..core.scenario import DEFAULT_POOL_MIB, Scenario

DEFAULT_MODELS = (DEFAULT_MODEL,)
__all__ = ["DEFAULT_GPU", "DEFAULT_MODELS", "DEFAULT_POOL_MIB", "ScenarioTemplate", "Suite", "build_workload",
           "find_suite", "list_suites", "load_suite", "parse_suite"]


def shipped_suite_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "suites"


@dataclass(frozen=True)
class ScenarioTemplate:
    suite: str
    id: str
    source: str
    index: int
    fields: Mapping[str, Any]  # defaults merged with the scenario's own fields

    @property
    def where(self) -> str:
        return f"scenarios[{self.index}]"

    @property
    def synthetic(self) -> bool:
        return "synthetic" in self.fields

    @property
    def models(self) -> tuple[str, ...] | None:
        m = self.fields.get("models")
        return tuple(m) if m else None

    @property
    def transports(self) -> tuple[str, ...] | None:
        t = self.fields.get("transports")
        return tuple(t) if t else None

    @property
    def gpu(self) -> str | None:
        return self.fields.get("gpu")

    @property
    def slow(self) -> bool:
        return "slow" in self.fields.get("marks", ())

    def build(self, model: ModelProfile, gpu: GpuProfile, transport: str, *, overrides: Any = None,
              free_sides: Sequence[str] = (), check_fit: bool = False) -> Scenario:
        """This template's Scenario through the one resolution (harness/resolve.py): its merged
        fields are layers 2-3, `overrides` (resolve.Overrides) layer 6."""
        from .resolve import resolve

        return resolve(self.fields, id=f"{self.suite}/{self.id}", model=model, gpu=gpu, transport=transport,
                       overrides=overrides, free_sides=free_sides, check_fit=check_fit,
                       source=self.source, where=self.where)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: str
    scenarios: tuple[ScenarioTemplate, ...] = field(default_factory=tuple)


def _check_distributions(fields: Mapping[str, Any], source: str, where: str) -> None:
    wl = fields.get("workload", {})
    for key in ("isl", "osl"):
        d = wl.get(key)
        if not isinstance(d, dict):
            continue
        needs = {"fixed": ("value",), "uniform": ("low", "high"), "normal": ("mean", "std"),
                 "lognormal": ("mean", "std")}[d["kind"]]
        for n in needs:
            if n not in d:
                raise ProfileError(source, f"{where}.workload.{key}.{n}", f"required for kind {d['kind']}")
        if "low" in d and "high" in d and d["low"] > d["high"]:
            raise ProfileError(source, f"{where}.workload.{key}", f"low {d['low']} > high {d['high']}")


def _check_store(fields: Mapping[str, Any], source: str, where: str) -> None:
    """A bad `store:` block fails the suite's load, naming the field (not each case at run time)."""
    if fields.get("store") is None:
        return
    from ..core.store_spec import parse_store

    if "synthetic" in fields:
        raise ProfileError(source, f"{where}.store", "a store scenario needs a model workload, not synthetic transfers")
    if fields.get("rails", 1) != 1 or fields.get("topology"):
        raise ProfileError(source, f"{where}.store", "a store scenario runs one prefill-decode pair: "
                           "not with rails or topology")
    parse_store(fields["store"], source, f"{where}.store")


def _check_transports(fields: Mapping[str, Any], source: str, where: str) -> None:
    """A misspelt transport would collect nothing (exit 5, no error): refuse it, and check the
    scenario's transport parameters against the transports it names."""
    from ..transports.registry import available_names, check_params

    names = list(fields.get("transports") or ())
    known = available_names()
    for j, name in enumerate(names):
        if name not in known:
            raise ProfileError(source, f"{where}.transports[{j}]", f"unknown transport {name!r}; valid: {', '.join(known)}")
    if names and fields.get("transport_params"):
        why = check_params(names, fields["transport_params"])
        if why:
            raise ProfileError(source, f"{where}.transport_params", why)


def parse_suite(text: str, source: str) -> Suite:
    data = parse_yaml_text(text, source)
    validate(data, "suite", source)
    return _suite(data, source)


def _suite(data: Mapping[str, Any], source: str) -> Suite:
    defaults = data.get("defaults", {})
    seen: dict[str, int] = {}
    templates = []
    for i, sc in enumerate(data["scenarios"]):
        if sc["id"] in seen:
            raise ProfileError(source, f"scenarios[{i}].id",
                               f"duplicate id {sc['id']!r} (also scenarios[{seen[sc['id']]}])")
        seen[sc["id"]] = i
        merged = {**defaults, **sc}
        merged["slo"] = {**defaults.get("slo", {}), **sc.get("slo", {})}
        if "synthetic" in merged and "workload" in sc:
            raise ProfileError(source, f"scenarios[{i}]", "a scenario has either synthetic or workload, not both")
        _check_distributions(merged, source, f"scenarios[{i}]")
        _check_store(merged, source, f"scenarios[{i}]")
        _check_transports(merged, source, f"scenarios[{i}]")
        templates.append(ScenarioTemplate(data["suite"], sc["id"], source, i, merged))
    return Suite(data["suite"], data.get("description", ""), source, tuple(templates))


def load_suite(path: str | Path) -> Suite:
    data = read_yaml(path)
    validate(data, "suite", str(path))
    return _suite(data, str(path))


def find_suite(name: str, search_dirs: Sequence[str | Path] = ()) -> Path:
    """A suite by name (`smoke`) or path; user dirs first, then the shipped suites."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    for d in [*map(Path, search_dirs), shipped_suite_dir()]:
        for ext in (".yaml", ".yml"):
            if (d / f"{name}{ext}").is_file():
                return d / f"{name}{ext}"
    from ..errors import UnknownIdError

    raise UnknownIdError("suite", name, list_suites(search_dirs))


def list_suites(search_dirs: Sequence[str | Path] = ()) -> list[str]:
    names = set()
    for d in [*map(Path, search_dirs), shipped_suite_dir()]:
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.y*ml"))
    return sorted(names)
