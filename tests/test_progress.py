"""Progress on long work: a terminal sees one rewritten line, a pipe sees nothing; a long plan is announced."""
from __future__ import annotations

import io
import subprocess
import sys

from pytest_kvfabric.commands.run import LONG_RUN_S, predicted_notice, predicted_s, progress_line
from pytest_kvfabric.core.profiles import load_gpu, load_model
from pytest_kvfabric.harness.progress import Progress, eta_s, human_bytes, human_seconds
from pytest_kvfabric.run.runner import AgentPair
from pytest_kvfabric.core.scenario import Deployment, Distribution, Scenario, Synthetic, Workload


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_nothing_and_a_terminal_one_line():
    piped = io.StringIO()
    p = Progress(piped)
    p.update("requests 1/2", force=True)
    p.close()
    assert piped.getvalue() == "" and not p.enabled
    tty = Tty()
    p = Progress(tty)
    p.update("requests 1/2, long text", force=True)
    p.update("short", force=True)
    p.close()
    out = tty.getvalue()
    assert out.startswith("\rrequests 1/2, long text") and "\rshort" in out and out.endswith("\r")
    assert "\n" not in out  # one line, rewritten


def test_eta_and_units():
    assert eta_s(25, 100, 10.0) == 30.0 and eta_s(0, 100, 5.0) is None
    assert human_seconds(3725) == "1 h 02 min" and human_seconds(75) == "1 min 15 s" and human_seconds(4.4) == "4 s"
    assert human_bytes(17.2e9) == "17.2 GB" and human_bytes(999) == "999 B"
    line = progress_line({"requests_done": 1, "requests": 4, "bytes_done": 1e9, "bytes_total": 4e9, "elapsed_s": 10.0})
    assert line == "requests 1/4, 1 GB of 4 GB moved, about 30 s left"


def _scenario(**kw):
    return Scenario(id="p", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), **kw)


def test_a_plan_of_minutes_is_announced_and_a_short_one_is_not():
    big_pages = Deployment(page_size=1024, access="block")  # few plan rows: a fast plan of a long run
    # 1024-token blocks are 128 MiB each: the pool must hold 2 (the default pool is 64 MiB)
    long = _scenario(workload=Workload(isl=Distribution.fixed(131072), requests=64), prefill=big_pages,
                     decode=big_pages, pool_bytes=256 << 20)
    secs, nbytes, nreq = predicted_s(long)
    assert secs >= LONG_RUN_S and nreq == 64 and nbytes > 0
    note = predicted_notice(long)
    assert note and "expect at least" in note and "64 request(s)" in note
    assert predicted_notice(_scenario()) is None


def test_the_prefill_agent_reports_progress_while_it_runs():
    # 40 writes, one every 30 ms: the run lasts about 1.2 s, long enough for reports every 0.5 s.
    sc = _scenario(synthetic=Synthetic(nbytes=65536, transfers=40, batch=1, interval_us=30000),
                   pool_bytes=8 << 20)
    seen: list[dict] = []
    with AgentPair(None, 60) as agents:
        agents.on_progress = seen.append
        result = agents.run(sc)
    assert result.ok and result.transfers == 40
    assert seen, "no progress report during a 1.2 s run"
    done = [p["bytes_done"] for p in seen]
    assert done == sorted(done) and all(0 <= b <= 40 * 65536 == p["bytes_total"] for b, p in zip(done, seen))
    assert all(p["requests"] == 1 for p in seen)


def test_kvfabric_run_piped_prints_no_progress():
    out = subprocess.run([sys.executable, "-m", "pytest_kvfabric.cli", "run", "--model", "llama3.1-8b", "--transport",
                          "tcp", "--isl", "256", "--pace", "none"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout + out.stderr and "requests" in out.stdout
