"""Faults: a dying or hanging decode agent, and pages damaged after placement."""
from __future__ import annotations

import time

import pytest

from pytest_kvfabric.errors import IntegrityError, TransportError
from pytest_kvfabric.fabric.local import local_pair
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.run.runner import AgentPair
from pytest_kvfabric.core.scenario import Distribution, Scenario, Workload

MIB = 1 << 20


def scenario(inject: str, **kw) -> Scenario:
    return Scenario(
        id=f"fault-{inject}", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"),
        workload=Workload(isl=Distribution.fixed(32), requests=2), pool_bytes=8 * MIB,
        transport="tcp", transport_params={"_inject": inject}, **kw,
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _assert_no_agents_left(pids: dict[str, int]) -> None:
    assert set(pids) == {"prefill", "decode"}
    for role, pid in pids.items():
        assert not _alive(pid), f"{role} agent pid {pid} still alive"


def test_decode_killed_mid_transfer_fails_with_transport_error_and_no_orphans():
    timeout_s = 20.0
    ap = AgentPair(local_pair(), timeout_s=timeout_s)
    t0 = time.monotonic()
    with pytest.raises(TransportError, match=r"decode agent \(pid \d+\) died during the run"):
        ap.run(scenario("kill"))
    assert time.monotonic() - t0 < timeout_s + 10  # bounded: never a hang
    _assert_no_agents_left(ap.pids)
    ap.close()


def test_decode_hanging_times_out_and_is_killed():
    ap = AgentPair(local_pair(), timeout_s=3.0)
    with pytest.raises(TransportError, match=r"(timed out|did not answer).*decode agent \(pid \d+\)"):
        ap.run(scenario("stall"))
    _assert_no_agents_left(ap.pids)
    ap.close()


def test_corrupted_page_raises_integrity_error_naming_request_layer_page():
    with AgentPair(local_pair(), timeout_s=30) as ap:
        with pytest.raises(IntegrityError) as info:
            ap.run(scenario("corrupt"))
        msg = str(info.value)
        assert "corrupted at byte" in msg
        assert "request " in msg and " layer " in msg and " page " in msg
        res = info.value.result
        assert res.integrity["errors"] == 1
        assert res.integrity["first_error"] in msg
        # agents survive an integrity failure and run again cleanly
        ok = ap.run(scenario("none"))
        assert ok.integrity["errors"] == 0


def test_misplaced_page_detected():
    with AgentPair(local_pair(), timeout_s=30) as ap:
        with pytest.raises(IntegrityError, match=r"misplaced page: request \d+ layer \d+ page \d+ .*landed at "
                           r"dst_off \d+, the place of request \d+ layer \d+ page \d+ .*which is lost"):
            ap.run(scenario("misplace"))


def test_dropped_page_is_named_not_only_its_request():
    with AgentPair(local_pair(), timeout_s=30) as ap:
        with pytest.raises(IntegrityError) as info:
            ap.run(scenario("drop"))
    msg = str(info.value)
    assert "1 request(s) acknowledged but not complete" in msg, msg
    assert "never placed: request " in msg and " layer " in msg and " page " in msg, msg


def test_unknown_transport_is_a_clear_error_not_a_hang():
    with AgentPair(local_pair(), timeout_s=10) as ap:
        with pytest.raises(Exception, match="transport"):
            ap.run(scenario("none").replace(transport="no-such-transport"))


def test_kv_inject_proves_the_integrity_check_catches_a_fault(pytester):
    pytester.makepyfile("def test_kv(kv_run):\n    kv_run()\n")
    res = pytester.runpytest("--kv-inject=corrupt", "-p", "no:cacheprovider")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*corrupted at byte*"])
    bad = pytester.runpytest("--kv-inject=bogus")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--kv-inject: unknown fault 'bogus'; valid: corrupt, misplace, drop, kill, stall" in bad.stderr.str()


def test_kvfabric_run_inject_drop_exits_1_naming_the_page(capsys):
    from pytest_kvfabric import cli

    rc = cli.main(["run", "--model", "llama3.1-8b", "--transport", "tcp", "--isl", "32", "--inject", "drop",
                   "--pool-mib", "8", "--timeout", "30"])
    err = capsys.readouterr().err
    assert rc == 1 and "integrity error" in err and "never placed: request 0" in err, err


def test_prefill_killed_mid_transfer_is_named_first():
    """The decode side then sees 'connection reset by peer': an effect, not the cause."""
    import os
    import signal
    import threading

    ap = AgentPair(local_pair(), timeout_s=30.0)
    sc = scenario("none").replace(workload=Workload(isl=Distribution.fixed(4096), requests=200))
    # Kill on the prefill agent's first progress report: the transfer is under way, however
    # long the agents took to start on a loaded host (a fixed sleep after the pid missed it).
    running, over = threading.Event(), threading.Event()
    ap.on_progress = lambda _p: running.set()

    def killer() -> None:
        if running.wait(timeout=120) and not over.is_set() and "prefill" in ap.pids:
            os.kill(ap.pids["prefill"], signal.SIGKILL)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    with pytest.raises(TransportError) as info:
        ap.run(sc)
    over.set()  # the run ended: a late wake-up must not act
    running.set()
    th.join(timeout=25)
    assert str(info.value).startswith("prefill agent (pid "), str(info.value)
    assert "died" in str(info.value).split(";")[0], str(info.value)
    _assert_no_agents_left(ap.pids)
    ap.close()


def test_the_dead_agent_leads_even_when_the_survivor_reports_first():
    """Deterministic form of the race above: decode's 'connection reset' is read before the
    prefill channel's close; the message must still lead with the agent that died."""
    from pytest_kvfabric.fabric.mailbox import Closed

    class Box:  # both answers already queued, decode's first
        def wait_any(self, roles, deadline):
            return True

        def has(self, role):
            return True

        def take(self, role, deadline):
            if role == "decode":
                return {"ok": False, "pid": 11, "error": "recv: [Errno 104] Connection reset by peer"}
            raise Closed("prefill", "died", "")

    ap = AgentPair(local_pair(), timeout_s=5.0)
    ap._box, ap.pids = Box(), {"prefill": 10}
    with pytest.raises(TransportError) as info:
        ap._recv_both(time.monotonic() + 5)
    msg = str(info.value)
    assert msg.startswith("prefill agent (pid 10) died during the run; decode agent reported:"), msg
    assert "Connection reset by peer" in msg
