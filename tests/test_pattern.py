"""Source pattern and decode-side verification (pure): every kind of wrong page is caught and named."""
from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.emulator.plan import TRANSFER_DTYPE
from pytest_kvfabric.endpoint import pattern

PAGE = 4096


def _plan(requests: int = 2, layers: int = 2, blocks: int = 2, nbytes: int = PAGE) -> np.ndarray:
    rows = []
    i = 0
    for r in range(requests):
        for layer in range(layers):
            for b in range(blocks):
                rows.append((r, layer, 0, 0, b, i * nbytes, (i * 3 % 8) * nbytes + 7 * (i % 8), nbytes, layer * 1000))
                i += 1
    t = np.array(rows, dtype=TRANSFER_DTYPE)
    # distinct, non-overlapping destinations (skewed so src and dst offsets differ)
    t["dst_off"] = (np.arange(len(t)) * (nbytes + 64))[::-1]
    return t


@pytest.fixture(autouse=True, params=["native", "python"])
def hot_path(request, monkeypatch) -> str:
    """Every ledger test runs with the C page check and with the ctypes one."""
    if request.param == "native" and pattern._NativePageCheck is None:
        pytest.skip("the C extension pytest_kvfabric.endpoint._fast is not built (no compiler at install)")
    monkeypatch.setattr(_World, "HOT_PATH", request.param)
    return request.param


class _World:
    """A source region, a destination region, and a transport that copies rows faithfully."""

    HOT_PATH = "python"

    def __init__(self, t: np.ndarray, seed: int = 7) -> None:
        self.t = t
        self.seed = seed
        src_len = int((t["src_off"] + t["nbytes"]).max())
        dst_len = int((t["dst_off"] + t["nbytes"]).max())
        self.base = pattern.base_pattern(seed, src_len)
        self.src = self.base.copy()
        self.dst = np.zeros(dst_len, np.uint8)
        self.keys = pattern.row_keys(seed, t)
        req = t["request"].astype(np.int64)
        self.request_bytes = np.bincount(req, weights=t["nbytes"].astype(np.float64)).astype(np.int64)
        self.ledger = pattern.PageLedger(t, self.keys, self.base, self.dst, PAGE, self.request_bytes,
                                         hot_path=self.HOT_PATH)
        assert self.ledger.hot_path == self.HOT_PATH

    def send(self, i: int, dst_off: int | None = None, nbytes: int | None = None) -> tuple[int, int]:
        r = self.t[i]
        pattern.stamp(self.src, r, self.keys[i])
        s, n = int(r["src_off"]), int(r["nbytes"] if nbytes is None else nbytes)
        d = int(r["dst_off"]) if dst_off is None else dst_off
        self.dst[d:d + n] = self.src[s:s + n]
        return d, n

    def deliver_all(self) -> None:
        for i in range(len(self.t)):
            self.ledger.place(*self.send(i))
        self.ledger.verify_all()


def test_faithful_delivery_verifies_clean_and_completes_requests():
    w = _World(_plan())
    w.deliver_all()
    assert w.ledger.error_count == 0, w.ledger.errors
    assert w.ledger.pages_checked == len(w.t)
    assert sorted(w.ledger.completed) == [0, 1]
    assert list(w.ledger.bytes_by_request) == list(w.request_bytes)


def test_base_pattern_is_deterministic_and_position_dependent():
    a = pattern.base_pattern(1, 1 << 16)
    assert np.array_equal(a, pattern.base_pattern(1, 1 << 16))
    assert not np.array_equal(a, pattern.base_pattern(2, 1 << 16))
    # no short period: a page shifted by one slot does not look the same
    assert not np.array_equal(a[:4096], a[4096:8192])
    assert np.array_equal(pattern.base_pattern(1, 100), a[:100])


def test_row_keys_unique_and_seeded():
    t = _plan(requests=8, layers=4, blocks=8)
    k = pattern.row_keys(3, t)
    assert k.shape == (len(t), pattern.KEY_BYTES)
    assert len({bytes(row) for row in k}) == len(t)
    assert not np.array_equal(k, pattern.row_keys(4, t))


def test_corrupted_byte_named_with_request_layer_page_and_offset():
    w = _World(_plan())
    for i in range(len(w.t)):
        d, n = w.send(i)
        if i == 5:
            w.dst[d + 1000] ^= 0x01
        w.ledger.place(d, n)
    w.ledger.verify_all()
    assert w.ledger.error_count == 1
    r = w.t[5]
    msg = w.ledger.first_error
    assert f"request {r['request']} layer {r['layer']} page {r['block']}" in msg
    assert "corrupted at byte 1000" in msg


