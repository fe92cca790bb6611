"""Find transports by name, importing them lazily; third parties register via entry points.

A third-party package declares, in its pyproject.toml:

    [project.entry-points."pytest_kvfabric.transports"]
    mytransport = "my_pkg.module:MyTransport"
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Mapping, Sequence

from ..errors import UnknownIdError
from .base import Capability, Transport

ENTRY_POINT_GROUP = "pytest_kvfabric.transports"

# Built-ins as "module:Class" so importing the registry imports no transport (pyverbs,
# liburing and netlink stay untouched until a transport is actually asked for).
BUILTIN: dict[str, str] = {
    "tcp": "pytest_kvfabric.transports.tcp:TcpTransport",
    "zerocopy": "pytest_kvfabric.transports.zerocopy:ZeroCopyTransport",
    "iouring": "pytest_kvfabric.transports.iouring:IoUringTransport",
    "devmem": "pytest_kvfabric.transports.devmem.transport:DevmemTransport",
    "rdma": "pytest_kvfabric.transports.rdma.transport:RdmaTransport",
}


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_names() -> list[str]:
    """Every transport name we know of (built-in first, then plug-ins), available here or not."""
    names = list(BUILTIN)
    names += sorted(n for n in _entry_points() if n not in BUILTIN)
    return names


def _load(target: str) -> type[Transport]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_transport(name: str) -> type[Transport]:
    if name in BUILTIN:
        return _load(BUILTIN[name])
    eps = _entry_points()
    if name in eps:
        return eps[name].load()
    raise UnknownIdError("transport", name, available_names())


def probe(name: str, options: Mapping[str, Any] | None = None) -> Capability:
    """Probe a transport; an import failure of the transport module itself is a missing capability."""
    try:
        cls = get_transport(name)
    except ImportError as exc:
        return Capability.missing(f"transport {name!r} could not be imported: {exc}")
    return cls.probe(options or {})


def check_params(names: Sequence[str], params: Mapping[str, Any]) -> str | None:
    """Why `params` are not acceptable to the transports `names` (unknown key, bad value), or None.
    Transports that fail to import are left out (their probe will say why)."""
    from .params import check

    declared: dict[str, Any] = {}
    for name in names:
        try:
            declared[name] = getattr(get_transport(name), "params", None)
        except ImportError:
            declared[name] = None
    return check(declared, params) if declared else None
