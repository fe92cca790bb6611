"""How much a transport carries on a pair: a short unpaced run of large verified writes through
the ordinary runner and agents (a `kvfabric sweep` point), remembered per pair, transport and
parameters for the rest of the process."""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..errors import KvFabricError
from ..fabric.base import HostPair

PROBE_SIZE = 4 << 20  # large writes: near the best of a sweep on every transport measured here
PROBE_BATCH = 4
PROBE_DEPTH = 4
PROBE_SECONDS = 0.3
_CARRIED: dict[str, tuple[float | None, str]] = {}


def carried_gbps(pair: HostPair, transport: str, params: Mapping[str, Any]) -> tuple[float | None, str]:
    """(Gb/s, how it was measured); (None, why) when the probe itself failed."""
    key = json.dumps([pair.name, transport, params], sort_keys=True, default=str)
    if key not in _CARRIED:
        from . import sweepplan
        from ..core.profiles import DEFAULT_GPU, DEFAULT_MODEL, load_gpu, load_model
        from .runner import run_scenario
        from ..core.scenario import Scenario

        base = Scenario(id="capacity", model=load_model(DEFAULT_MODEL), gpu=load_gpu(DEFAULT_GPU))
        sc = sweepplan.point_scenario(base, transport, PROBE_SIZE, PROBE_BATCH, PROBE_DEPTH, PROBE_SECONDS, params)
        how = f"{PROBE_SECONDS:g} s unpaced probe of {transport} with {PROBE_SIZE >> 20} MiB writes"
        try:
            r = run_scenario(sc, pair, timeout_s=sweepplan.timeout_s(PROBE_SIZE, PROBE_BATCH, PROBE_SECONDS))
            _CARRIED[key] = (r.throughput_gbps, how)
        except KvFabricError as exc:
            _CARRIED[key] = (None, f"probe failed: {str(exc).splitlines()[0][:200]}")
    return _CARRIED[key]
