"""End to end: two real agent processes over loopback with the tcp transport (a few MB per run)."""
from __future__ import annotations

import pytest

from pytest_kvfabric.emulator.plan import build_plan
from pytest_kvfabric.fabric.local import local_pair
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.run.runner import AgentPair, derive_timeout_s, run_scenario
from pytest_kvfabric.core.scenario import Arrival, Distribution, Scenario, Workload

MIB = 1 << 20


def scenario(**kw) -> Scenario:
    wl = dict(isl=Distribution.fixed(32), osl=Distribution.fixed(8), requests=2)
    wl.update(kw.pop("workload", {}))
    base = dict(id="e2e", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"),
                workload=Workload(**wl), pool_bytes=8 * MIB, transport="tcp", seed=11)
    base.update(kw)
    return Scenario(**base)


@pytest.fixture(scope="module")
def agents():
    with AgentPair(local_pair(), timeout_s=60) as ap:
        yield ap


def _check_complete(res, sc):
    plan = build_plan(sc)
    assert res.integrity["errors"] == 0, res.integrity
    assert res.integrity["pages_checked"] == len(plan.transfers)
    assert res.bytes == plan.total_bytes
    assert res.transfers == len(plan.transfers)
    assert res.requests == res.requests_completed == len(plan.requests)
    return plan


def test_emulated_pacing_moves_every_byte_and_reports_all_keys(agents):
    sc = scenario()
    res = agents.run(sc)
    _check_complete(res, sc)
    d = res.to_dict()
    for key in ("throughput_gbps", "latency_us", "exposed_ms", "cpu_s_per_gb", "integrity",
                "data_path", "bytes", "transfers", "post_lateness_us", "ttft_ms", "tpot_ms"):
        assert key in d
    assert set(d["latency_us"]) == {"p50", "p90", "p99", "p999", "max"}
    assert d["latency_us"]["p50"] > 0 and d["throughput_gbps"] > 0
    assert d["post_lateness_us"]["p50"] is not None
    assert d["post_call_us"]["p50"] > 0 and d["post_call_us"]["max"] >= d["post_call_us"]["p99"]
    assert d["data_path"]["sender"]["transport"] == "tcp"
    assert d["data_path"]["receiver"]["bytes_placed"] == res.bytes
    assert d["cpu_s_per_gb"]["sender"] > 0 and d["cpu_s_per_gb"]["receiver"] > 0
    assert d["connect_ms"] > 0 and d["register_ms"] > 0
    assert d["pair"] == "local" and d["model"] == "llama3.1-8b"
    assert d["notifications"] == res.requests  # one per request, on its last write


def test_default_run_reports_the_native_hot_path_where_it_is_built(agents):
    from pytest_kvfabric.endpoint import slotbook

    want = "native" if slotbook.NativeSlotBook is not None else "python"
    res = agents.run(scenario())
    dp = res.to_dict()["data_path"]
    assert (dp["sender"]["hot_path"], dp["receiver"]["hot_path"]) == (want, want)


@pytest.mark.parametrize("pace", ["emulated", "none"])
def test_python_hot_path_moves_and_verifies_every_byte_the_same_way(pace):
    # The Python twin of the native bookkeeping runs end to end in real agents, on a pool
    # small enough that slots are reused (the slot rule must hold), and is reported as such.
    sc = scenario(pacing=pace, pool_bytes=2 * MIB, workload={"requests": 3})
    res = run_scenario(sc, timeout_s=60, options={"hot_path": "python"})
    _check_complete(res, sc)
    dp = res.to_dict()["data_path"]
    assert (dp["sender"]["hot_path"], dp["receiver"]["hot_path"]) == ("python", "python")


def test_an_unknown_hot_path_option_is_a_clear_error():
    from pytest_kvfabric.errors import TransportError

    with pytest.raises(TransportError, match="hot_path 'fast': expected one of native, python"):
        run_scenario(scenario(), timeout_s=60, options={"hot_path": "fast"})