def test_misplaced_page_detected_and_names_both_pages():
    w = _World(_plan())
    # row 2 lands where row 3 belongs
    d3 = int(w.t[3]["dst_off"])
    w.send(2, dst_off=d3)
    w.ledger.place(d3, PAGE)
    assert w.ledger.error_count == 1
    r2, r3 = w.t[2], w.t[3]
    msg = w.ledger.first_error
    assert "misplaced page" in msg
    assert f"request {r2['request']} layer {r2['layer']} page {r2['block']}" in msg
    assert f"expected request {r3['request']} layer {r3['layer']} page {r3['block']}" in msg


def test_reordered_pages_detected():
    w = _World(_plan())
    d0, d1 = int(w.t[0]["dst_off"]), int(w.t[1]["dst_off"])
    w.send(0, dst_off=d1)
    w.send(1, dst_off=d0)
    w.ledger.place(d0, PAGE)
    w.ledger.place(d1, PAGE)
    assert w.ledger.error_count == 2
    assert all("misplaced page" in e for e in w.ledger.errors)


def test_truncated_page_detected_both_by_length_and_by_content():
    w = _World(_plan())
    d, _ = w.send(4, nbytes=PAGE - 100)  # the transport says it placed fewer bytes
    w.ledger.place(d, PAGE - 100)
    assert "truncated page" in w.ledger.first_error
    assert f"{PAGE - 100} of {PAGE} bytes" in w.ledger.first_error

    w2 = _World(_plan())
    d, _ = w2.send(4, nbytes=PAGE - 100)  # ... or claims the full length but stopped early
    w2.ledger.place(d, PAGE)
    w2.ledger.verify_all()
    assert w2.ledger.error_count == 1
    assert f"truncated: trailer key missing and content differs from byte {PAGE - 100}" in w2.ledger.first_error


def test_stale_page_in_reused_slot_detected():
    w = _World(_plan())
    t = w.t.copy()
    t["dst_off"][4] = t["dst_off"][0]  # row 4 reuses row 0's slot
    w = _World(t)
    w.ledger.place(*w.send(0))
    w.ledger.guard(int(t["dst_off"][4]), PAGE)  # verifies row 0 before reuse
    assert w.ledger.error_count == 0 and w.ledger.pages_checked == 1
    # the new write never arrives, but the transport claims it placed it: old bytes remain
    w.ledger.place(int(t["dst_off"][4]), PAGE)
    assert w.ledger.error_count == 1
    assert "stale page at dst_off" in w.ledger.first_error
    r0, r4 = t[0], t[4]
    assert f"still holds request {r0['request']} layer {r0['layer']} page {r0['block']}" in w.ledger.first_error
    assert f"expected request {r4['request']} layer {r4['layer']} page {r4['block']}" in w.ledger.first_error


def test_unknown_header_named_with_expected_page():
    w = _World(_plan())
    d = int(w.t[6]["dst_off"])
    w.dst[d:d + PAGE] = 0xEE
    w.ledger.place(d, PAGE)
    r = w.t[6]
    assert "unknown page" in w.ledger.first_error
    assert f"expected request {r['request']} layer {r['layer']} page {r['block']}" in w.ledger.first_error


def test_guard_verifies_pending_page_before_overwrite():
    t = _plan(requests=1, layers=1, blocks=2)
    t["dst_off"][1] = t["dst_off"][0]  # both rows use one slot, one after the other
    w = _World(t)
    w.ledger.place(*w.send(0))
    assert w.ledger.pending == 1
    w.ledger.guard(int(t["dst_off"][1]), PAGE)
    assert w.ledger.pages_checked == 1 and w.ledger.error_count == 0
    w.ledger.place(*w.send(1))
    w.ledger.verify_all()
    assert w.ledger.pages_checked == 2 and w.ledger.error_count == 0


def test_without_guard_overwritten_page_would_fail():
    t = _plan(requests=1, layers=1, blocks=2)
    t["dst_off"][1] = t["dst_off"][0]
    w = _World(t)
    w.ledger.place(*w.send(0))
    w.send(1)  # overwrite before verification
    w.ledger.verify_all()
    assert w.ledger.error_count == 1
    assert "overwritten before verification by request 0 layer 0 page 1" in w.ledger.first_error


