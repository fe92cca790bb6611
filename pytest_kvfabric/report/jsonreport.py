"""The session JSON report: every case with its metrics and verdicts, plus the environment."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ProfileError
from ..core.limits import MAX_REPORT_BYTES
from ..core.profile_schema import parse_json_text, read_text

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "report.schema.json"


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def validate(report: Mapping[str, Any], source: str = "<report>") -> None:
    err = next(iter(sorted(_validator().iter_errors(report), key=lambda e: list(map(str, e.absolute_path)))), None)
    if err is not None:
        path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ProfileError(source, path, err.message)


def build(session: Mapping[str, Any], environment: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "format": "pytest-kvfabric-report",
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "session": dict(session),
        "environment": dict(environment),
        "results": sorted((dict(r) for r in results), key=lambda r: r["nodeid"]),
    }


def write(path: str | Path, report: Mapping[str, Any]) -> None:
    """Validate, then write atomically (a reader never sees half a report)."""
    validate(report)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=2, sort_keys=False, default=_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    data = parse_json_text(read_text(p, "JSON report", MAX_REPORT_BYTES), str(p))
    validate(data, str(p))
    return data


def _default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
