"""Load a measurement table (the shipped validation table or a user's measurements file).

Both are YAML validated against schemas/validation.schema.json; a user's measurements file may
leave out `table` and `sources` (then every row is "fit"). Models: the table's inline `models`
first, then profile ids. Errors are ProfileError naming the file, the field and the reason."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ProfileError
from ..core.profile_schema import read_yaml, validate
from ..core.profiles import GpuProfile, ModelProfile, load_gpu, load_model
from .predict import Measurement

FLEET_AVERAGE = "fleet_average"


def shipped_table_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "validation" / "published.yaml"


@dataclass(frozen=True)
class Table:
    path: str
    rows: tuple[Measurement, ...]
    models: dict[str, ModelProfile] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)  # source id -> "fit" | "holdout"

    def split_of(self, m: Measurement) -> str:
        """The row's group: its source's split, except that a fleet average is its own group (never
        fitted: the per-step model does not represent hours of varying load)."""
        return FLEET_AVERAGE if m.kind == FLEET_AVERAGE else self.splits.get(m.source, "fit")

    def model(self, name: str, search_dirs: Sequence[str] = ()) -> ModelProfile:
        return self.models[name] if name in self.models else load_model(name, search_dirs)

    def gpu(self, name: str, search_dirs: Sequence[str] = ()) -> GpuProfile:
        return load_gpu(name, search_dirs)


USER_DEFAULTS = {"source": "user", "url": "file://measurements", "framework": "unstated",
                 "note": "user measurement, no note given"}


def load_table(path: str | Path, search_dirs: Sequence[str] = (), default_gpu: str | None = None) -> Table:
    """Read, validate and resolve a table; every row's model and GPU must load.

    default_gpu: a user's measurements file (no `table` key) may leave out gpu, source, url,
    framework and note; they default to this GPU and placeholders."""
    source = str(path)
    data = read_yaml(path)
    if default_gpu is not None and isinstance(data, dict) and "table" not in data and isinstance(data.get("rows"), list):
        fill = {**USER_DEFAULTS, "gpu": default_gpu}
        rows = [{**fill, **r} if isinstance(r, dict) else r for r in data["rows"]]
        data = {"table": Path(path).stem, "sources": {"user": {"title": "user measurements", "url": "file://measurements",
                                                               "split": "fit"}}, **data, "rows": rows}
    validate(data, "validation", source)
    models = {name: ModelProfile.from_dict(spec, f"{source}: models.{name}") for name, spec in data.get("models", {}).items()}
    splits = {sid: s["split"] for sid, s in data["sources"].items()}
    rows = []
    seen: set[str] = set()
    for i, raw in enumerate(data["rows"]):
        m = Measurement.from_dict(raw)
        if m.id in seen:
            raise ProfileError(source, f"rows[{i}].id", f"duplicate id {m.id!r}")
        seen.add(m.id)
        if data["sources"] and m.source not in splits:
            raise ProfileError(source, f"rows[{i}].source", f"unknown source {m.source!r}; valid: {', '.join(splits)}")
        if m.model not in models:
            load_model(m.model, search_dirs)
        load_gpu(m.gpu, search_dirs)
        if m.tp % m.ep:
            raise ProfileError(source, f"rows[{i}].ep", f"must divide tp ({m.tp}), got {m.ep}")
        rows.append(m)
    return Table(source, tuple(rows), models, splits)
