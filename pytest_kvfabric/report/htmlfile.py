"""Reading recorded JSON and writing the HTML report (the I/O around report/html.py),
shared by `kvfabric report` and pytest's --kv-html."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ProfileError
from . import html, jsonreport
from .runs import Run, normalize


def load(path: str | Path, label: str | None = None) -> Run:
    """One recorded JSON file as a Run (labelled by its file name unless told); a one-line
    ProfileError naming the file otherwise."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as exc:
        raise ProfileError(str(p), "", f"cannot read report: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(str(p), f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from None
    run = normalize(data, label or p.name, str(p))
    if run.kind == "session":
        jsonreport.validate(data, str(p))
    return run


def labels(paths: Sequence[str | Path]) -> list[str]:
    """File names, or the paths as given where two inputs share a file name."""
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]


def write(out: str | Path, runs: Sequence[Run], baseline: Sequence[Run] = (), png_dir: str | Path | None = None,
          title: str = "pytest-kvfabric report") -> list[html.Figure]:
    """Render and write the page atomically; with png_dir also every figure as a PNG file."""
    page, figures = html.build(runs, baseline, title)
    _atomic(Path(out), page.encode())
    if png_dir is not None:
        d = Path(png_dir)
        d.mkdir(parents=True, exist_ok=True)
        for f in figures:
            _atomic(d / f"{f.name}.png", f.png)
    return figures


def from_session(report: Mapping[str, Any], label: str = "this session") -> Run:
    return normalize(report, label, label)


def _atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # a report is for reading (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
