"""Helpers shared by the benchmark scripts: peer processes with timeouts, interleaved
rounds, medians and spreads, ratio tables, CPU accounting, environment facts.

Every process started here runs in its own session and is killed (SIGTERM, then SIGKILL
after a grace period) in a `finally`, so a benchmark that fails or is interrupted leaves
no orphan. Throughput is decimal: GB/s = 1e9 bytes per second.
"""
from __future__ import annotations

import json
import math
import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable
KILL_GRACE_S = 1.0
# Mooncake's wheel links libibverbs/librdmacm/libnl at load time even in TCP mode; when the
# system lacks them, bench_mooncake.py unpacks Debian's packages here (never system-wide).
MOONCAKE_LIBDIR = Path(os.environ.get("KVF_BENCH_LIBDIR", "/tmp/kvfabric-bench-libs"))

# Measure the checkout these scripts live in (also in the agents run_scenario starts, which
# inherit PYTHONPATH), not whatever copy of the package happens to be installed.
if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))


# ---------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def env_info() -> dict[str, Any]:
    """Facts every figure needs next to it (date, kernel, CPU, load)."""
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "kernel": platform.release(),
        "cpu": cpu_model(),
        "ncpu": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "git": git_state(),
    }


def git_state() -> dict[str, Any]:
    """Commit and uncommitted changes under the package: figures measure the working tree."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    commit = git("rev-parse", "--short", "HEAD").strip()
    if not commit:  # an exported snapshot (git archive): the caller names the commit
        return {"commit": os.environ.get("KVF_BENCH_COMMIT", "unknown"), "modified": []}
    dirty = [l[3:] for l in git("status", "--porcelain", "--", "pytest_kvfabric").splitlines()
             if l[:2].strip() == "M"]
    return {"commit": commit, "modified": dirty}


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (only for tools that need a number)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def netns_prefix(netns: str | None, cpus: Sequence[int] | None = None) -> list[str]:
    """argv prefix that runs a command inside `netns` (None: here), on `cpus` only when given."""
    pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
    return (["ip", "netns", "exec", netns] if netns else []) + pin


# ---------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------

class Peer:
    """A child process in its own session; stdout is read line by line with a timeout."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 name: str | None = None, merge_stderr: bool = False) -> None:
        self.argv = list(argv)
        self.name = name or os.path.basename(self.argv[0])
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True, start_new_session=True, env=dict(env) if env is not None else None,
        )
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buf = ""

    def readline(self, timeout_s: float) -> str:
        """The next stdout line; RuntimeError (with stderr) on timeout or exit."""
        deadline = time.monotonic() + timeout_s
        while "\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.name}: no output within {timeout_s} s; {self._stderr_tail()}")
            if self._sel.select(remaining):
                chunk = self.proc.stdout.read()
                if chunk == "":  # EOF: the process ended
                    if self._buf:
                        break
                    self.proc.wait(timeout=KILL_GRACE_S)
                    raise RuntimeError(
                        f"{self.name}: exited with {self.proc.returncode} before printing a line; "
                        f"{self._stderr_tail()}"
                    )
                self._buf += chunk or ""
        line, _, self._buf = self._buf.partition("\n")
        return line

    def read_json(self, timeout_s: float) -> dict[str, Any]:
        """The next stdout line that parses as a JSON object (tools may print banners)."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.readline(max(deadline - time.monotonic(), 0.001)).strip()
            if line.startswith("{"):
                return json.loads(line)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.name}: still running after {timeout_s} s") from None

    def _stderr_tail(self, nchars: int = 600) -> str:
        if self.proc.poll() is None:
            return "stderr not available while running"
        try:
            err = self.proc.stderr.read() if self.proc.stderr else ""
        except (OSError, ValueError):
            err = ""
        err = (err or "").strip()
        return f"stderr: {err[-nchars:]}" if err else "no stderr"

    def kill(self) -> None:
        """SIGTERM the session, SIGKILL after a grace period; reap."""
        p = self.proc
        if p.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    p.wait(timeout=KILL_GRACE_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                if f:
                    f.close()
            except (OSError, BrokenPipeError):
                pass
        self._sel.close()
        try:
            p.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def peer(argv: Sequence[str], env: Mapping[str, str] | None = None,
         name: str | None = None, merge_stderr: bool = False) -> Iterator[Peer]:
    p = Peer(argv, env=env, name=name, merge_stderr=merge_stderr)
    try:
        yield p
    finally:
        p.kill()


def run_tool(argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None,
             merge_stderr: bool = False) -> str:
    """Run a command to completion (own session, killed on timeout); return stdout."""
    with peer(argv, env=env, merge_stderr=merge_stderr) as p:
        try:
            out, err = p.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{p.name}: timed out after {timeout_s} s: {' '.join(argv)}") from None
        if p.proc.returncode != 0:
            raise RuntimeError(
                f"{p.name} exited {p.proc.returncode}: {(err or out).strip()[-600:]}"
            )
        return out


def wait_listening(host: str, port: int, timeout_s: float, netns: str | None = None) -> None:
    """Until a socket listens on the port (asked of `ss`, never by connecting: a probe
    connection would use up a one-shot server such as `iperf3 -s -1`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run(
            netns_prefix(netns) + ["ss", "-Htln", f"sport = :{port}"],
            capture_output=True, text=True, timeout=5,
        ).stdout
        if out.strip():
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout_s} s")


