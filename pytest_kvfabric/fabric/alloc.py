"""Which host pair an xdist worker uses. Pure: callers pass the environment and the inventory.

- worker id: PYTEST_XDIST_WORKER "gw3" -> 3; the controller or a run without xdist -> 0.
- netns: every worker builds its own pair; index = worker number, so names
  (kvf-<tag>-<index>p/d) and addresses (10.203.<index>.0/24) differ between workers.
- hosts: worker N takes pair N of the inventory; more workers than pairs is a usage error.
  `-n auto` starts one worker per pair through pairs_for_auto() (the plugin wires it into
  pytest_xdist_auto_num_workers). We never rely on `--dist loadgroup` (ignored by
  pytest 9 + xdist 3.8): a pair belongs to exactly one worker process for the whole session.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import KvFabricError

_WORKER_RE = re.compile(r"gw(\d+)")
MAX_NETNS_INDEX = 255  # third octet of 10.203.<index>.0/24


class FabricUnavailable(KvFabricError):
    """This process cannot have a pair of this fabric at all (no root, no netns support): a skip reason."""


class FabricUsageError(KvFabricError):
    """The fabric options do not fit this run (the plugin shows it as a usage error)."""


def worker_index(env: Mapping[str, str]) -> int:
    """0-based xdist worker number from PYTEST_XDIST_WORKER; 0 without xdist."""
    wid = env.get("PYTEST_XDIST_WORKER")
    if not wid:
        return 0
    m = _WORKER_RE.fullmatch(wid)
    if not m:
        raise FabricUsageError(f"PYTEST_XDIST_WORKER={wid!r} is not of the form gwN")
    return int(m.group(1))


def worker_count(env: Mapping[str, str]) -> int:
    """Number of xdist workers (PYTEST_XDIST_WORKER_COUNT); 1 without xdist."""
    raw = env.get("PYTEST_XDIST_WORKER_COUNT")
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        raise FabricUsageError(f"PYTEST_XDIST_WORKER_COUNT={raw!r} is not an integer") from None
    return max(n, 1)


def netns_index(worker: int) -> int:
    if not 0 <= worker <= MAX_NETNS_INDEX:
        raise FabricUsageError(
            f"worker {worker}: the netns fabric supports at most {MAX_NETNS_INDEX + 1} workers")
    return worker


def check_worker_count(nworkers: int, npairs: int, source: str) -> None:
    if nworkers > npairs:
        raise FabricUsageError(f"{nworkers} workers but only {npairs} host pairs in {source}")


def inventory_index(worker: int, nworkers: int, npairs: int, source: str) -> int:
    """Pair N for worker N, after checking there are enough pairs for every worker."""
    check_worker_count(max(nworkers, worker + 1), npairs, source)
    return worker


def pairs_for_auto(inventory: object) -> int:
    """Workers `-n auto` should start: one per inventory pair (an Inventory or a sequence of pairs)."""
    pairs = getattr(inventory, "pairs", inventory)
    n = len(pairs)  # type: ignore[arg-type]
    if n < 1:
        raise FabricUsageError("the host inventory lists no pairs")
    return n