def test_pacing_none_moves_the_same_bytes(agents):
    sc = scenario(pacing="none")
    res = agents.run(sc)
    _check_complete(res, sc)
    assert res.post_lateness_us["p99"] is None  # no ready times to be late against


def test_ttft_includes_emulated_prefill(agents):
    sc = scenario(slo={"ttft_budget_ms": 1e6})
    res = agents.run(sc)
    plan = _check_complete(res, sc)
    prefill_ms = plan.requests["prefill_ns"].min() / 1e6
    assert res.ttft_ms["p50"] >= prefill_ms
    assert res.exposed_ms["p50"] >= 0
    assert res.ttft_met_fraction == 1.0


def test_closed_loop_concurrency(agents):
    sc = scenario(workload=dict(requests=4, arrival=Arrival(kind="closed", concurrency=2)))
    res = agents.run(sc)
    _check_complete(res, sc)


def test_open_loop_poisson(agents):
    sc = scenario(workload=dict(requests=3, arrival=Arrival(kind="poisson", rate_per_s=100.0)))
    res = agents.run(sc)
    _check_complete(res, sc)


def test_bounded_pool_smaller_than_a_request_reuses_slots(agents):
    sc = scenario(pool_bytes=1 * MIB, workload=dict(isl=Distribution.fixed(64), requests=2))
    plan = build_plan(sc)
    assert plan.src_region_bytes < int(plan.requests["nbytes"].max())  # precondition: slots reused
    res = agents.run(sc)
    _check_complete(res, sc)


def test_agents_are_reused_across_runs(agents):
    agents.run(scenario(seed=1))
    pids = dict(agents.pids)
    agents.run(scenario(seed=2))
    assert agents.pids == pids and len(pids) == 2 and pids["prefill"] != pids["decode"]


def test_run_scenario_one_shot_and_derived_timeout():
    sc = scenario(workload=dict(requests=1))
    plan = build_plan(sc)
    assert derive_timeout_s(plan) >= plan.total_bytes / 100e6
    res = run_scenario(sc)
    _check_complete(res, sc)


@pytest.mark.parametrize("seed", [1, 2])
def test_parallel_connections_reusing_slots_verify_clean(agents, seed):
    # Two connections can place a slot's next page before the previous one is reported:
    # the decode side must still attribute and verify both.
    sc = scenario(pacing="none", pool_bytes=1 * MIB, seed=seed, transport_params={"connections": 2},
                  workload=dict(isl=Distribution.fixed(64), requests=2))
    res = agents.run(sc)
    _check_complete(res, sc)
    assert res.data_path["sender"]["connections"] == 2


# --- the prefill pacing loop against a fake initiator (no sockets) -------------------------

import numpy as np  # noqa: E402

from pytest_kvfabric.emulator.plan import REQUEST_DTYPE, TRANSFER_DTYPE, TransferPlan  # noqa: E402
from pytest_kvfabric.endpoint import pattern  # noqa: E402
from pytest_kvfabric.endpoint.prefill import PrefillOptions, run_prefill  # noqa: E402
from pytest_kvfabric.transports.base import COMPLETION_DTYPE  # noqa: E402
from prefill_harness import record_stamps  # noqa: E402


class _SlowInitiator:
    """Completes the oldest in-flight write on each poll and checks the slot rule on each post."""

    def __init__(self, src_region: np.ndarray, keys: np.ndarray, plan: TransferPlan) -> None:
        self.inflight: list[tuple[int, int, int, int, int]] = []
        self.posted: list[int] = []
        self.violations: list[str] = []
        self.src, self.keys, self.plan = src_region, keys, plan

    def post(self, batch, timeout_s):
        for x, s, d, n in zip(batch["xfer"].tolist(), batch["src_off"].tolist(),
                              batch["dst_off"].tolist(), batch["nbytes"].tolist()):
            for (y, s2, d2, n2, _) in self.inflight:
                if s < s2 + n2 and s2 < s + n:
                    self.violations.append(f"src overlap {x} with {y}")
                if d < d2 + n2 and d2 < d + n:
                    self.violations.append(f"dst overlap {x} with {y}")
            # the keys are stamped before the post
            assert self.src[s:s + 8].tobytes() == self.keys[x][:8].tobytes()
            self.inflight.append((x, s, d, n, 0))
            self.posted.append(x)

    def poll(self, timeout_s):
        out = np.zeros(min(len(self.inflight), 1), COMPLETION_DTYPE)
        if self.inflight:
            out["xfer"] = self.inflight.pop(0)[0]
            out["t_ns"] = __import__("time").monotonic_ns()
        return out

    def outstanding(self):
        return len(self.inflight)


