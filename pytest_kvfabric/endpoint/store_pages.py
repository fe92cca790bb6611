"""What every store object must hold (pure): the same positional pattern as prefill pages.

Object k (one page of one request's KV) is laid out like a transfer of the plan with
src_off 0: a 16-byte key header, the store's base pattern, an 8-byte key trailer
(endpoint/pattern.py). A page read from the wrong slot shows another object's header; a torn
or corrupted one a missing trailer or the first differing byte.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..emulator.storeplan import STORE_DOMAIN, StorePlan
from . import pattern


class ObjectPages:
    """Keys and base pattern of a StorePlan's objects; fill and check pages in a region."""

    def __init__(self, sp: StorePlan, seed: int) -> None:
        self.sp = sp
        self.nbytes = sp.obj_bytes
        self.keys = pattern.row_keys(int(seed) ^ STORE_DOMAIN, sp.objects)
        self.base = pattern.base_pattern(int(seed) ^ STORE_DOMAIN, sp.obj_bytes)

    def fill(self, dst: np.ndarray, off: int, obj: int) -> None:
        """Write object `obj`'s exact bytes at dst[off:off+nbytes]."""
        n = self.nbytes
        dst[off:off + n] = self.base
        pattern.stamp_at(dst, off, n, self.keys[obj])

    def check(self, dst: np.ndarray, off: int, obj: int) -> str | None:
        """Why dst[off:off+nbytes] is not object `obj`, or None; names the request and page."""
        row = {"dst_off": off, "src_off": 0, "nbytes": self.nbytes}
        why = pattern.check_page(dst, self.base, row, self.keys[obj])
        if why is None:
            return None
        o = self.sp.objects[obj]
        return f"store object {obj} (request {int(o['request'])} page {int(o['block'])}, {self.nbytes} B): {why}"


@dataclass(frozen=True)
class StoreSide:
    """What both ends of the store traffic (server and fetching client) set up alike from the
    agent's setup message: the scenario, its store plan, a transport that does one-sided READs,
    its options, and the stored pages' pattern."""

    scenario: Any
    plan: StorePlan
    transport: Any
    topts: dict[str, Any]
    pages: ObjectPages


def store_side(msg: dict[str, Any], cannot: str) -> StoreSide:
    """StoreSide from a setup message; TransportError "<transport> cannot <cannot>: <reason>" where
    the transport has no one-sided READ here."""
    from ..core.scenario import Scenario
    from ..emulator.plan import build_plan
    from ..emulator.storeplan import build_store_plan
    from ..errors import TransportError
    from ..transports.registry import get_transport
    from .pool import transport_options

    sc = Scenario.from_spec(msg["spec"])
    sp = build_store_plan(sc, build_plan(sc))
    transport = get_transport(sc.transport)
    cap = transport.probe_read(dict(sc.transport_params))
    if not cap.available:
        raise TransportError(f"transport {sc.transport!r} cannot {cannot}: {cap.reason}")
    return StoreSide(sc, sp, transport, transport_options(sc, msg["token"]), ObjectPages(sp, sc.seed))
