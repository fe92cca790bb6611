"""The prefill slot book: the C and the Python implementation give the same answers.

Both are driven through the same random sequences of claim / release / select / complete
on plans with overlapping slots, and every answer, the stamped source region and the
per-request counts must agree. Bad input is rejected the same way by both.
"""
from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.endpoint import pattern, slotbook
from pytest_kvfabric.transports.base import COMPLETION_DTYPE, XFER_DTYPE

native_only = pytest.mark.skipif(
    slotbook.NativeSlotBook is None,
    reason="the C extension pytest_kvfabric.endpoint._fast is not built (no compiler at install)",
)


def _plan(rng: np.random.Generator, n: int = 300, slot: int = 4096, slots: int = 12, nreq: int = 7):
    """Rows over few slots, so ranges overlap often; sizes include 0 and < 24 bytes; the
    destination side has slots twice as large (its pages may straddle source-slot sizes)."""
    nb = rng.choice([0, 5, 23, 24, 100, 1000, slot // 2, slot], size=n).astype(np.int64)
    src = (rng.integers(0, slots, n) * slot + rng.integers(0, 64, n)).astype(np.int64)
    dst = (rng.integers(0, slots // 2, n) * 2 * slot + rng.integers(0, 3 * slot // 2, n)).astype(np.int64)
    region = (slots + 1) * slot
    req = np.sort(rng.integers(0, nreq, n)).astype(np.int64)
    notify = np.where(np.r_[req[1:] != req[:-1], True], req, -1).astype(np.int64)
    return src, dst, nb, notify, req, region, slot


def _books(seed: int):
    rng = np.random.default_rng(seed)
    src_off, dst_off, nb, notify, req, region, slot = _plan(rng)
    keys = pattern.row_keys(seed, np.zeros(len(nb), [("request", "<u4"), ("layer", "<u2"), ("block", "<u4"),
                                                   ("src_rank", "<u2"), ("dst_rank", "<u2"),
                                                   ("src_off", "<u8"), ("nbytes", "<u4")]))
    out = []
    for kind in ("native", "python"):
        left = np.bincount(req, minlength=int(req.max()) + 1).astype(np.int64)
        src = np.zeros(region, np.uint8)
        book, got = slotbook.make_book(src_off, dst_off, nb, notify, req, left, src, keys, slot, 2 * slot, region,
                                       hot_path=kind)
        assert got == kind
        out.append((book, src, left))
    return out, rng, len(nb)


@native_only
@pytest.mark.parametrize("seed", range(12))
def test_native_and_python_books_agree_on_random_operations(seed):
    books, rng, n = _books(seed)
    (nat, src_n, left_n), (py, src_p, left_p) = books
    inflight: list[int] = []
    count = nbytes = 0
    for step in range(400):
        op = rng.integers(0, 4)
        if op == 0:
            i = int(rng.integers(0, n))
            a, b = nat.claim(i), py.claim(i)
            assert a == b, (step, i)
            if a:
                inflight.append(i)
        elif op == 1 and inflight:
            # complete a random subset, in a random order (acks of several connections)
            pick = rng.permutation(len(inflight))[: int(rng.integers(1, len(inflight) + 1))]
            rows = [inflight[k] for k in pick]
            inflight = [x for k, x in enumerate(inflight) if k not in set(pick.tolist())]
            comp = np.zeros(len(rows), COMPLETION_DTYPE)
            comp["xfer"], comp["t_ns"] = rows, rng.integers(1, 1 << 40, len(rows))
            dn_n, dn_p = np.zeros(n, np.int64), np.zeros(n, np.int64)
            rn, rp = nat.complete(comp, dn_n), py.complete(comp, dn_p)
            assert rn == rp and (dn_n == dn_p).all()
            count -= rn[0]
            nbytes -= rn[1]
        elif op == 2:
            ready = rng.integers(0, n, int(rng.integers(0, 60))).tolist()
            ready = list(dict.fromkeys(i for i in ready if i not in inflight))
            bn, bp = np.zeros(16, XFER_DTYPE), np.zeros(16, XFER_DTYPE)
            max_count, max_nbytes = int(rng.integers(1, 24)), int(rng.choice([1, 20000, 1 << 30]))
            rn = nat.select(ready, bn, count, max_count, nbytes, max_nbytes)
            rp = py.select(ready, bp, count, max_count, nbytes, max_nbytes)
            assert rn == rp, step
            k = rn[0]
            assert (bn[:k] == bp[:k]).all()
            inflight += bn["xfer"][:k].tolist()
            count += k
            nbytes = rn[2]
        elif op == 3:
            i = int(rng.integers(0, n))
            assert nat.busy(i) == py.busy(i)
            rows = rng.integers(0, n, int(rng.integers(0, 9))).tolist()
            bn, bp = np.zeros(8, XFER_DTYPE), np.zeros(8, XFER_DTYPE)
            nat.fill(bn, rows)
            py.fill(bp, rows)
            assert (bn == bp).all()  # the staging path's batch
    assert (src_n == src_p).all() and (left_n == left_p).all()
    assert src_n.any()  # keys were stamped


@pytest.mark.parametrize("kind", [pytest.param("native", marks=native_only), "python"])
def test_select_keeps_slot_order_and_respects_both_windows(kind):
    # Rows 0 and 2 overlap at the destination, row 4 overlaps 2 but not 0; row 1 is too big
    # for the byte window with 0 in flight.
    src_off = np.array([0, 100, 200, 300, 400], np.int64)
    dst_off = np.array([0, 1000, 5, 2000, 12], np.int64)
    nb = np.array([10, 500, 10, 10, 8], np.int64)
    req = np.array([0, 0, 0, 0, 1], np.int64)
    left = np.array([4, 1], np.int64)
    src = np.zeros(4096, np.uint8)
    keys = np.arange(5 * 24, dtype=np.uint8).reshape(5, 24)
    book, _ = slotbook.make_book(src_off, dst_off, nb, np.array([-1, -1, -1, 0, 1]), req, left, src, keys,
                                 1024, 1024, 4096, hot_path=kind)
    batch = np.zeros(8, XFER_DTYPE)
    k, keep, inb = book.select([0, 1, 2, 3], batch, 0, 8, 0, 100)
    # 0 goes; 1 exceeds the byte window (something is in flight), and so does everything after it
    assert (k, keep, inb) == (1, [1, 2, 3], 10)
    assert batch[0].tolist() == (0, 0, 0, 10, -1)
    assert src[0:10].tolist() == keys[0, :10].tolist()  # a short row carries its key prefix
    # 2 waits for 0, and 4 waits behind 2 (it is free, but pages of one slot go in plan order)
    k, keep, inb = book.select([2, 4, 3], batch, 1, 8, 10, 100)
    assert (k, keep) == (1, [2, 4]) and batch[0]["xfer"] == 3 and batch[0]["notify"] == 0
    assert book.claim(4) and book.busy(2)  # the blocked set was only select()'s scratch
    book.release(4)
    comp = np.zeros(1, COMPLETION_DTYPE)
    comp[0] = (0, 77)
    done_ns = np.zeros(5, np.int64)
    assert book.complete(comp, done_ns) == (1, 10, []) and done_ns[0] == 77 and left[0] == 3
    assert book.claim(2) and not book.claim(2)
    # A lone write larger than the byte window still goes when nothing is in flight.
    for i in (2, 3):
        book.release(i)
    k, keep, inb = book.select([1], batch, 0, 8, 0, 100)
    assert (k, keep, inb) == (1, [], 500)
    comp = np.zeros(3, COMPLETION_DTYPE)
    comp["xfer"], comp["t_ns"] = [1, 2, 3], [5, 6, 9]
    assert book.complete(comp, done_ns) == (3, 520, [(0, 9)]) and left[0] == 0


@pytest.mark.parametrize("kind", [pytest.param("native", marks=native_only), "python"])
def test_bad_input_is_rejected_before_any_byte_is_written(kind):
    src = np.zeros(1000, np.uint8)
    keys = np.full((2, 24), 7, np.uint8)
    args = dict(notify=np.array([-1, 0]), request=np.zeros(2, np.int64), req_left=np.array([2], np.int64),
                src=src, keys=keys, src_slot=500, dst_slot=500, dst_region=1000)
    with pytest.raises(ValueError, match=r"row 1: src \[990, \+20\).*outside the regions \(1000 / 1000 bytes\)"):
        slotbook.make_book(np.array([0, 990]), np.array([0, 0]), np.array([10, 20]), hot_path=kind, **args)
    with pytest.raises(ValueError, match=r"row 1: src \[9223372036854775792, \+20\)"):
        # an offset whose sum with the size overflows int64 is outside, not negative and inside
        slotbook.make_book(np.array([0, 2**63 - 16]), np.array([0, 0]), np.array([10, 20]), hot_path=kind, **args)
    with pytest.raises(ValueError, match=r"row 0: .*dst \[995, \+10\)"):
        slotbook.make_book(np.array([0, 10]), np.array([995, 0]), np.array([10, 10]), hot_path=kind, **args)
    book, _ = slotbook.make_book(np.array([0, 10]), np.array([0, 10]), np.array([10, 10]), hot_path=kind, **args)
    with pytest.raises(IndexError, match="row 2 outside the plan's 2 rows"):
        book.claim(2)
    with pytest.raises(IndexError, match="row -1 outside"):
        book.select([0, -1], np.zeros(4, XFER_DTYPE), 0, 4, 0, 1 << 20)
    comp = np.zeros(1, COMPLETION_DTYPE)
    comp[0] = (5, 1)
    with pytest.raises(IndexError, match="completion for row 5 outside the plan's 2 rows"):
        book.complete(comp, np.zeros(2, np.int64))
    with pytest.raises((ValueError, KeyError, IndexError)):
        book.complete(np.zeros(1, [("xfer", "<u8")]), np.zeros(2, np.int64))  # not COMPLETION_DTYPE
    with pytest.raises(ValueError, match="3 rows do not fit a batch of 2"):
        book.fill(np.zeros(2, XFER_DTYPE), [0, 1, 0])
    assert not src[20:].any()  # nothing written outside the rows' own ranges


@native_only
def test_native_book_rejects_arrays_of_the_wrong_type():
    with pytest.raises(TypeError, match="src_off: expected a contiguous int64 array"):
        slotbook.NativeSlotBook(np.zeros(2, np.int32), *([np.zeros(2, np.int64)] * 4), np.ones(1, np.int64),
                                np.zeros(100, np.uint8), np.zeros((2, 24), np.uint8), 10, 10, 100)
    with pytest.raises(ValueError, match="keys: 24 bytes for 2 rows"):
        slotbook.NativeSlotBook(*([np.zeros(2, np.int64)] * 5), np.ones(1, np.int64),
                                np.zeros(100, np.uint8), np.zeros((1, 24), np.uint8), 10, 10, 100)


def test_make_book_names_what_it_cannot_do(monkeypatch):
    with pytest.raises(ValueError, match="hot_path 'fast': expected one of native, python"):
        slotbook.make_book(*([np.zeros(0, np.int64)] * 5), np.zeros(0, np.int64), np.zeros(0, np.uint8),
                           np.zeros((0, 24), np.uint8), 1, 1, 0, hot_path="fast")
    monkeypatch.setattr(slotbook, "NativeSlotBook", None)
    with pytest.raises(RuntimeError, match="C extension pytest_kvfabric.endpoint._fast is not built"):
        slotbook.make_book(*([np.zeros(0, np.int64)] * 5), np.zeros(0, np.int64), np.zeros(0, np.uint8),
                           np.zeros((0, 24), np.uint8), 1, 1, 0, hot_path="native")
    _, kind = slotbook.make_book(*([np.zeros(0, np.int64)] * 5), np.zeros(0, np.int64), np.zeros(0, np.uint8),
                                 np.zeros((0, 24), np.uint8), 1, 1, 0)
    assert kind == "python"


def test_make_book_uses_the_python_book_where_native_slot_arrays_would_be_huge():
    args = ([np.zeros(0, np.int64)] * 5) + [np.zeros(0, np.int64), np.zeros(1 << 20, np.uint8),
                                           np.zeros((0, 24), np.uint8), 1, 1, 1 << 40]
    _, kind = slotbook.make_book(*args)  # 2^40 one-byte destination slots
    assert kind == "python"
    if slotbook.NativeSlotBook is not None:
        with pytest.raises(ValueError, match="slots exceed the native book"):
            slotbook.make_book(*args, hot_path="native")


def test_the_native_extension_is_built_where_a_compiler_exists():
    # setup.py marks the extension optional so installs without a compiler still work; here a
    # compiler exists, so a missing module means the build broke (and the agents would be slow).
    import shutil
    import sysconfig

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) on this machine: the Python slot book is used")
    assert slotbook.NativeSlotBook is not None, "pytest_kvfabric.endpoint._fast did not build (see pip's output)"
    # An in-place build older than its source would run old code: rebuild (pip install -e .).
    from pathlib import Path

    from pytest_kvfabric.endpoint import _fast

    so, src = Path(_fast.__file__), Path(slotbook.__file__).with_name("_fast.c")
    if src.exists() and so.parent == src.parent:
        assert so.stat().st_mtime >= src.stat().st_mtime, f"{so.name} is older than _fast.c: rebuild it"
