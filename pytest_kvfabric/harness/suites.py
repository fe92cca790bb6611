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
from ..core.profiles import GpuProfile, ModelProfile
from ..core.scenario import Arrival, Deployment, Distribution, Scenario, Synthetic, Workload

DEFAULT_GPU = "h100"
DEFAULT_MODELS = ("llama3.1-8b",)
DEFAULT_POOL_MIB = 64


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

    def build(
        self,
        model: ModelProfile,
        gpu: GpuProfile,
        transport: str,
        *,
        seed: int | None = None,
        slo_overrides: Mapping[str, Any] | None = None,
        transport_params: Mapping[str, Any] | None = None,
    ) -> Scenario:
        f = self.fields
        slo = dict(f.get("slo", {}))
        slo.update(slo_overrides or {})
        params = dict(f.get("transport_params", {}))
        params.update(transport_params or {})
        return Scenario(
            id=f"{self.suite}/{self.id}",
            model=model,
            gpu=gpu,
            prefill=Deployment(**f.get("prefill", {})),
            decode=Deployment(**f.get("decode", {})),
            workload=build_workload(f.get("workload", {}), self.source, f"{self.where}.workload"),
            seed=int(seed if seed is not None else f.get("seed", 0)),
            pacing=f.get("pacing", "emulated"),
            pool_bytes=int(float(f.get("pool_mib", DEFAULT_POOL_MIB)) * 1024 * 1024),
            transport=transport,
            transport_params=params,
            slo=slo,
            synthetic=Synthetic(**f["synthetic"]) if "synthetic" in f else None,
        )


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: str
    scenarios: tuple[ScenarioTemplate, ...] = field(default_factory=tuple)


def _distribution(value: Any) -> Distribution:
    if isinstance(value, int):
        return Distribution.fixed(value)
    return Distribution(**value)


def build_workload(spec: Mapping[str, Any], source: str, where: str) -> Workload:
    """A workload from suite fields, on top of an application preset when one is named."""
    if "preset" in spec:
        from ..emulator.workload import preset  # emulator is pure; imported late to keep load cheap

        base = preset(spec["preset"])
    else:
        base = Workload()
    changes: dict[str, Any] = {}
    if "isl" in spec:
        changes["isl"] = _distribution(spec["isl"])
    if "osl" in spec:
        changes["osl"] = _distribution(spec["osl"])
    if "arrival" in spec:
        arrival = Arrival(**spec["arrival"])
        if arrival.kind == "poisson" and not arrival.rate_per_s:
            raise ProfileError(source, f"{where}.arrival.rate_per_s", "required for poisson arrivals")
        changes["arrival"] = arrival
    for key in ("requests", "duration_s"):
        if key in spec:
            changes[key] = spec[key]
    import dataclasses

    return dataclasses.replace(base, **changes)


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
