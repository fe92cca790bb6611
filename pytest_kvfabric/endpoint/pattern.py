"""Source-page pattern and its verification (pure: numpy in, reasons out; no I/O).

Why this design: filling every page with fresh bytes before each post would cost a memcpy
per transfer on the sender (and compete with the transport for the CPU). Instead:

- the whole source region is filled once with a seeded random base pattern B, where
  B[i] depends on the position i in the source region (SFC64 stream, stable across numpy
  versions), so bytes sent from the wrong source offset are detected;
- before a transfer is posted, a 24-byte key that identifies that plan row (hash of seed,
  row index, request, layer, block, src/dst rank, src_off, nbytes) is written at its ends:
  a 16-byte header at its first bytes and an 8-byte trailer at its last bytes (O(1) per
  transfer). The receiver expects, at dst_off:
      header | B[src_off + 16 : src_off + nbytes - 8] | trailer
  Transfers shorter than 24 bytes carry only key bytes: key[:nbytes].

A misplaced or reordered page shows another row's header (the lookup names which one), a
truncated page a missing trailer, a corrupted page the first byte that differs.
"""
from __future__ import annotations

import ctypes
import functools
import struct
import weakref
from bisect import bisect_left
from typing import Any

import numpy as np

from .hotpath import wants_native

HEADER_BYTES = 16
TRAILER_BYTES = 8
KEY_BYTES = HEADER_BYTES + TRAILER_BYTES

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_BASE_DOMAIN = 0x6B76666162726963  # "kvfabric": keeps the base stream apart from key hashes
_U64 = struct.Struct("<Q").unpack_from


def _load_memcmp() -> Any:
    """libc memcmp through ctypes (None where libc cannot be loaded: numpy comparison then)."""
    try:
        fn = ctypes.CDLL(None).memcmp
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    fn.restype = ctypes.c_int
    return fn


_memcmp = _load_memcmp()

try:  # the optional C build (setup.py): the ledger's common case without the interpreter
    from ._fast import LedgerFast as _NativeLedgerFast
    from ._fast import PageCheck as _NativePageCheck
