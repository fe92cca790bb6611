"""Emulated HBM: one endpoint side's KV pool (all its ranks), in memory its transport chose."""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from ..transports.base import Transport


class Pool:
    """A region from `Transport.allocate` plus a uint8 numpy view of it (no copy).

    `register_ns` is how long the allocation took (part of the cold-start figure)."""

    def __init__(self, transport: type[Transport], nbytes: int, options: Mapping[str, Any]) -> None:
        self.transport = transport
        self.nbytes = int(nbytes)
        t0 = time.monotonic_ns()
        self.region: memoryview = transport.allocate(self.nbytes, options)
        if self.region.format != "B" or self.region.ndim != 1:
            self.region = self.region.cast("B")
        self.array: np.ndarray = np.frombuffer(self.region, dtype=np.uint8)
        # Fault every page in now: emulated HBM is resident, and first-touch page faults
        # inside the receive path would be charged to the transport.
        self.array[:] = 0
        self.register_ns = time.monotonic_ns() - t0

    def release(self) -> None:
        # The numpy view exports the buffer: drop it first so release can close the mapping.
        self.array = np.zeros(0, np.uint8)
        region, self.region = self.region, memoryview(b"")
        self.transport.release(region)


def transport_options(scenario: Any, token: str) -> dict[str, Any]:
    """The options an endpoint hands its transport: the scenario's parameters less the private
    ones (a leading "_": fault injection and test hooks, read by the endpoints themselves), plus
    the run's token."""
    opts = {k: v for k, v in dict(scenario.transport_params).items() if not str(k).startswith("_")}
    opts["token"] = token
    return opts
