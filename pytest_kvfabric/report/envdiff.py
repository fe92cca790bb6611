"""What changed in the environment between a baseline report and this run (pure).

The gating use case compares two kernels (or firmwares); the comparison must say so, and
must say when either side ran under emulation, where timings mean nothing."""
from __future__ import annotations

from typing import Any, Mapping

# Fingerprint keys worth a line when they differ, in the order shown.
KEYS = ("kernel", "virtualized", "cpu_model", "cpus", "python")


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """One line per changed key ('kernel: 6.1.0-50-amd64 -> 6.12.118+deb12-amd64')."""
    old, new = old or {}, new or {}
    out = []
    for key in KEYS:
        a, b = old.get(key), new.get(key)
        if a != b:
            out.append(f"{key}: {a if a is not None else '-'} -> {b if b is not None else '-'}")
    if "tcg" in (old.get("virtualized"), new.get("virtualized")):
        out.append("a side ran under TCG (software emulation): its timings are not meaningful")
    return out
