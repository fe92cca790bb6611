"""The prefill agent's per-write bookkeeping: slot rule, key stamping, completions.

Two implementations with one interface and the same rules: `_fast.SlotBook` (C, built on
install where a compiler exists) and `PySlotBook` below. The pacing loop (prefill.py) calls
only this interface, so what it decides does not depend on which one runs; tests drive both
with the same random operations and compare every answer. `make_book` picks the native one
when it is importable and says which one it returned (the Result reports it).

Slot rule: a write is never posted while an earlier write overlapping its source range or
its destination range is in flight (the source is being read by the transport; the
destination page is not verified yet). An empty write still claims its first byte.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import pattern
from .hotpath import wants_native

try:  # the optional C build (setup.py); absent where no compiler was found at install
    from ._fast import SlotBook as NativeSlotBook
except ImportError:  # pragma: no cover - depends on the install
    NativeSlotBook = None

NATIVE_MAX_SLOTS = 1 << 25  # 512 MiB of per-slot heads in the native book; beyond, Python's dicts


class _Busy:
    """In-flight byte ranges, bucketed by slot so overlap checks touch only a few rows.

    Slots are at least one transfer long, so a range spans one or two buckets. (The native
    SlotBook is the fast path; this one is written for clarity.)"""

    __slots__ = ("slot", "rows")

    def __init__(self, slot_bytes: int) -> None:
        self.slot = max(int(slot_bytes), 1)
        self.rows: dict[int, list[tuple[int, int, int]]] = {}  # slot -> [(row, a, b)], b > a

    def _span(self, a: int, b: int) -> tuple[int, range]:
        """The range's end (an empty write still claims its first byte) and its slots."""
        if b <= a:
            b = a + 1
        return b, range(a // self.slot, (b - 1) // self.slot + 1)

    def conflicts(self, a: int, b: int) -> bool:
        b, slots = self._span(a, b)
        for s in slots:
            for _row, x, y in self.rows.get(s, ()):
                if x < b and a < y:
                    return True
        return False

    def add(self, row: int, a: int, b: int) -> None:
        b, slots = self._span(a, b)
        for s in slots:
            self.rows.setdefault(s, []).append((row, a, b))

    def remove(self, row: int, a: int, b: int) -> None:
        _, slots = self._span(a, b)
        for s in slots:
            lst = self.rows.get(s)
            if lst is not None:
                for k, ent in enumerate(lst):
                    if ent[0] == row:
                        del lst[k]
                        break
                if not lst:
                    del self.rows[s]


def _check_rows(src_off: np.ndarray, dst_off: np.ndarray, nbytes: np.ndarray, request: np.ndarray,
                nreq: int, src_len: int, dst_region: int) -> None:
    """The native book's constructor check, so both reject the same plans the same way."""
    # (size > len - off, not off + size > len: the sum can overflow int64)
    bad = (
        (src_off < 0) | (dst_off < 0) | (nbytes < 0) | (src_off > src_len) | (nbytes > src_len - src_off)
        | (dst_off > dst_region) | (nbytes > dst_region - dst_off) | (request < 0) | (request >= nreq)
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"row {i}: src [{int(src_off[i])}, +{int(nbytes[i])}) / dst [{int(dst_off[i])}, "
            f"+{int(nbytes[i])}) outside the regions ({src_len} / {dst_region} bytes) or "
            f"request {int(request[i])} out of range"
        )


class PySlotBook:
    """The Python implementation of the SlotBook interface (see `_fast.c` for the C one)."""

    def __init__(self, src_off: np.ndarray, dst_off: np.ndarray, nbytes: np.ndarray,
                 notify: np.ndarray, request: np.ndarray, req_left: np.ndarray, src: np.ndarray,
                 keys: np.ndarray, src_slot: int, dst_slot: int, dst_region: int) -> None:
        n = len(src_off)
        for name, a in (("dst_off", dst_off), ("nbytes", nbytes), ("notify", notify), ("request", request)):
            if len(a) != n:
                raise ValueError(f"{name}: {len(a)} entries, expected {n}")
        _check_rows(src_off, dst_off, nbytes, request, len(req_left), len(src), int(dst_region))
        self._n = n
        self._src, self._dst = src_off.tolist(), dst_off.tolist()
        self._nb, self._notify, self._req = nbytes.tolist(), notify.tolist(), request.tolist()
        self._left = req_left  # int64 array, shared with the caller as in the native book
        self._stamp = pattern.Stamper(src, keys)
        self._src_slot, self._dst_slot = int(src_slot), int(dst_slot)
        self._sb, self._db = _Busy(src_slot), _Busy(dst_slot)

    def _row(self, i: int) -> int:
        if not 0 <= i < self._n:
            raise IndexError(f"row {i} outside the plan's {self._n} rows")
        return i

    def busy(self, i: int) -> bool:
        i = self._row(i)
        a, c, nb = self._src[i], self._dst[i], self._nb[i]
        return self._sb.conflicts(a, a + nb) or self._db.conflicts(c, c + nb)

    def claim(self, i: int) -> bool:
        if self.busy(i):
            return False
        a, c, nb = self._src[i], self._dst[i], self._nb[i]
        self._sb.add(i, a, a + nb)
        self._db.add(i, c, c + nb)
        self._stamp(i, a, nb)
        return True

    def release(self, i: int) -> None:
        i = self._row(i)
        a, c, nb = self._src[i], self._dst[i], self._nb[i]
        self._sb.remove(i, a, a + nb)
        self._db.remove(i, c, c + nb)

    def fill(self, batch: np.ndarray, rows: list[int]) -> None:
        if len(rows) > len(batch):
            raise ValueError(f"fill: {len(rows)} rows do not fit a batch of {len(batch)}")
        for i in rows:
            self._row(i)
        b = batch[:len(rows)]
        b["xfer"] = rows
        b["src_off"] = [self._src[i] for i in rows]
        b["dst_off"] = [self._dst[i] for i in rows]
        b["nbytes"] = [self._nb[i] for i in rows]
        b["notify"] = [self._notify[i] for i in rows]

    def select(self, ready: list[int], batch: np.ndarray, count: int, max_count: int,
               nbytes: int, max_nbytes: int) -> tuple[int, list[int], int]:
        keep: list[int] = []
        taken: list[int] = []
        blocked_src = blocked_dst = None  # created on the first blocked row only
        cap = len(batch)
        k = 0
        for pos, i in enumerate(ready):
            nb = self._nb[self._row(i)]
            if count + k >= max_count or (count + k > 0 and nbytes + nb > max_nbytes) or k >= cap:
                keep.extend(ready[pos:])
                break
            a, c = self._src[i], self._dst[i]
            if self.busy(i) or (blocked_src is not None and (
                    blocked_src.conflicts(a, a + nb) or blocked_dst.conflicts(c, c + nb))):
                keep.append(i)
                if blocked_src is None:
                    blocked_src, blocked_dst = _Busy(self._src_slot), _Busy(self._dst_slot)
                blocked_src.add(i, a, a + nb)
                blocked_dst.add(i, c, c + nb)
                continue
            self.claim(i)
            taken.append(i)
            nbytes += nb
            k += 1
        if k:
            self.fill(batch, taken)
        return k, keep, nbytes

    def complete(self, comp: np.ndarray, done_ns: np.ndarray) -> tuple[int, int, list[tuple[int, int]]]:
        done: list[tuple[int, int]] = []
        left = self._left
        total = 0
        for x, t in zip(comp["xfer"].tolist(), comp["t_ns"].tolist()):
            if x >= self._n:
                raise IndexError(f"completion for row {x} outside the plan's {self._n} rows")
            done_ns[x] = t
            total += self._nb[x]
            self.release(x)
            r = self._req[x]
            left[r] -= 1
            if left[r] == 0:
                done.append((r, t))
        return len(comp), total, done


def make_book(src_off: np.ndarray, dst_off: np.ndarray, nbytes: np.ndarray, notify: np.ndarray,
              request: np.ndarray, req_left: np.ndarray, src: np.ndarray, keys: np.ndarray,
              src_slot: int, dst_slot: int, dst_region: int,
              hot_path: str | None = None) -> tuple[Any, str]:
    """(book, "native" | "python"): the native book unless asked for Python or not built.

    Arrays are int64 (req_left writable: the book counts rows down per request), src the
    writable source region (keys are stamped into it), keys the (n, 24) uint8 row keys."""
    native = wants_native(hot_path, NativeSlotBook is not None)
    args = (
        np.ascontiguousarray(src_off, np.int64), np.ascontiguousarray(dst_off, np.int64),
        np.ascontiguousarray(nbytes, np.int64), np.ascontiguousarray(notify, np.int64),
        np.ascontiguousarray(request, np.int64), req_left, src,
        np.ascontiguousarray(keys, np.uint8), int(src_slot), int(dst_slot), int(dst_region),
    )
    # The native book indexes dense per-slot arrays (16 B a slot per side): fine for pools of
    # pages, not for a plan whose slots are a few bytes across gigabytes. The Python book's
    # sparse dicts handle that; the Result reports which ran.
    buckets = len(src) // max(int(src_slot), 1) + int(dst_region) // max(int(dst_slot), 1)
    if native and buckets > NATIVE_MAX_SLOTS:
        if hot_path == "native":
            raise ValueError(f"hot_path 'native': {buckets} slots exceed the native book's {NATIVE_MAX_SLOTS}")
        native = False
    if native:
        return NativeSlotBook(*args), "native"
    return PySlotBook(*args), "python"