def peer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for our Python peers: the repo importable, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # as our agents: no BLAS work, no spinning BLAS threads
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------------------
# CPU accounting (inside peers)
# ---------------------------------------------------------------------------------------

def cpu_s() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    t = os.times()
    return t.user + t.system


def cpu_s_per_gb(cpu_seconds: float, nbytes: int) -> float:
    return cpu_seconds / (nbytes / 1e9) if nbytes else float("nan")


# ---------------------------------------------------------------------------------------
# rounds, medians, ratios
# ---------------------------------------------------------------------------------------

def interleave(rounds: int, contenders: Mapping[str, Callable[[], dict[str, Any]]],
               log: Callable[[str], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run every contender once per round, rotating the order each round so neither side
    always runs first (caches, CPU frequency, a neighbour's load burst)."""
    names = list(contenders)
    out: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            res = contenders[name]()
            res.setdefault("round", r)
            out[name].append(res)
            if log:
                log(f"round {r + 1}/{rounds} {name}: " + _brief(res))
    return out


def _brief(res: Mapping[str, Any]) -> str:
    keys = [k for k, v in res.items() if isinstance(v, (int, float)) and k != "round"][:4]
    return ", ".join(f"{k}={res[k]:.4g}" for k in keys)


def summary(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v == v]  # drop NaN
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": vals,
    }


CI_LEVEL = 0.90  # confidence asked of a verdict (see median_ci)


def median_ci(values: Sequence[float], level: float = CI_LEVEL) -> dict[str, Any]:
    """Distribution-free confidence interval of a median from order statistics.

    [x_(k), x_(n+1-k)] covers the true median with probability 1 - 2 P(Binomial(n, 1/2) < k),
    whatever the distribution (rounds on a noisy host are neither normal nor equal-variance).
    Takes the narrowest such interval whose coverage is at least `level`; with too few
    values for that, [min, max] and the (lower) coverage it actually has."""
    xs = sorted(float(v) for v in values if v == v)
    n = len(xs)
    if not n:
        return {"lo": float("nan"), "hi": float("nan"), "coverage": 0.0, "n": 0, "level": level}
    total = 2 ** n  # exact integers: 0.5 ** n would underflow for large n
    below = 0  # 2^n P(Binomial(n, 1/2) < k), k = 1, 2, ...
    k, coverage = 1, 1.0 - 2 / total
    while True:
        below += math.comb(n, k - 1)
        nxt = 1.0 - 2 * (below + math.comb(n, k)) / total
        if k + 1 > (n + 1) // 2 or nxt < level:
            break
        k, coverage = k + 1, nxt
    return {"lo": xs[k - 1], "hi": xs[n - k], "coverage": coverage, "n": n, "level": level}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (q in 0..100)."""
    vals = sorted(values)
    if not vals:
        return float("nan")
    pos = (len(vals) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def column(results: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in results if key in r and r[key] is not None]


def ratio_row(label: str, ours: Sequence[float], ref: Sequence[float], *, unit: str,
              target: float | None, higher_is_better: bool = True, ref_label: str = "") -> dict[str, Any]:
    """One line of a comparison: medians of both, ratio of medians, the median of the
    per-round ratios (paired: the verdict), and whether it meets the target.
    The ratio is always ours / ref: a lower bound for throughput, an upper bound for latency."""
    so, sr = summary(ours), summary(ref)
    ratio = so["median"] / sr["median"] if sr["median"] else float("nan")
    paired = [o / r for o, r in zip(ours, ref) if r]
    sp = summary(paired)
    # The verdict uses the median of the per-round ratios (each round runs both sides back to
    # back, so a burst of load from the shared host hits one round, not one side's median).
    verdict = sp["median"] if sp["n"] else ratio
    ci = median_ci(paired)
    if target is None:  # context row (e.g. CPU cost): no target to meet
        ok = None
        decided = None
    else:
        ok = (verdict >= target) if higher_is_better else (verdict <= target)
        # Does the whole confidence interval of that median lie on one side of the target?
        good_lo = ci["lo"] >= target if higher_is_better else ci["hi"] <= target
        bad_hi = ci["hi"] < target if higher_is_better else ci["lo"] > target
        decided = ("met" if good_lo and ci["coverage"] >= CI_LEVEL else
                   "missed" if bad_hi and ci["coverage"] >= CI_LEVEL else "undecided")
    return {
        "label": label,
        "unit": unit,
        "ref_label": ref_label,
        "ours": so,
        "ref": sr,
        "ratio": ratio,
        "paired_ratio": sp,
        "target": target,
        "target_op": ">=" if higher_is_better else "<=",
        "met": None if ok is None else (bool(ok) if verdict == verdict else False),
        # The median's confidence interval and what it decides: "met" / "missed" only when the
        # whole interval is on one side of the target, else "undecided" (host noise or too
        # few rounds to tell).
        "paired_ratio_ci": ci,
        "decided": decided,
    }


def _fmt(x: float, nd: int = 3) -> str:
    if x != x:
        return "n/a"
    return f"{x:.{nd}f}" if abs(x) < 1000 else f"{x:.0f}"


def decided_text(r: Mapping[str, Any], emphasis: str = "") -> str:
    """'[lo-hi]: verdict' of a target row ('-' for context rows and JSON from before the CI);
    a verdict other than met is wrapped in `emphasis` (markdown bold in BENCHMARKS.md)."""
    ci, d = r.get("paired_ratio_ci"), r.get("decided")
    if not ci or not ci.get("n") or d is None:
        return "-"
    cov = "" if ci["coverage"] >= ci.get("level", CI_LEVEL) else f" (only {ci['coverage']:.0%}: too few rounds)"
    word = d if d == "met" else f"{emphasis}{d}{emphasis}"
    return f"[{_fmt(ci['lo'], 2)}-{_fmt(ci['hi'], 2)}]{cov}: {word}"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Our figure, the reference figure and the ratio, with spreads (min-max over rounds)."""
    head = ["comparison", "unit", "ours median [min-max]", "reference median [min-max]",
            "ratio of medians", "per-round ratio median [min-max]", "target", "met",
            f"{CI_LEVEL:.0%} CI of that median: verdict"]
    lines = []
    for r in rows:
        o, f, p = r["ours"], r["ref"], r["paired_ratio"]
        lines.append([
            r["label"],
            r["unit"],
            f"{_fmt(o['median'])} [{_fmt(o['min'])}-{_fmt(o['max'])}]",
            (f"{r['ref_label']}: " if r.get("ref_label") else "")
            + f"{_fmt(f['median'])} [{_fmt(f['min'])}-{_fmt(f['max'])}]",
            _fmt(r["ratio"], 2),
            f"{_fmt(p['median'], 2)} [{_fmt(p['min'], 2)}-{_fmt(p['max'], 2)}]",
            f"{r['target_op']} {r['target']}" if r["target"] is not None else "-",
            "-" if r["met"] is None else ("yes" if r["met"] else "NO"),
            decided_text(r),
        ])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*l) for l in lines]
    return "\n".join(out)


