"""Output paths are checked before anything runs, so a bad one costs milliseconds, not a run.

One function for every flag that names a file to write (`--kv-json`, `--kv-save-baseline`,
`kvfabric run --json`, `kvfabric profile import -o`): the directory must exist and be writable,
and the path must not be a directory (unless the caller takes a directory).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ProfileError


def check_output_path(path: str, flag: str, source: str = "<options>", dir_ok: bool = False) -> None:
    """Raise ProfileError(source, flag, reason) when `path` cannot be written."""
    if not str(path).strip():
        raise ProfileError(source, flag, "empty path")
    p = Path(path)
    if p.is_dir():
        if dir_ok:
            if not os.access(p, os.W_OK | os.X_OK):
                raise ProfileError(source, flag, f"{path}: directory is not writable")
            return
        raise ProfileError(source, flag, f"{path} is a directory, expected a file path")
    if str(path).endswith(("/", os.sep)):
        raise ProfileError(source, flag, f"{path}: directory does not exist")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise ProfileError(source, flag, f"{path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ProfileError(source, flag, f"{path}: {parent} is not a directory")
    if p.exists() and not os.access(p, os.W_OK):
        raise ProfileError(source, flag, f"{path}: file is not writable")
    if not p.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ProfileError(source, flag, f"{path}: directory {parent} is not writable")
