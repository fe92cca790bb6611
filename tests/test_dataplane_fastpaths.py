"""Fast paths of the data plane (issue 3): memcmp verification and the expected-row lookup
must reach exactly the verdicts of the slow paths they short-cut."""
from __future__ import annotations

import numpy as np

from pytest_kvfabric.emulator.plan import TRANSFER_DTYPE
from pytest_kvfabric.endpoint import pattern

PAGE = 4096
SLOTS = 3


def _reuse_plan(rounds: int = 4, nbytes: int = PAGE) -> np.ndarray:
    """rounds x SLOTS rows; row i lands in slot i % SLOTS, so every slot is reused."""
    rows = []
    for i in range(rounds * SLOTS):
        rows.append((i // SLOTS, 0, 0, 0, i % SLOTS, i * nbytes, (i % SLOTS) * nbytes, nbytes, 0))
    return np.array(rows, dtype=TRANSFER_DTYPE)


class _World:
    def __init__(self, t: np.ndarray, seed: int = 11) -> None:
        self.t = t
        src_len = int((t["src_off"] + t["nbytes"]).max())
        dst_len = int((t["dst_off"] + t["nbytes"]).max())
        self.base = pattern.base_pattern(seed, src_len)
        self.src = self.base.copy()
        self.dst = np.zeros(dst_len, np.uint8)
        self.keys = pattern.row_keys(seed, t)
        req = t["request"].astype(np.int64)
        rb = np.bincount(req, weights=t["nbytes"].astype(np.float64)).astype(np.int64)
        self.ledger = pattern.PageLedger(t, self.keys, self.base, self.dst, PAGE, rb)

    def write(self, i: int) -> tuple[int, int]:
        """Stamp row i and copy it into its destination (what a faithful transport does)."""
        r = self.t[i]
        pattern.stamp(self.src, r, self.keys[i])
        s, d, n = int(r["src_off"]), int(r["dst_off"]), int(r["nbytes"])
        self.ledger.guard(d, n)  # the transport calls the guard before placing a byte
        self.dst[d:d + n] = self.src[s:s + n]
        return d, n


def test_memcmp_fast_path_is_used_and_accepts_faithful_pages():
    w = _World(_reuse_plan())
    assert w.ledger._fast, "libc memcmp should load on Linux"
    for i in range(len(w.t)):
        w.ledger.place(*w.write(i))
    w.ledger.verify_all()
    assert w.ledger.error_count == 0, w.ledger.errors
    assert w.ledger.pages_checked == len(w.t)
    assert sorted(w.ledger.completed) == list(range(4))


def test_memcmp_fast_path_catches_one_flipped_byte_anywhere():
    for where in (0, 15, 16, PAGE // 2, PAGE - 9, PAGE - 1):
        w = _World(_reuse_plan(rounds=1))
        d, n = w.write(1)
        w.dst[d + where] ^= 0x01
        w.ledger.place(d, n)
        w.ledger.verify_all()
        assert w.ledger.error_count == 1, where
        # the slow path names the failure
        assert "request 0 layer 0 page 1" in w.ledger.first_error


def test_guard_verifies_the_previous_page_of_a_reused_slot_before_it_is_overwritten():
    w = _World(_reuse_plan(rounds=2))
    d0, n0 = w.write(0)
    w.ledger.place(d0, n0)
    w.dst[d0 + 100] ^= 0xFF  # damaged after placement, before reuse
    w.write(SLOTS)  # row 3 reuses slot 0: guard must verify row 0 first
    assert w.ledger.pages_checked == 1
    assert w.ledger.error_count == 1 and "corrupted at byte 100" in w.ledger.first_error


def test_guard_attributes_an_unreported_page_before_it_is_overwritten():
    """Row 0 placed but not yet reported when row 3 targets the same slot: the guard finds it
    by its key, verifies it, and the late report is absorbed."""
    w = _World(_reuse_plan(rounds=2))
    d0, n0 = w.write(0)
    w.write(SLOTS)
    assert w.ledger.pages_checked == 1 and w.ledger.error_count == 0
    assert w.ledger.place(d0, n0) is None  # the late report of row 0
    assert w.ledger.place(d0, n0) == SLOTS  # row 3's own report
    w.ledger.verify_all()
    assert w.ledger.error_count == 0, w.ledger.errors


def test_out_of_plan_order_pages_of_one_slot_fall_back_to_the_full_lookup():
    """Pages of one slot placed out of plan order (a broken slot rule) are still attributed
    by key, exactly as without the expected-row shortcut."""
    t = _reuse_plan(rounds=3)
    w = _World(t)
    later = 2 * SLOTS  # row 6, slot 0, placed before rows 0 and 3
    for i in (later, 0, SLOTS):
        r = t[i]
        pattern.stamp(w.src, r, w.keys[i])
        s, d, n = int(r["src_off"]), int(r["dst_off"]), int(r["nbytes"])
        w.dst[d:d + n] = w.src[s:s + n]
        assert w.ledger.place(d, n) == i
    # each page was overwritten before verification: all but the last one are reported
    w.ledger.verify_all()
    assert w.ledger.error_count == 2
    assert all("overwritten before verification" in e for e in w.ledger.errors)


def test_stale_page_is_still_reported_with_the_expected_row_shortcut():
    w = _World(_reuse_plan(rounds=2))
    d0, n0 = w.write(0)
    assert w.ledger.place(d0, n0) == 0
    assert w.ledger.place(d0, n0) is None  # the same page reported again: stale
    assert "stale page at dst_off 0" in w.ledger.first_error


def test_stamper_writes_exactly_what_stamp_at_writes():
    t = _reuse_plan(rounds=2, nbytes=100)
    t = np.concatenate([t, np.array([(9, 0, 0, 0, 0, 5000, 0, 10, 0)], dtype=TRANSFER_DTYPE)])  # a short row
    keys = pattern.row_keys(3, t)
    base = pattern.base_pattern(3, 6000)
    a, b = base.copy(), base.copy()
    st = pattern.Stamper(b, keys)
    for i, r in enumerate(t):
        pattern.stamp_at(a, int(r["src_off"]), int(r["nbytes"]), keys[i])
        st(i, int(r["src_off"]), int(r["nbytes"]))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, base)


def test_busy_ranges_detect_every_overlap_and_forget_removed_rows():
    from pytest_kvfabric.endpoint.slotbook import _Busy

    busy = _Busy(100)
    busy.add(1, 50, 150)  # spans slots 0 and 1
    assert busy.conflicts(149, 200) and busy.conflicts(0, 51) and busy.conflicts(60, 60)
    assert not busy.conflicts(150, 300) and not busy.conflicts(0, 50)
    busy.add(2, 150, 150)  # empty write claims byte 150
    assert busy.conflicts(150, 151)
    busy.remove(1, 50, 150)
    assert not busy.conflicts(0, 150)
    assert busy.conflicts(140, 151)
    busy.remove(2, 150, 150)
    assert busy.rows == {}