def emit(name: str, rows: Sequence[Mapping[str, Any]], raw: Mapping[str, Any], env_start: Mapping[str, Any],
         as_json: bool, notes: Sequence[str] = ()) -> None:
    """Print the table (and notes), or one JSON document with everything."""
    env = dict(env_start)
    env["loadavg_end"] = list(os.getloadavg())
    if as_json:
        json.dump({"benchmark": name, "env": env, "rows": list(rows), "raw": raw, "notes": list(notes)},
                  sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    print(f"# {name}  {env['date_utc']} UTC  kernel {env['kernel']}  {env['cpu']} x{env['ncpu']}  "
          f"load {env['loadavg'][0]:.2f} -> {env['loadavg_end'][0]:.2f}  git {env['git']['commit']}"
          + (f" (+ uncommitted: {', '.join(env['git']['modified'])})" if env["git"]["modified"] else ""))
    print(format_table(rows))
    for n in notes:
        print(f"note: {n}")


def log(msg: str) -> None:
    """Progress on stderr, so --json stdout stays clean."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# reference tools: iperf3, sockperf
# ---------------------------------------------------------------------------------------

def iperf3_throughput(server_addr: str, *, length: str = "1M", seconds: float = 2.0,
                      server_netns: str | None = None, client_netns: str | None = None,
                      port: int | None = None, cpus: Sequence[int] | None = None) -> dict[str, Any]:
    """One iperf3 single-stream run: receiver-side GB/s and both sides' CPU s/GB (both ends on
    `cpus` when given)."""
    port = port or free_port()
    srv = netns_prefix(server_netns, cpus) + ["iperf3", "-s", "-1", "-B", server_addr, "-p", str(port)]
    with peer(srv, name="iperf3-server"):
        wait_listening(server_addr, port, 5.0, netns=server_netns)
        out = run_tool(
            netns_prefix(client_netns, cpus)
            + ["iperf3", "-c", server_addr, "-p", str(port), "-l", length, "-t", f"{seconds:g}",
               "-J", "-P", "1"],
            timeout_s=seconds + 15,
        )
    doc = json.loads(out)
    end = doc["end"]
    recv = end["sum_received"]
    nbytes = int(recv["bytes"])
    secs = float(recv["seconds"])
    cpu = end.get("cpu_utilization_percent", {})
    sender_cpu = cpu.get("host_total", float("nan")) / 100.0 * secs
    receiver_cpu = cpu.get("remote_total", float("nan")) / 100.0 * secs
    return {
        "gbps_bytes": nbytes / secs / 1e9,  # decimal GB/s
        "bytes": nbytes,
        "seconds": secs,
        "cpu_s_per_gb_sender": cpu_s_per_gb(sender_cpu, nbytes),
        "cpu_s_per_gb_receiver": cpu_s_per_gb(receiver_cpu, nbytes),
        "retransmits": end.get("sum_sent", {}).get("retransmits"),
    }


def parse_sockperf(text: str) -> dict[str, float]:
    """sockperf ping-pong output -> half-round-trip latency percentiles in µs."""
    import re

    out: dict[str, float] = {}
    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for m in re.finditer(r"percentile\s+([\d.]+)\s*=\s*([\d.]+)", clean):
        out[f"p{float(m.group(1)):g}"] = float(m.group(2))
    m = re.search(r"avg-latency=([\d.]+)", clean)
    if m:
        out["avg"] = float(m.group(1))
    m = re.search(r"<MIN> observation\s*=\s*([\d.]+)", clean)
    if m:
        out["min"] = float(m.group(1))
    m = re.search(r"<MAX> observation\s*=\s*([\d.]+)", clean)
    if m:
        out["max"] = float(m.group(1))
    m = re.search(r"Total (\d+) observations", clean)
    if m:
        out["observations"] = float(m.group(1))
    if "p50" not in out:
        raise RuntimeError(f"sockperf output has no 50th percentile: {clean.strip()[-400:]}")
    return out


def sockperf_rtt(server_addr: str, *, msg_bytes: int = 4096, seconds: float = 2.0,
                 server_netns: str | None = None, client_netns: str | None = None) -> dict[str, Any]:
    """sockperf TCP ping-pong; returns its half-RTT percentiles and rtt_p50_us = 2 x p50."""
    port = free_port()
    srv = netns_prefix(server_netns) + ["sockperf", "server", "--tcp", "-i", server_addr, "-p", str(port)]
    with peer(srv, name="sockperf-server"):
        wait_listening(server_addr, port, 5.0, netns=server_netns)
        out = run_tool(
            netns_prefix(client_netns)
            + ["sockperf", "ping-pong", "--tcp", "-i", server_addr, "-p", str(port),
               "-m", str(msg_bytes), "-t", str(max(1, math.ceil(seconds)))],  # sockperf takes whole seconds
            timeout_s=seconds + 15,
        )
    half = parse_sockperf(out)
    return {
        "rtt_p50_us": 2 * half["p50"],
        "rtt_p99_us": 2 * half.get("p99", float("nan")),
        "half_rtt_us": half,
    }


# ---------------------------------------------------------------------------------------
# our transport, alone, in two processes
# ---------------------------------------------------------------------------------------

def transport_pair(*, transport: str = "tcp", mode: str = "throughput", nbytes: int = 1 << 20,
                   batch: int = 8, window_bytes: int = 32 << 20, seconds: float = 2.0,
                   warmup_s: float = 0.3, connections: int = 1,
                   target_addr: str = "127.0.0.1", target_netns: str | None = None,
                   initiator_netns: str | None = None, region_bytes: int = 64 << 20,
                   profile_dir: str | None = None,
                   options: Mapping[str, Any] | None = None, op: str = "write",
                   cpus: Sequence[int] | None = None) -> dict[str, Any]:
    """Target and initiator of a registered transport in two processes (pacing none).
    Returns the initiator's figures plus the target's CPU s/GB. With profile_dir, each peer
    runs under `py-spy record` (collapsed stacks: <dir>/target.txt, <dir>/initiator.txt);
    with cpus, both peers run on those CPUs (taskset)."""
    script = str(BENCH_DIR / "_peer_transport.py")

    def spy(role: str) -> list[str]:
        if not profile_dir:
            return []
        os.makedirs(profile_dir, exist_ok=True)
        return ["py-spy", "record", "--nonblocking", "-r", "400", "-f", "raw",
                "-o", os.path.join(profile_dir, f"{role}.txt"), "--"]

    common = ["--transport", transport, "--region-bytes", str(region_bytes),
              "--token", os.urandom(8).hex()]
    for k, v in (options or {}).items():
        common += ["--opt", f"{k}={json.dumps(v)}"]
    budget = warmup_s + seconds + 20
    env = peer_env()
    with peer(netns_prefix(target_netns, cpus) + spy("target") + [PYTHON, script, "target", "--bind", target_addr,
                                            "--timeout", f"{budget:g}"] + common,
              env=env, name=f"{transport}-target") as tgt:
        desc = tgt.read_json(15.0)["descriptor"]
        with peer(netns_prefix(initiator_netns, cpus) + spy("initiator")
                  + [PYTHON, script, "initiator", "--desc", json.dumps(desc), "--mode", mode,
                     "--nbytes", str(nbytes), "--batch", str(batch),
                     "--window-bytes", str(window_bytes), "--seconds", f"{seconds:g}",
                     "--warmup", f"{warmup_s:g}", "--connections", str(connections), "--op", op] + common,
                  env=env, name=f"{transport}-initiator") as ini:
            res = ini.read_json(budget)
            ini.wait(15.0)
        tres = tgt.read_json(15.0)
        if profile_dir:
            tgt.wait(15.0)  # let py-spy write its file
    res["cpu_s_per_gb_receiver"] = tres["cpu_s_per_gb"]
    res["target_bytes"] = tres["bytes"]
    res["target_acks"] = tres.get("acks_sent")
    res["target_writes"] = tres.get("writes_placed")
    return res


# ---------------------------------------------------------------------------------------
# our whole path: run_scenario (two agents, pattern fill, verification)
# ---------------------------------------------------------------------------------------

def synthetic_scenario(*, nbytes: int, transfers: int, batch: int = 8, requests: int = 1,
                       interval_us: float = 0.0, pacing: str = "none", verify: bool = True,
                       pool_bytes: int = 64 << 20, transport: str = "tcp",
                       transport_params: Mapping[str, Any] | None = None, seed: int = 1):
    from pytest_kvfabric.core.profiles import load_gpu, load_model
    from pytest_kvfabric.core.scenario import Scenario, Synthetic

    return Scenario(
        id=f"bench-{transport}-{nbytes}-{pacing}", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"),
        pacing=pacing, pool_bytes=pool_bytes, verify=verify, seed=seed, transport=transport,
        transport_params=dict(transport_params or {}),
        synthetic=Synthetic(nbytes=nbytes, transfers=transfers, batch=batch, requests=requests,
                            interval_us=interval_us),
    )


def runner_figures(scenario: Any, pair: Any = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """run_scenario -> the Result figures the benchmarks compare (GB/s decimal)."""
    from pytest_kvfabric.run.runner import run_scenario

    t0 = time.monotonic()
    d = run_scenario(scenario, pair=pair, timeout_s=timeout_s).to_dict()
    if d["integrity"].get("errors"):
        raise RuntimeError(f"integrity errors in a benchmark run: {d['integrity']}")
    gbit = d.get("throughput_gbps")
    return {
        "gbps_bytes": (gbit / 8) if gbit is not None else float("nan"),
        "bytes": d["bytes"],
        "seconds": d["duration_s"],
        "wall_s": time.monotonic() - t0,
        "cpu_s_per_gb_sender": d["cpu_s_per_gb"].get("sender"),
        "cpu_s_per_gb_receiver": d["cpu_s_per_gb"].get("receiver"),
        "spin_s_per_gb_sender": (d.get("spin_s_per_gb") or {}).get("sender"),
        "spin_s_per_gb_receiver": (d.get("spin_s_per_gb") or {}).get("receiver"),
        "latency_us": d["latency_us"],
        "post_lateness_us": d["post_lateness_us"],
        "post_call_us": d.get("post_call_us"),
        "pages_checked": d["integrity"].get("pages_checked"),
        "retransmits": d.get("retransmits"),
    }


@contextmanager
def bench_netns(index: int = 201, mtu: int = 9000, cpu_split: bool = False) -> Iterator[Any]:
    """A namespace pair of our own (prefix kvfb-), destroyed in finally. Yields the NetnsPair."""
    from pytest_kvfabric.fabric.netns import NetnsPair

    ns = NetnsPair.create(str(os.getpid()), index, mtu=mtu, prefix="kvfb-", cpu_split=cpu_split)
    try:
        yield ns
    finally:
        ns.destroy()


def run_fabrics(fabric_choice: str, rounds: int,
                contenders: Callable[[str, Any], Mapping[str, Callable[[], dict[str, Any]]]],
                rows_for: Callable[[str, Mapping[str, Any]], list[dict[str, Any]]],
                notes: list[str]) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Interleaved rounds on loopback and/or our own namespace pair (`both`); a netns that this
    host cannot make is skipped with its reason in the notes. Returns (raw, rows)."""
    fabrics = ["loopback", "netns"] if fabric_choice == "both" else [fabric_choice]
    raw: dict[str, list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    for fabric in fabrics:
        if fabric == "netns":
            from pytest_kvfabric.fabric.netns import netns_unavailable_reason

            reason = netns_unavailable_reason()
            if reason:
                notes.append(f"netns skipped: {reason}")
                continue
            with bench_netns() as ns:
                notes.append(f"netns: veth MTU {ns.mtu}, {ns.pair.prefill.data_addr} -> {ns.pair.decode.data_addr}")
                raw.update(interleave(rounds, contenders(fabric, ns), log=log))
        else:
            raw.update(interleave(rounds, contenders(fabric, None), log=log))
        rows += rows_for(fabric, raw)
    return raw, rows


def top_frames(collapsed_path: str, n: int = 12) -> list[tuple[str, float]]:
    """Self-time share of the hottest frames in a py-spy raw (collapsed) profile."""
    counts: dict[str, int] = {}
    total = 0
    with open(collapsed_path) as f:
        for line in f:
            stack, _, cnt = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            c = int(cnt)
            total += c
            leaf = stack.split(";")[-1]
            counts[leaf] = counts.get(leaf, 0) + c
    return [(k, v / total) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:n]] if total else []