def _reuse_plan(requests: int = 3, pages: int = 12, slots: int = 4, page: int = 256) -> TransferPlan:
    n = requests * pages
    t = np.zeros(n, TRANSFER_DTYPE)
    idx = np.arange(n)
    t["request"] = idx // pages
    t["block"] = idx % pages
    t["layer"] = (idx % pages) // 2
    t["src_off"] = (idx % slots) * page
    t["dst_off"] = ((idx + 1) % slots) * page
    t["nbytes"] = page
    t["ready_ns"] = (idx % pages) // 2 * 200_000
    r = np.zeros(requests, REQUEST_DTYPE)
    r["request"] = np.arange(requests)
    r["first"] = np.arange(requests) * pages
    r["count"] = pages
    r["nbytes"] = pages * page
    r["prefill_ns"] = (pages // 2 - 1) * 200_000
    return TransferPlan(t, r, 1, 1, slots * page, slots * page, page, page)


@pytest.mark.parametrize("pacing", ["emulated", "none"])
@pytest.mark.parametrize("closed_loop", [True, False])
def test_prefill_loop_never_reuses_a_busy_slot_and_posts_every_row(pacing, closed_loop):
    plan = _reuse_plan()
    keys = pattern.row_keys(5, plan.transfers)
    src = pattern.base_pattern(5, plan.src_region_bytes).copy()
    ini = _SlowInitiator(src, keys, plan)
    m = run_prefill(plan, ini, src, keys, PrefillOptions(pacing=pacing, closed_loop=closed_loop,
                                                         concurrency=2, max_inflight=8, timeout_s=30))
    assert ini.violations == []
    assert sorted(ini.posted) == list(range(len(plan.transfers)))
    assert (m["done_ns"] >= m["post_ns"]).all() and (m["post_ns"] > 0).all()
    assert m["requests_completed"] == len(plan.requests)
    if pacing == "emulated":
        # never posted before its layer was ready
        ready = m["req_start_ns"][plan.transfers["request"].astype(int)] + plan.transfers["ready_ns"].astype(np.int64)
        assert (m["post_ns"] >= ready).all()
        # requests queue on the one emulated prefill GPU
        starts = np.sort(m["req_start_ns"])
        assert (np.diff(starts) >= plan.requests["prefill_ns"][0]).all()


def test_spin_window_follows_the_tail_of_wakeup_overshoot():
    from pytest_kvfabric.endpoint.prefill import MAX_SPIN_NS, SPIN_NS, SpinWindow

    w = SpinWindow()
    for _ in range(1000):  # a quiet host: wake-ups on time (or early)
        w.note(-1_000)
        w.note(5_000)
    assert w.ns == SPIN_NS + 5_000
    w.note(600_000)  # one late wake-up (a p99 event on a virtual host) widens the window at once
    assert w.ns == SPIN_NS + 600_000
    for _ in range(100):  # ... and it still counts 100 on-time wake-ups later
        w.note(0)
    assert SPIN_NS + 300_000 < w.ns < SPIN_NS + 600_000
    for _ in range(3000):  # long quiet: back to the floor
        w.note(0)
    assert w.ns == SPIN_NS
    w.note(50_000_000)  # never more than the cap
    assert w.ns == MAX_SPIN_NS


class _LaggingInitiator(_SlowInitiator):
    """Completes nothing until 3 ms after a post, recording every poll timeout it is given."""

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self.timeouts: list[float] = []

    def post(self, batch, timeout_s):
        super().post(batch, timeout_s)
        self.due = __import__("time").monotonic_ns() + 3_000_000

    def poll(self, timeout_s):
        import time

        self.timeouts.append(timeout_s)
        if self.inflight and time.monotonic_ns() >= self.due:
            return super().poll(timeout_s)
        time.sleep(min(timeout_s, 0.0005))
        return np.zeros(0, COMPLETION_DTYPE)


def test_pacing_loop_asks_epoll_for_whole_milliseconds_only():
    # epoll rounds a timeout up to whole milliseconds (poll(300 µs) sleeps ~1.1 ms), so the
    # pacing loop must never hand the initiator a fractional-millisecond wait while writes
    # are in flight: it asks for the whole milliseconds and spins the rest.
    plan = _reuse_plan(requests=2, pages=12, slots=4)
    keys = pattern.row_keys(5, plan.transfers)
    src = pattern.base_pattern(5, plan.src_region_bytes).copy()
    ini = _LaggingInitiator(src, keys, plan)
    m = run_prefill(plan, ini, src, keys, PrefillOptions(pacing="emulated", concurrency=2,
                                                         max_inflight=8, timeout_s=30))
    assert m["requests_completed"] == len(plan.requests)
    waits = [t for t in ini.timeouts if t > 0]
    assert ini.timeouts and all(abs(t * 1e3 - round(t * 1e3)) < 1e-9 for t in ini.timeouts), waits[:10]


def _record_stamps(monkeypatch) -> dict[int, int]:
    """Record when the prefill loop first stamped each row (wall clock, as the loop's)."""
    import time

    return record_stamps(monkeypatch, time.monotonic_ns)


def _ready_abs(plan: TransferPlan, m) -> np.ndarray:
    T = plan.transfers
    return m["req_start_ns"][T["request"].astype(int)] + T["ready_ns"].astype(np.int64)


def test_pacing_stages_a_group_before_its_ready_time_and_posts_it_no_earlier(monkeypatch):
    # Stamping and building a group's batch happen before its ready time (they are tens of
    # µs of Python that would otherwise all be post lateness); the post itself never
    # comes before the ready time.
    stamped = _record_stamps(monkeypatch)
    plan = _reuse_plan(requests=2, pages=12, slots=12)
    keys = pattern.row_keys(5, plan.transfers)
    src = pattern.base_pattern(5, plan.src_region_bytes).copy()
    ini = _SlowInitiator(src, keys, plan)  # also asserts every posted row is stamped
    m = run_prefill(plan, ini, src, keys, PrefillOptions(pacing="emulated", max_inflight=8, timeout_s=30))
    assert ini.violations == [] and m["requests_completed"] == len(plan.requests)
    ready = _ready_abs(plan, m)
    st = np.array([stamped[i] for i in range(len(plan.transfers))])
    assert (m["post_ns"] >= ready).all()
    assert (st <= m["post_ns"]).all()
    assert (st < ready).any(), "no group was staged ahead of its ready time"


def test_a_group_that_cannot_be_staged_waits_for_its_slot_and_is_not_posted_early(monkeypatch):
    # Rows 4-5 reuse the source slots of rows 0-1, which the initiator completes only 3 ms
    # after their post: staging them ahead of time must not claim the slot, and once the
    # slot is free they go out (after their ready time, never before it).
    stamped = _record_stamps(monkeypatch)
    plan = _reuse_plan(requests=1, pages=12, slots=4)
    keys = pattern.row_keys(5, plan.transfers)
    src = pattern.base_pattern(5, plan.src_region_bytes).copy()
    ini = _LaggingInitiator(src, keys, plan)
    m = run_prefill(plan, ini, src, keys, PrefillOptions(pacing="emulated", max_inflight=8, timeout_s=30))
    assert ini.violations == [] and sorted(ini.posted) == list(range(12))
    ready = _ready_abs(plan, m)
    assert (m["post_ns"] >= ready).all()
    assert m["post_ns"][4] >= m["done_ns"][0] and m["post_ns"][5] >= m["done_ns"][1]
    assert stamped[4] >= m["done_ns"][0], "row 4 was stamped while row 0 still read its source slot"