except ImportError:  # pragma: no cover - depends on the install
    _NativePageCheck = _NativeLedgerFast = None


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, vectorized (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _C1
        z = (z ^ (z >> np.uint64(27))) * _C2
        return z ^ (z >> np.uint64(31))


def base_pattern(seed: int, nbytes: int) -> np.ndarray:
    """The base pattern B (uint8, nbytes long) for a source region: B[i] depends on seed and i."""
    words = np.random.SFC64([int(seed) & 0xFFFFFFFFFFFFFFFF, _BASE_DOMAIN]).random_raw((nbytes + 7) // 8)
    return words.view(np.uint8)[:nbytes]


def row_keys(seed: int, transfers: np.ndarray) -> np.ndarray:
    """Per-row 24-byte keys, shape (n, 24) uint8, from TRANSFER_DTYPE rows (vectorized)."""
    n = len(transfers)
    h = _mix(np.full(n, np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)))
    fields = (
        np.arange(n, dtype=np.uint64),
        transfers["request"].astype(np.uint64),
        transfers["layer"].astype(np.uint64),
        transfers["block"].astype(np.uint64),
        (transfers["src_rank"].astype(np.uint64) << np.uint64(16)) | transfers["dst_rank"].astype(np.uint64),
        transfers["src_off"].astype(np.uint64),
        transfers["nbytes"].astype(np.uint64),
    )
    for f in fields:
        h = _mix(h ^ f)
    words = np.stack([_mix(h ^ np.uint64(k)) for k in (1, 2, 3)], axis=1)
    return np.ascontiguousarray(words).view(np.uint8).reshape(n, KEY_BYTES)


def key_id(key: bytes | np.ndarray) -> int:
    """The lookup id of a key: its first 8 header bytes as a little-endian integer."""
    raw = key[:8].tobytes() if isinstance(key, np.ndarray) else bytes(key[:8])
    return int.from_bytes(raw, "little")


def stamp(src: np.ndarray, row: np.void | np.ndarray, key: np.ndarray) -> None:
    """Write a row's header and trailer keys into the source region before it is posted."""
    stamp_at(src, int(row["src_off"]), int(row["nbytes"]), key)


def stamp_at(src: np.ndarray, off: int, n: int, key: np.ndarray) -> None:
    """stamp() with the row's src_off and nbytes already unpacked (the sender's hot path)."""
    if n < KEY_BYTES:
        src[off:off + n] = key[:n]
        return
    src[off:off + HEADER_BYTES] = key[:HEADER_BYTES]
    src[off + n - TRAILER_BYTES:off + n] = key[HEADER_BYTES:]


class Stamper:
    """stamp_at() for the sender's hot path: slice assignment between memoryviews of the
    source region and of all keys (half the cost of numpy slice assignment per write)."""

    def __init__(self, src: np.ndarray, keys: np.ndarray) -> None:
        self._src = src
        self._mv = memoryview(src).cast("B") if src.flags.c_contiguous and src.dtype == np.uint8 else None
        self._keys = np.ascontiguousarray(keys, dtype=np.uint8)
        self._kmv = memoryview(self._keys.tobytes())

    def __call__(self, row: int, off: int, n: int) -> None:
        mv = self._mv
        if mv is None or n < KEY_BYTES:
            stamp_at(self._src, off, n, self._keys[row])
            return
        k = row * KEY_BYTES
        kmv = self._kmv
        mv[off:off + HEADER_BYTES] = kmv[k:k + HEADER_BYTES]
        mv[off + n - TRAILER_BYTES:off + n] = kmv[k + HEADER_BYTES:k + KEY_BYTES]


def expected_page(base: np.ndarray, row: Any, key: np.ndarray) -> np.ndarray:
    """The exact bytes a row must deliver (used by tests and fault injection)."""
    off, n = int(row["src_off"]), int(row["nbytes"])
    if n < KEY_BYTES:
        return np.array(key[:n], dtype=np.uint8)
    out = np.array(base[off:off + n], dtype=np.uint8)
    out[:HEADER_BYTES] = key[:HEADER_BYTES]
    out[n - TRAILER_BYTES:] = key[HEADER_BYTES:]
    return out


def describe(row: Any) -> str:
    """Names a plan row the way a user looks for it: request, layer, page, ranks."""
    return (
        f"request {int(row['request'])} layer {int(row['layer'])} page {int(row['block'])} "
        f"(src rank {int(row['src_rank'])} -> dst rank {int(row['dst_rank'])}, "
        f"dst_off {int(row['dst_off'])}, {int(row['nbytes'])} bytes)"
    )


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Byte equality of two uint8 arrays, compared 8 bytes at a time (several times faster
    than a uint8 compare or a bytes copy for the large pages of block transfers)."""
    n = len(a)
    if n != len(b):
        return False
    n8 = n - n % 8
    if n8 and not np.array_equal(a[:n8].view(np.uint64), b[:n8].view(np.uint64)):
        return False
    return a[n8:].tobytes() == b[n8:].tobytes()


def _first_diff(got: np.ndarray, want: np.ndarray) -> int:
    return int(np.flatnonzero(got != want)[0])


def check_page(dst: np.ndarray, base: np.ndarray, row: Any, key: np.ndarray) -> str | None:
    """Why the bytes at the row's dst_off are not the row's page, or None if they are.

    The reason says which failure it is: a foreign header = misplaced/reordered/stale page,
    a missing trailer = truncated (the first differing byte says where), a bad body byte
    with both keys intact = corruption (or bytes sent from the wrong source offset)."""
    d, s, n = int(row["dst_off"]), int(row["src_off"]), int(row["nbytes"])
    got = dst[d:d + n]
    if len(got) < n:
        return f"page extends past the destination region ({len(got)} of {n} bytes inside)"
    if n < KEY_BYTES:
        if got.tobytes() != key[:n].tobytes():
            return f"short page key mismatch at byte {_first_diff(got, key[:n])} (misplaced, stale or corrupted)"
        return None
    if got[:HEADER_BYTES].tobytes() != key[:HEADER_BYTES].tobytes():
        return "header key mismatch (misplaced, reordered or stale page)"
    body = slice(HEADER_BYTES, n - TRAILER_BYTES)
    want_body = base[s + HEADER_BYTES:s + n - TRAILER_BYTES]
    body_ok = _equal(got[body], want_body)
    if got[n - TRAILER_BYTES:].tobytes() != key[HEADER_BYTES:].tobytes():
        if body_ok:
            return "trailer key missing (truncated or partially stale page)"
        k = HEADER_BYTES + _first_diff(got[body], want_body)
        return f"truncated: trailer key missing and content differs from byte {k} of {n}"
    if not body_ok:
        k = HEADER_BYTES + _first_diff(got[body], want_body)
        return f"corrupted at byte {k} (got 0x{int(got[k]):02x}, expected 0x{int(base[s + k]):02x})"
    return None


class KeyIndex:
    """Finds which plan row a received page belongs to from its header: bisect over sorted
    Python ints (about 1 µs a lookup, and compact for millions of rows, unlike a dict)."""

    def __init__(self, keys: np.ndarray) -> None:
        ids = np.ascontiguousarray(keys[:, :8]).view("<u8").reshape(-1) if len(keys) else np.zeros(0, "<u8")
        order = np.argsort(ids, kind="stable")
        self._order: list[int] = order.tolist()
        self._sorted: list[int] = ids[order].tolist()

    def lookup(self, header8: bytes | np.ndarray) -> int | None:
        """Row index whose key starts with these 8 bytes, or None."""
        if len(header8) < 8:
            return None
        kid = key_id(header8)
        i = bisect_left(self._sorted, kid)
        if i < len(self._sorted) and self._sorted[i] == kid:
            return self._order[i]
        return None


def _same_offset_chains(dst_off_col: np.ndarray) -> tuple[list[int], dict[int, int]]:
    """(next row with the same dst_off, or -1, per row; dst_off -> its first row), in plan order."""
    n = len(dst_off_col)
    d = dst_off_col.astype(np.int64)
    order = np.argsort(d, kind="stable")
    ds = d[order]
    same = ds[1:] == ds[:-1]
    nxt = np.full(n, -1, np.int64)
    nxt[order[:-1][same]] = order[1:][same]
    heads = np.ones(n, bool)
    heads[1:] = ~same
    return nxt.tolist(), dict(zip(ds[heads].tolist(), order[heads].tolist()))


class PageLedger:
    """Decode-side bookkeeping: which row each placed page is, per-request bytes, and the
    pages still waiting for verification (pure state; the caller decides when to verify).

    Verification is deferred (outside the timed receive path) but must happen before a
    slot is overwritten: `guard(dst_off, nbytes)` verifies every pending page overlapping
    a range about to be written.

    Hot path: per-row plan fields are Python lists (numpy scalar access costs ~100 ns a
    field), and a page is verified with three memcmp calls over the raw buffers (header,
    body, trailer; about 4x faster than a numpy comparison of a 64 KiB page). Only a page
    that fails goes through check_page() to name the reason."""

    def __init__(
        self,
        transfers: np.ndarray,
        keys: np.ndarray,
        base: np.ndarray | None,
        dst: np.ndarray,
        slot_bytes: int,
        request_bytes: np.ndarray,
        verify: bool = True,
        max_errors: int = 20,
        hot_path: str | None = None,
    ) -> None:
        self.transfers = transfers
        self.keys = np.ascontiguousarray(keys, dtype=np.uint8)
        self.base = base
        self.dst = dst
        self.slot_bytes = max(int(slot_bytes), 1)
        self.verify_enabled = verify and base is not None
        self.index = KeyIndex(self.keys)
        self.request_bytes = np.asarray(request_bytes, dtype=np.int64)
        self.pages_checked = 0
        self.errors: list[str] = []
        self.error_count = 0
        self.max_errors = max_errors
        self.completed: list[int] = []  # requests completed, in completion order
        self._init_rows(transfers)
        self._init_fast_paths(transfers, dst, base, hot_path)

    def _init_rows(self, transfers: np.ndarray) -> None:
        """Per-row plan fields and placement state, as Python lists (see the class docstring)."""
        n = len(transfers)
        self._dst_off: list[int] = transfers["dst_off"].tolist() if n else []
        self._src_off: list[int] = transfers["src_off"].tolist() if n else []
        self._nb: list[int] = transfers["nbytes"].tolist() if n else []
        self._req: list[int] = transfers["request"].tolist() if n else []
        self._placed: list[bool] = [False] * n
        self._req_need: list[int] = self.request_bytes.tolist()
        self._req_got: list[int] = [0] * len(self._req_need)
        self._pending: dict[int, list[int]] = {}  # dst slot -> rows placed, not yet verified
        self._queue: list[int] = []  # same rows in placement order (idle-time verification)
        self._qpos = 0
        self._verified: list[bool] = [False] * n
        self._absorb: dict[int, int] = {}  # dst_off -> reports to skip (attributed early by guard())
        # Expected-row fast path: the slot rule places the pages of one dst_off in plan
        # order, so the next unplaced row of that offset is almost always the page found
        # there; comparing its key id avoids a bisect over all rows (cache misses, ~2 us).
        # Anything else falls back to the full KeyIndex lookup, so checks are unchanged.
        self._kid: list[int] = (
            np.ascontiguousarray(self.keys[:, :8]).view("<u8").reshape(-1).tolist() if n else []
        )
        self._kid0 = 0 in set(self._kid) if n else False
        self._next_same, self._expect = _same_offset_chains(transfers["dst_off"]) if n else ([], {})
        self._last_at: dict[int, int] = {}  # dst_off -> last row attributed there

    def _init_fast_paths(self, transfers: np.ndarray, dst: np.ndarray, base: np.ndarray | None,
                         hot_path: str | None) -> None:
        """Raw views and pointers for memcmp, and the C place()/guard() where built."""
        # Raw views for the fast paths (the arrays stay referenced by self for our lifetime).
        self._dst_mv = memoryview(np.ascontiguousarray(dst)).cast("B") if dst.flags.c_contiguous else None
        self._fast = (
            _memcmp is not None
            and self.verify_enabled
            and dst.flags.c_contiguous
            and base is not None
            and base.flags.c_contiguous
            and dst.dtype == np.uint8
            and base.dtype == np.uint8
        )
        # Page comparison: the C PageCheck where built (hot_path None or "native"), else three
        # ctypes memcmp calls; both only say intact or not, check_page() names the reason.
        native = wants_native(hot_path, _NativePageCheck is not None)
        self.hot_path = "python"
        self._native_ok = None  # PageCheck.ok where native (not a bound method of self: no cycle)
        self._lf = None
        if self._fast and native:
            self._attach_native(transfers, dst, base)
        if self._fast:
            self._dst_ptr = int(dst.ctypes.data)
            self._base_ptr = int(base.ctypes.data)  # type: ignore[union-attr]
            self._key_ptr = int(self.keys.ctypes.data)
            self._dst_len = len(dst)
            self._base_len = len(base)  # type: ignore[arg-type]

    def _attach_native(self, transfers: np.ndarray, dst: np.ndarray, base: np.ndarray | None) -> None:
        check = _NativePageCheck(
            dst, base, self.keys, *(transfers[f].astype(np.int64) for f in ("dst_off", "src_off", "nbytes"))
        )
        self._native_ok = check.ok
        # place() and guard() in C over these same containers; what is not the common
        # case goes to the Python methods (the reference), before anything changes.
        self._lf = _NativeLedgerFast(
            dst, self._kid, self._placed, self._nb, self._next_same, self._req, self._req_got,
            self._req_need, self._queue, self.completed, self._verified, self._dst_off,
            self._expect, self._last_at, self._absorb, self._pending, check,
            # (through a weak proxy: no reference cycle, so a run's ledger and the plan
            # arrays it holds are freed as soon as the run drops it, not at the next GC)
            functools.partial(PageLedger.place, weakref.proxy(self)),
            functools.partial(PageLedger.guard, weakref.proxy(self)),
            self.verify_enabled, self._kid0, self.slot_bytes,
        )
        self.place = self._lf.place  # type: ignore[method-assign]
        self.guard = self._lf.guard  # type: ignore[method-assign]
        self.hot_path = "native"

    @property
    def placed(self) -> np.ndarray:
        """Per plan row: attributed to a placed write (bool array)."""
        return np.array(self._placed, dtype=bool)

    @property
    def bytes_by_request(self) -> np.ndarray:
        """Bytes attributed to each request so far (int64 array)."""
        return np.array(self._req_got, dtype=np.int64)

    # -- errors ---------------------------------------------------------------------------
    def _error(self, msg: str) -> None:
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(msg)

    @property
    def first_error(self) -> str | None:
        return self.errors[0] if self.errors else None

    def _expected_at(self, dst_off: int, nbytes: int) -> str:
        t = self.transfers
        cand = np.flatnonzero((t["dst_off"] == dst_off) & ~self.placed)
        if len(cand) == 0:
            return "no unplaced plan row targets that offset"
        same = [int(i) for i in cand if int(t["nbytes"][i]) == nbytes]
        return "expected " + describe(t[same[0] if same else int(cand[0])])

    # -- placement ------------------------------------------------------------------------
    def _header_row(self, dst_off: int) -> int | None:
        """Plan row whose key id is in the 8 bytes at dst_off (the caller checked bounds)."""
        mv = self._dst_mv
        kid = _U64(mv, dst_off)[0] if mv is not None else key_id(self.dst[dst_off:dst_off + 8])
        idx = self.index
        i = bisect_left(idx._sorted, kid)
        if i < len(idx._sorted) and idx._sorted[i] == kid:
            return idx._order[i]
        return None

    def _header_kid(self, dst_off: int) -> int:
        mv = self._dst_mv
        return _U64(mv, dst_off)[0] if mv is not None else key_id(self.dst[dst_off:dst_off + 8])

    def _identify(self, dst_off: int, nbytes: int) -> int | None:
        if nbytes >= 8:
            if dst_off < 0 or dst_off + 8 > len(self.dst):
                return None
            kid = self._header_kid(dst_off)
            row = self._expect.get(dst_off)
            if row is not None and self._kid[row] == kid:
                return row
            return self._header_row(dst_off)
        # Too short to carry a lookup id: the first unplaced row with that offset and size.
        t = self.transfers
        cand = np.flatnonzero((t["dst_off"] == dst_off) & (t["nbytes"] == nbytes) & ~self.placed)
        return int(cand[0]) if len(cand) else None

    def place(self, dst_off: int, nbytes: int) -> int | None:
        """Attribute a placed write (as the transport reports it) to its plan row; returns
        the row, or None (already attributed by guard(), or an error was recorded)."""
        if self._absorb:
            left = self._absorb.get(dst_off)
            if left:
                # guard() attributed the page placed here before the transport reported it;
                # reports for one offset come in placement order (the slot rule serializes them).
                if left == 1:
                    del self._absorb[dst_off]
                else:
                    self._absorb[dst_off] = left - 1
                return None
        return self._attribute(dst_off, nbytes)

    def _attribute(self, dst_off: int, nbytes: int) -> int | None:
        row = self._identify(dst_off, nbytes)
        if row is None:
            self._error(
                f"unknown page at dst_off {dst_off} ({nbytes} bytes): its header matches no plan "
                f"row (corrupted header, misplaced or stale page); {self._expected_at(dst_off, nbytes)}"
            )
            return None
        if self._placed[row]:
            r = self.transfers[row]
            if self._dst_off[row] == dst_off:
                self._error(
                    f"stale page at dst_off {dst_off}: still holds {describe(r)}; "
                    f"{self._expected_at(dst_off, nbytes)}"
                )
            else:
                self._error(f"duplicate page: {describe(r)} placed again at dst_off {dst_off}")
            return None
        if self._dst_off[row] != dst_off:
            self._error(
                f"misplaced page: {describe(self.transfers[row])} landed at dst_off {dst_off}; "
                f"{self._expected_at(dst_off, nbytes)}"
            )
            return None
        if self._nb[row] != nbytes:
            self._error(
                f"truncated page: {describe(self.transfers[row])}: {nbytes} of {self._nb[row]} bytes placed"
            )
            return None
        self._placed[row] = True
        self._last_at[dst_off] = row
        if self._expect.get(dst_off) == row:
            nxt = self._next_same[row]
            while nxt >= 0 and self._placed[nxt]:
                nxt = self._next_same[nxt]
            if nxt >= 0:
                self._expect[dst_off] = nxt
            else:
                del self._expect[dst_off]
        req = self._req[row]
        got = self._req_got[req] + nbytes
        self._req_got[req] = got
        if got == self._req_need[req]:
            self.completed.append(req)
        if self.verify_enabled:
            self._queue.append(row)
            sb = self.slot_bytes
            first, last = dst_off // sb, (dst_off + (nbytes or 1) - 1) // sb
            pend = self._pending
            for s in range(first, last + 1):
                lst = pend.get(s)
                if lst is None:
                    pend[s] = [row]
                else:
                    lst.append(row)
        return row

    # -- verification ---------------------------------------------------------------------
    def _page_ok(self, row: int) -> bool:
        """memcmp fast path: True if the page at the row's dst_off is exactly its bytes."""
        d, s, n = self._dst_off[row], self._src_off[row], self._nb[row]
        if d < 0 or s < 0 or d + n > self._dst_len or s + n > self._base_len:
            return False
        dp = self._dst_ptr + d
        kp = self._key_ptr + row * KEY_BYTES
        if n < KEY_BYTES:
            return n == 0 or _memcmp(dp, kp, n) == 0
        return (
            _memcmp(dp, kp, HEADER_BYTES) == 0
            and _memcmp(dp + n - TRAILER_BYTES, kp + HEADER_BYTES, TRAILER_BYTES) == 0
            and _memcmp(dp + HEADER_BYTES, self._base_ptr + s + HEADER_BYTES, n - KEY_BYTES) == 0
        )

    def verify_row(self, row: int) -> None:
        if self._verified[row]:
            return
        self._verified[row] = True
        self.pages_checked += 1
        if self._fast and (self._native_ok(row) if self._native_ok is not None else self._page_ok(row)):
            return
        self._explain(row)

    def _explain(self, row: int) -> None:
        """Record why the row's page is not intact (if it is not)."""
        r = self.transfers[row]
        reason = check_page(self.dst, self.base, r, self.keys[row])
        if reason is not None:
            d = int(r["dst_off"])
            other = self.index.lookup(self.dst[d:d + 8]) if int(r["nbytes"]) >= 8 else None
            if reason.startswith("header key mismatch") and other is not None and other != row:
                o = self.transfers[other]
                if int(o["dst_off"]) == d:  # a later page of the same slot: the slot rule was broken
                    reason = f"overwritten before verification by {describe(o)}"
                else:  # lead with the page that went astray; this one is its victim
                    astray = "" if self._placed[other] else (
                        f"; that page had not reached its own place (dst_off {int(o['dst_off'])}) "
                        f"when this was checked")
                    self._error(f"misplaced page: {describe(o)} landed at dst_off {d}, the place of "
                                f"{describe(r)}, which is lost{astray}")
                    return
            self._error(f"{describe(r)}: {reason}")

    def guard(self, dst_off: int, nbytes: int) -> None:
        """Verify pending pages overlapping [dst_off, dst_off+nbytes) before they are overwritten."""
        if not self.verify_enabled:
            return
        end = dst_off + (nbytes or 1)
        # A page placed in the same receive call may not be reported yet: find it by its key.
        if nbytes >= 8 and 0 <= dst_off and dst_off + 8 <= len(self.dst):
            kid = self._header_kid(dst_off)
            last = self._last_at.get(dst_off)
            if (last is not None and self._kid[last] == kid) or (kid == 0 and not self._kid0):
                row = None  # the page already attributed there, or never-written memory
            else:
                row = self._identify(dst_off, 8)
            if row is not None and not self._placed[row] and self._dst_off[row] == dst_off:
                if self._attribute(dst_off, self._nb[row]) is not None:
                    self._absorb[dst_off] = self._absorb.get(dst_off, 0) + 1
        sb = self.slot_bytes
        pend = self._pending
        verified = self._verified
        for s in range(dst_off // sb, (end - 1) // sb + 1):
            rows = pend.get(s)
            if not rows:
                continue
            keep = []
            for row in rows:
                if verified[row]:
                    continue
                a = self._dst_off[row]
                if a < end and dst_off < a + self._nb[row]:
                    self.verify_row(row)
                else:
                    keep.append(row)
            if keep:
                pend[s] = keep
            else:
                del pend[s]

    def verify_some(self, max_pages: int) -> int:
        """Verify up to max_pages pending pages in placement order; returns how many ran."""
        q = self._queue
        if self._lf is not None:
            self._qpos, done, failed = self._lf.verify_run(self._qpos, max_pages)
            self.pages_checked += done
            for row in failed:
                self._explain(row)
        else:
            done = 0
            verified = self._verified
            while self._qpos < len(q) and done < max_pages:
                row = q[self._qpos]
                self._qpos += 1
                if not verified[row]:
                    self.verify_row(row)
                    done += 1
        if self._qpos > 4096 and self._qpos * 2 > len(q):
            del q[: self._qpos]
            self._qpos = 0
        return done

    def verify_all(self) -> None:
        while self.verify_some(1 << 16):
            pass
        self._pending.clear()

    @property
    def pending(self) -> int:
        return len(self._queue) - self._qpos