def test_guard_finds_a_placed_but_unreported_page():
    t = _plan(requests=1, layers=1, blocks=2)
    t["dst_off"][1] = t["dst_off"][0]
    w = _World(t)
    d, n = w.send(0)  # placed; the transport has not reported it yet
    w.ledger.guard(d, n)  # the next write into that slot arrives first
    assert w.ledger.pages_checked == 1 and w.ledger.error_count == 0
    w.ledger.place(d, n)  # late report of the same page: not an error
    assert w.ledger.error_count == 0


@pytest.mark.parametrize("nbytes", [1, 7, 8, 23, 24, 25])
def test_short_transfers_carry_key_bytes_only(nbytes):
    t = _plan(nbytes=nbytes)
    w = _World(t)
    w.deliver_all()
    assert w.ledger.error_count == 0, w.ledger.errors
    w2 = _World(t)
    for i in range(len(t)):
        d, n = w2.send(i)
        if i == 3:
            w2.dst[d + n - 1] ^= 0xFF
        w2.ledger.place(d, n)
    w2.ledger.verify_all()
    assert w2.ledger.error_count >= 1


def test_expected_page_matches_stamped_source():
    t = _plan()
    w = _World(t)
    for i in (0, 5):
        w.send(i)
        s, n = int(t[i]["src_off"]), int(t[i]["nbytes"])
        assert np.array_equal(pattern.expected_page(w.base, t[i], w.keys[i]), w.src[s:s + n])


def test_early_attribution_then_late_reports_in_order():
    """Two connections: A is placed, its slot is reused by B within one receive call, and the
    transport reports A then B afterwards. Both pages verify; nothing is flagged."""
    t = _plan(requests=1, layers=1, blocks=2)
    t["dst_off"][1] = t["dst_off"][0]
    w = _World(t)
    d, n = w.send(0)
    w.ledger.guard(d, n)  # B's header arrives: A attributed and verified early
    w.send(1)
    w.ledger.place(d, n)  # late report of A
    w.ledger.place(d, n)  # report of B
    w.ledger.verify_all()
    assert w.ledger.error_count == 0, w.ledger.errors
    assert w.ledger.pages_checked == 2 and w.ledger.placed.all()
    assert w.ledger.completed == [0]


@pytest.mark.parametrize("hot_path", ["native"], indirect=True)  # compares it with the ctypes one
@pytest.mark.parametrize("nbytes", [1, 23, 24, PAGE])
def test_native_and_ctypes_page_checks_agree_on_every_kind_of_damage(hot_path, nbytes):
    t = _plan(requests=3, nbytes=nbytes)
    w = _World(t)
    for i in range(len(t)):
        w.send(i)
    rng = np.random.default_rng(nbytes)
    damaged = {}
    for i in range(0, len(t), 2):  # every other page: flip one random byte (header, body or trailer)
        d, n = int(t["dst_off"][i]), int(t["nbytes"][i])
        k = int(rng.integers(0, n))
        w.dst[d + k] ^= 0x10
        damaged[i] = k
    py_ok = [w.ledger._page_ok(i) for i in range(len(t))]
    native_ok = [w.ledger._native_ok(i) for i in range(len(t))]
    assert native_ok == py_ok == [i not in damaged for i in range(len(t))]
    # a page that does not fit the destination buffer is not intact (the Python path names why)
    short = _World(t)
    short.ledger = pattern.PageLedger(t, w.keys, w.base, w.dst[: int(t["dst_off"][0])], PAGE,
                                      w.request_bytes, hot_path="native")
    assert short.ledger._native_ok(0) is False


