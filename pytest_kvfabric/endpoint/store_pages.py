"""What every store object must hold (pure): the same positional pattern as prefill pages.

Object k (one page of one request's KV) is laid out like a transfer of the plan with
src_off 0: a 16-byte key header, the store's base pattern, an 8-byte key trailer
(endpoint/pattern.py). A page read from the wrong slot shows another object's header; a torn
or corrupted one a missing trailer or the first differing byte.
"""
from __future__ import annotations

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
