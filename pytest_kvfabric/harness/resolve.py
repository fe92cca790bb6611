"""One scenario resolution: every layer that may set a Scenario field, in one documented order.

Precedence, lowest first (a later layer wins for every field it sets):

  1. shipped defaults      SHIPPED below, and Scenario's own field defaults (one pool default:
                           core.scenario.DEFAULT_POOL_MIB)
  2. suite defaults        a suite file's `defaults:` block
  3. scenario              a suite scenario's own fields; `kvfabric run/plan`'s scenario flags;
                           the kv_scenario fixture's chat-sized request
  4. marker                @pytest.mark.kv_slo on the test (closest marker wins)
  5. the test's own        a Scenario the test built itself and passed to kv_run(sc)
  6. CLI options           --kv-slo, --kv-pool-mib, --kv-pacing, --kv-seed, --kv-transport-param,
                           --kv-rails

Layers 2 and 3 are field mappings in suite-YAML vocabulary (`pool_mib`, `pacing`, `seed`,
`slo`, `transport_params`, `prefill`, `decode`, `workload`, `synthetic`, `rails`, `topology`); `build` turns them
into a Scenario. Layers 4 and 6 are applied by `finish`, which also takes a test's own
Scenario (layer 5). The plugin's fixtures, its suite items and the CLI all come through here.
No pytest here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..core.profiles import GpuProfile, ModelProfile
from ..errors import ProfileError
from ..core.scenario import (DEFAULT_POOL_MIB, MIB, Arrival, Deployment, Distribution, Scenario, Synthetic, Topology,
                             Workload)

# Layer 1: what a scenario gets when nothing else says (the suites' schema documents the same).
SHIPPED: Mapping[str, Any] = {"seed": 0, "pacing": "emulated", "pool_mib": DEFAULT_POOL_MIB}
# Layer 3 of the kv_scenario fixture: a small chat-sized request, two of them.
FIXTURE_FIELDS: Mapping[str, Any] = {"workload": {"isl": 512, "osl": 128, "requests": 2}}
_DEEP = ("slo", "transport_params")  # merged key by key across layers; other fields replace whole


@dataclass(frozen=True)
class Overrides:
    """Layer 6: what the command line forces on every scenario of the run (None/empty: not given)."""

    slo: Mapping[str, Any] = field(default_factory=dict)
    pool_mib: float | None = None
    pacing: str | None = None
    seed: int | None = None
    transport_params: Mapping[str, Any] = field(default_factory=dict)
    rails: int | None = None  # --kv-rails

    @classmethod
    def from_selection(cls, sel: Any) -> "Overrides":
        """From the plugin's validated options (harness.options.Selection)."""
        return cls(dict(sel.slo), sel.pool_mib, sel.pacing, sel.seed, dict(sel.transport_params),
                   getattr(sel, "rails", None))


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Field layers, lowest first: later ones win; slo and transport_params merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key in _DEEP:
                out[key] = {**(out.get(key) or {}), **(value or {})}
            else:
                out[key] = value
    return out


def build(fields: Mapping[str, Any], *, id: str, model: ModelProfile, gpu: GpuProfile, transport: str,
          source: str = "<scenario>", where: str = "") -> Scenario:
    """A Scenario from merged field layers 1-3 (SHIPPED is put under them here)."""
    f = merge(SHIPPED, fields)
    return Scenario(
        id=id,
        model=model,
        gpu=gpu,
        prefill=Deployment(**f.get("prefill", {})),
        decode=Deployment(**f.get("decode", {})),
        workload=build_workload(f.get("workload", {}), source, f"{where}.workload" if where else "workload"),
        seed=int(f["seed"]),
        pacing=f["pacing"],
        pool_bytes=int(float(f["pool_mib"]) * MIB),
        transport=transport,
        transport_params=dict(f.get("transport_params", {})),
        slo=dict(f.get("slo", {})),
        synthetic=Synthetic(**f["synthetic"]) if f.get("synthetic") else None,
        rails=f.get("rails", 1),
        topology=build_topology(f.get("topology") or {}, f.get("rails", 1), source, where),
    )


def build_topology(spec: Mapping[str, Any], rails: Any, source: str, base: str = "") -> Topology:
    """A Topology from suite fields (`base`: the scenario's path); bad rails, instance counts or
    routing raise ProfileError naming the field."""
    from ..emulator.flows import check_layout

    where = f"{base}.topology" if base else "topology"

    if not isinstance(spec, Mapping):
        raise ProfileError(source, where, f"expected a mapping {{prefill, decode, routing}}, got {spec!r}")
    unknown = sorted(set(spec) - {"prefill", "decode", "routing"})
    if unknown:
        raise ProfileError(source, f"{where}.{unknown[0]}", "unknown key; valid: prefill, decode, routing")
    topo = Topology(**spec)
    why = check_layout(rails, topo.prefill, topo.decode, topo.routing, where,
                       f"{base}.rails" if base else "rails")
    if why:
        field_name, _, reason = why.partition(": ")
        raise ProfileError(source, field_name, reason)
    return topo


def finish(sc: Scenario, overrides: Overrides | None = None, marker_slo: Mapping[str, Any] | None = None,
           *, own: bool = False) -> Scenario:
    """Layers 4 to 6 over a built scenario. `own`: `sc` is the test's own Scenario (layer 5),
    whose SLOs beat the marker's; either way the command line (layer 6) wins."""
    over = overrides or Overrides()
    marker = dict(marker_slo or {})
    slo = {**marker, **sc.slo} if own else {**sc.slo, **marker}
    changes: dict[str, Any] = {"slo": {**slo, **over.slo}}
    if over.transport_params:
        changes["transport_params"] = {**sc.transport_params, **over.transport_params}
    if over.pool_mib is not None:
        changes["pool_bytes"] = int(float(over.pool_mib) * MIB)
    if over.pacing is not None:
        changes["pacing"] = over.pacing
    if over.seed is not None:
        changes["seed"] = int(over.seed)
    if over.rails is not None:
        changes["rails"] = int(over.rails)
    return sc.replace(**changes)


def fit(sc: Scenario, free_sides: Sequence[str], source: str, *, check: bool = True) -> Scenario:
    """HBM fit: TP is raised on the sides nobody chose (noted in the scenario); then, if `check`,
    a deployment that still does not fit one GPU is a ProfileError naming both figures."""
    from ..emulator.memory import check_hbm_fit, fit_to_hbm

    sc, notes = fit_to_hbm(sc, tuple(free_sides), source)
    if notes:
        sc = sc.replace(notes=(*sc.notes, *notes))
    if check:
        check_hbm_fit(sc, source)
    return sc


def resolve(fields: Mapping[str, Any], *, id: str, model: ModelProfile, gpu: GpuProfile, transport: str,
            overrides: Overrides | None = None, marker_slo: Mapping[str, Any] | None = None,
            free_sides: Sequence[str] = (), check_fit: bool = True, source: str = "<scenario>",
            where: str = "") -> Scenario:
    """The one resolution: layers 1-3 (`fields`), 4 (`marker_slo`) and 6 (`overrides`), then the
    HBM fit. A test's own Scenario (layer 5) goes through `finish(sc, ..., own=True)` instead."""
    sc = build(fields, id=id, model=model, gpu=gpu, transport=transport, source=source, where=where)
    sc = finish(sc, overrides, marker_slo)
    return fit(sc, free_sides, f"{source}: {where}" if where else source, check=check_fit)


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