def _reuse_plan(rng: np.random.Generator, n: int = 120, slots: int = 6) -> np.ndarray:
    """Rows that reuse a few destination slots in plan order (as the slot rule sends them)."""
    t = np.zeros(n, TRANSFER_DTYPE)
    t["request"] = np.sort(rng.integers(0, 5, n))
    t["layer"], t["block"] = np.arange(n) % 3, np.arange(n)
    t["nbytes"] = rng.choice([PAGE, PAGE, PAGE // 2, 16, 8, 4], n)
    t["src_off"] = np.arange(n) * PAGE
    t["dst_off"] = rng.integers(0, slots, n) * PAGE
    return t


def _drive(w: _World, ops: list[tuple[str, int]]):
    """Apply one fault script to a world, what a faulty or reordering transport would do;
    yields after every operation (so two worlds can be compared in lockstep)."""
    t, led = w.t, w.ledger
    late: list[tuple[int, int]] = []
    for kind, i in ops:
        yield
        if kind == "bogus":  # a report and a guard at the very end of the region
            led.guard(len(w.dst) - 4, 8)
            led.place(len(w.dst) - 4, 8)
            continue
        d, n = int(t["dst_off"][i]), int(t["nbytes"][i])
        led.guard(d, n)
        if kind == "misplace":
            j = (i + 1) % len(t)
            w.send(i, dst_off=int(t["dst_off"][j]) if int(t["nbytes"][j]) == n else d)
        else:
            w.send(i)
        if kind == "corrupt" and n > 20:
            w.dst[d + n // 2] ^= 0x44
        if kind == "late":  # reported after the next write's header (early attribution)
            late.append((d, n))
            continue
        if kind == "truncate" and n > 8:
            n -= 4
        led.place(d, n)
        if kind == "duplicate":
            led.place(d, n)
        for dn in late:
            led.place(*dn)
        late.clear()
        if kind == "verify":
            led.verify_some(3)
    for dn in late:
        led.place(*dn)
    yield
    led.verify_all()


def _state(led: pattern.PageLedger) -> tuple:
    return (led.errors, led.error_count, led.completed, led.pages_checked, led._placed, led._verified,
            led._req_got, led._expect, led._last_at, led._absorb, led._pending, led._queue, led._qpos)


@pytest.mark.parametrize("hot_path", ["native"], indirect=True)  # compares it with the Python ledger
@pytest.mark.parametrize("seed", range(8))
def test_native_and_python_ledgers_agree_on_random_fault_scripts(hot_path, seed):
    rng = np.random.default_rng(seed)
    t = _reuse_plan(rng)
    kinds = ["ok"] * 10 + ["verify"] * 3 + ["late", "late", "corrupt", "misplace", "truncate", "duplicate", "bogus"]
    ops = [(str(rng.choice(kinds)), i) for i in range(len(t))]
    worlds = []
    for kind in ("native", "python"):
        w = _World.__new__(_World)
        w.HOT_PATH = kind
        _World.__init__(w, t, seed=seed)
        worlds.append(w)
    nat, py = (w.ledger for w in worlds)
    for step, _ in enumerate(zip(_drive(worlds[0], ops), _drive(worlds[1], ops), strict=True)):
        assert _state(nat) == _state(py), f"step {step}: {ops[step - 1] if step else 'start'}"
    assert _state(nat) == _state(py)
    assert nat.hot_path == "native" and py.hot_path == "python"
    assert nat.errors == py.errors and nat.error_count == py.error_count
    assert nat.completed == py.completed and nat.pages_checked == py.pages_checked
    assert (nat.placed == py.placed).all() and (nat.bytes_by_request == py.bytes_by_request).all()
    assert nat._expect == py._expect and nat._last_at == py._last_at and nat._absorb == py._absorb
    assert nat._queue == py._queue and nat._verified == py._verified
    assert (worlds[0].dst == worlds[1].dst).all()
    assert py.error_count > 0 and py.pages_checked > len(t) // 2  # the script did exercise the faults


def test_pages_of_one_offset_delivered_out_of_plan_order_keep_the_expected_row_right(hot_path):
    # Rows 0, 1, 2 share a destination; 1 arrives (and verifies) before 0. The next expected
    # page there must then skip 1 and be 2, so 2 still takes the fast path and is attributed.
    t = _plan(requests=1, layers=1, blocks=3)
    t["dst_off"][:] = t["dst_off"][0]
    w = _World(t)
    for i in (1, 0, 2):
        d, n = w.send(i)
        w.ledger.place(d, n)
        w.ledger.verify_some(8)
    assert w.ledger.error_count == 0, w.ledger.errors
    assert w.ledger.placed.all() and w.ledger.pages_checked == 3
    assert w.ledger._expect == {} and w.ledger._last_at == {int(t["dst_off"][0]): 2}


def test_a_dropped_ledger_is_freed_at_once_not_at_the_next_gc(hot_path):
    # Agents run many scenarios in one process; a ledger holds the plan's keys and rows, so a
    # reference cycle through the native fast path would keep each run's arrays until a GC.
    import gc
    import weakref

    w = _World(_plan())
    w.deliver_all()
    ref = weakref.ref(w.ledger)
    gc.disable()
    try:
        del w
        assert ref() is None
    finally:
        gc.enable()