# ---------------------------------------------------------------------------------------
# Mooncake Transfer Engine (pip install mooncake-transfer-engine-non-cuda)
# ---------------------------------------------------------------------------------------

MOONCAKE_DEBS = ("libibverbs1", "librdmacm1", "libnl-3-200", "libnl-route-3-200")


def _mooncake_libpath() -> str:
    root = MOONCAKE_LIBDIR / "root"
    return os.pathsep.join(str(root / d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"))


def mooncake_env(fetch: bool = True) -> tuple[dict[str, str] | None, str]:
    """(environment in which `import mooncake.engine` works, "") or (None, exact failure).

    The wheel's engine.so links libibverbs, librdmacm and libnl even for the TCP protocol.
    Where the system lacks them and `fetch` is set, Debian's packages are downloaded with
    `apt-get download` and unpacked under MOONCAKE_LIBDIR (never installed system-wide), and
    only the Mooncake peers get them on LD_LIBRARY_PATH."""
    probe = [PYTHON, "-c", "import mooncake.engine"]

    def try_import(env: dict[str, str]) -> str:
        r = subprocess.run(probe, capture_output=True, text=True, timeout=60, env=env)
        return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1]

    env = peer_env()
    err = try_import(env)
    if not err:
        return env, ""
    if "No module named" in err:
        return None, f"{err} (pip install mooncake-transfer-engine-non-cuda)"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [_mooncake_libpath(), env.get("LD_LIBRARY_PATH", "")]))
    if not (MOONCAKE_LIBDIR / "root").exists() and fetch:
        MOONCAKE_LIBDIR.mkdir(parents=True, exist_ok=True)
        log(f"mooncake: {err}; fetching {' '.join(MOONCAKE_DEBS)} into {MOONCAKE_LIBDIR} (apt-get download)")
        try:
            subprocess.run(["apt-get", "download", *MOONCAKE_DEBS], cwd=MOONCAKE_LIBDIR, check=True,
                           capture_output=True, timeout=120)
            for deb in MOONCAKE_LIBDIR.glob("*.deb"):
                subprocess.run(["dpkg", "-x", str(deb), str(MOONCAKE_LIBDIR / "root")], check=True,
                               capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"{err}; fetching the libraries failed: {exc}"
    err2 = try_import(env)
    if err2:
        return None, f"{err}; with {MOONCAKE_LIBDIR} on LD_LIBRARY_PATH: {err2}"
    return env, ""


def mooncake_pair(env: Mapping[str, str], *, nbytes: int = 1 << 20, batch: int = 1, seconds: float = 2.0,
                  warmup_s: float = 0.3, target_addr: str = "127.0.0.1", target_netns: str | None = None,
                  initiator_addr: str = "127.0.0.1", initiator_netns: str | None = None,
                  region_bytes: int = 64 << 20) -> dict[str, Any]:
    """Mooncake target and initiator in two processes (TCP protocol, P2PHANDSHAKE metadata)."""
    script = str(BENCH_DIR / "_peer_mooncake.py")
    budget = warmup_s + seconds + 30
    with peer(netns_prefix(target_netns) + [PYTHON, script, "target", "--host", target_addr,
                                            "--region-bytes", str(region_bytes), "--timeout", f"{budget:g}"],
              env=env, name="mooncake-target") as tgt:
        desc = tgt.read_json(30.0)
        with peer(netns_prefix(initiator_netns)
                  + [PYTHON, script, "initiator", "--host", initiator_addr, "--session", desc["session"],
                     "--addr", str(desc["addr"]), "--remote-len", str(desc["len"]),
                     "--region-bytes", str(region_bytes), "--nbytes", str(nbytes), "--batch", str(batch),
                     "--seconds", f"{seconds:g}", "--warmup", f"{warmup_s:g}"],
                  env=env, name="mooncake-initiator") as ini:
            res = ini.read_json(budget)
            ini.wait(15.0)
        tgt.send("done")
        tres = tgt.read_json(15.0)
    res["cpu_s_per_gb_receiver"] = cpu_s_per_gb(tres["cpu_s"], res["bytes"])
    return res


def timer_floor(interval_us: float, seconds: float, spin_us: float = 50.0,
                busy_others: bool = False) -> dict[str, Any]:
    """Lateness of a bare sleep-until-deadline loop in its own process (the host's floor);
    busy_others: every other CPU runs a busy loop meanwhile (_peer_timer.py)."""
    with peer([PYTHON, str(BENCH_DIR / "_peer_timer.py"), "--interval-us", f"{interval_us:g}",
               "--seconds", f"{seconds:g}", "--spin-us", f"{spin_us:g}",
               *(["--busy-others"] if busy_others else [])], name="timer") as p:
        res = p.read_json(seconds + 20)
    return res


def mooncake_cpp_bench(env: Mapping[str, str], *, nbytes: int = 1 << 20, batch: int = 16, threads: int = 2,
                       seconds: float = 2.0, buffer_bytes: int = 256 << 20) -> dict[str, Any]:
    """Mooncake's own C++ benchmark (`transfer_engine_bench`, shipped in the wheel): target
    and initiator processes, protocol tcp, P2PHANDSHAKE, --operation=write."""
    import re

    r = subprocess.run([PYTHON, "-c", "import mooncake, os; print(os.path.dirname(mooncake.__file__))"],
                       capture_output=True, text=True, timeout=60, env=dict(env))
    binary = os.path.join(r.stdout.strip(), "transfer_engine_bench")
    if r.returncode != 0 or not os.path.exists(binary):
        raise RuntimeError(f"transfer_engine_bench not found next to the mooncake package: {r.stderr.strip()[-300:]}")
    common = ["--metadata_server=P2PHANDSHAKE", "--protocol=tcp", "--local_server_name=127.0.0.1",
              f"--buffer_size={buffer_bytes}"]
    with peer([binary, "--mode=target", f"--duration={int(seconds) + 30}"] + common, env=env,
              name="mooncake-bench-target", merge_stderr=True) as tgt:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            m = re.search(r"listening on [\d.]+:(\d+)", tgt.readline(max(deadline - time.monotonic(), 0.01)))
            port = m.group(1) if m else None
        out = run_tool([binary, "--mode=initiator", f"--segment_id=127.0.0.1:{port}", "--operation=write",
                        f"--block_size={nbytes}", f"--batch_size={batch}", f"--threads={threads}",
                        f"--duration={max(int(round(seconds)), 1)}"] + common,
                       timeout_s=seconds + 40, env=env, merge_stderr=True)
    m = re.search(r"duration ([\d.]+), batch count (\d+), throughput ([\d.]+) GB/s", out)
    if not m:
        raise RuntimeError(f"transfer_engine_bench printed no throughput: {out.strip()[-400:]}")
    secs, nbatches = float(m.group(1)), int(m.group(2))
    nb = nbatches * batch * nbytes
    return {"gbps_bytes": nb / secs / 1e9, "bytes": nb, "seconds": secs, "reported_GBps": float(m.group(3))}
