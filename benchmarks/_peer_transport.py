"""One side of a transport-alone benchmark, run as its own process.

    python benchmarks/_peer_transport.py target --transport tcp --bind 127.0.0.1
        prints the descriptor (one JSON line), runs progress() until the initiator says
        BYE (or --timeout), then prints its own figures (bytes placed, CPU s) as JSON.
    python benchmarks/_peer_transport.py initiator --transport tcp --desc JSON --mode throughput|latency
        connects, warms up, measures, prints one JSON line, closes (BYE).

Throughput mode posts batches of `--batch` writes of `--nbytes`, keeping at most
`--window-bytes` outstanding (pacing "none": as fast as the transport takes them), and
times from the first timed post to the last completion. Latency mode has exactly one write
outstanding: post, then poll until its completion (write-to-completion, like a ping-pong).
No pattern fill or verification here: this measures the transport; the runner path
(run_scenario) adds the endpoints' fill and verify. `--op read` posts one-sided READs of the
same sizes instead (post_read: the target sends, the initiator receives).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_s, cpu_s_per_gb, percentile  # noqa: E402

from pytest_kvfabric.transports.base import READ_DTYPE, XFER_DTYPE  # noqa: E402
from pytest_kvfabric.transports.registry import get_transport  # noqa: E402


def _out(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def _opts(a: argparse.Namespace) -> dict:
    """--opt KEY=JSON-VALUE transport options (both sides), e.g. --opt busy_poll_us=50."""
    out = {}
    for kv in a.opt:
        k, _, v = kv.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def run_target(a: argparse.Namespace) -> int:
    T = get_transport(a.transport)
    region = T.allocate(a.region_bytes, {})
    np.frombuffer(region, np.uint8)[:] = 0  # fault every page in before timing (as a pool is)
    tgt = T.target(region, {"token": a.token, **_opts(a)})
    desc = tgt.listen(a.bind, timeout_s=5.0)
    _out({"descriptor": desc})
    deadline = time.monotonic() + a.timeout
    c0 = cpu_s()
    got: list = []  # keep the arrays; sum at the end (no numpy work between progress() calls)
    try:
        while time.monotonic() < deadline:
            placed, _ = tgt.progress(0.5)
            if len(placed):
                got.append(placed)
            if tgt.peers_closed():
                break
        c1 = cpu_s()
        st = tgt.stats() if hasattr(tgt, "stats") else {}  # (Target has no stats(); iouring's neither)
        # bytes it received (writes) plus bytes it sent (reads served)
        nbytes = sum(int(p["nbytes"].sum()) for p in got) + int(tgt.data_path().get("bytes_served") or 0)
        active_s = (int(got[-1]["t_ns"][-1]) - int(got[0]["t_ns"][0])) / 1e9 if got else 0.0
        _out({
            "bytes": nbytes,
            "cpu_s": c1 - c0,
            "cpu_s_per_gb": cpu_s_per_gb(c1 - c0, nbytes),
            "active_s": active_s,
            "data_path": tgt.data_path(),
            "acks_sent": st.get("acks_sent"),
            "writes_placed": st.get("writes_placed"),
            "timed_out": not tgt.peers_closed(),
        })
    finally:
        tgt.close()
    return 0


def _batch(n: int, nbytes: int, start: int, region_bytes: int, op: str = "write") -> np.ndarray:
    """n writes (or reads) of nbytes, cycling through the region at both ends."""
    slots = max(region_bytes // nbytes, 1)
    k = np.arange(start, start + n, dtype=np.uint64)
    off = (k % np.uint64(slots)) * np.uint64(nbytes)
    if op == "read":
        b = np.zeros(n, READ_DTYPE)
        b["xfer"], b["local_off"], b["remote_off"], b["nbytes"] = k, off, off, nbytes
        return b
    b = np.zeros(n, XFER_DTYPE)
    b["xfer"] = k
    b["src_off"] = off
    b["dst_off"] = off
    b["nbytes"] = nbytes
    b["notify"] = -1
    return b


def _throughput(ini, a: argparse.Namespace) -> dict:
    nb = a.nbytes
    window = max(a.window_bytes // nb, a.batch)
    post = ini.post_read if a.op == "read" else ini.post
    posted = done = 0
    lat_ns: list[int] = []
    post_t: dict[int, int] = {}

    def phase(seconds: float, record: bool) -> tuple[int, int, int]:
        nonlocal posted, done
        start_posted = posted
        t_end = time.monotonic() + seconds
        t0 = time.monotonic_ns()
        while time.monotonic() < t_end:
            while posted - done + a.batch <= window:
                b = _batch(a.batch, nb, posted, a.region_bytes, a.op)
                t = time.monotonic_ns()
                post(b, timeout_s=10.0)
                if record and posted % 64 == 0:
                    post_t[posted] = t
                posted += a.batch
            comp = ini.poll(1.0)
            done += len(comp)
            if record and len(comp):
                for x, t in zip(comp["xfer"].tolist(), comp["t_ns"].tolist()):
                    p = post_t.pop(x, None)
                    if p is not None:
                        lat_ns.append(t - p)
        # drain what this phase posted, so its bytes are all placed inside its window
        drain_end = time.monotonic() + 10.0
        while done < posted and time.monotonic() < drain_end:
            comp = ini.poll(1.0)
            done += len(comp)
        if done < posted:
            raise RuntimeError(f"{posted - done} writes not completed 10 s after the last post")
        return posted - start_posted, t0, time.monotonic_ns()

    phase(a.warmup, False)
    c0 = cpu_s()
    n, t0, t1 = phase(a.seconds, True)
    c1 = cpu_s()
    nbytes = n * nb
    secs = (t1 - t0) / 1e9
    lat_us = [x / 1e3 for x in lat_ns]
    return {
        "gbps_bytes": nbytes / secs / 1e9,
        "bytes": nbytes,
        "seconds": secs,
        "transfers": n,
        "cpu_s_per_gb_sender": cpu_s_per_gb(c1 - c0, nbytes),
        "latency_us_p50": percentile(lat_us, 50),
        "latency_us_p99": percentile(lat_us, 99),
    }


def _latency(ini, a: argparse.Namespace) -> dict:
    nb = a.nbytes
    lat_ns: list[int] = []
    k = 0

    # Pre-built one-write batches (cycling through the region): nothing but the transport
    # runs between two writes.
    batches = [_batch(1, nb, j, a.region_bytes, a.op) for j in range(256)]
    post = ini.post_read if a.op == "read" else ini.post

    def one() -> int:
        nonlocal k
        b = batches[k & 255]
        k += 1
        t0 = time.monotonic_ns()
        post(b, timeout_s=5.0)
        for _ in range(10000):
            comp = ini.poll(1.0)
            if len(comp):
                return int(comp["t_ns"][0]) - t0
        raise RuntimeError("no completion for a single outstanding write")

    t_end = time.monotonic() + a.warmup
    while time.monotonic() < t_end:
        one()
    c0 = cpu_s()
    t_end = time.monotonic() + a.seconds
    while time.monotonic() < t_end and len(lat_ns) < a.max_samples:
        lat_ns.append(one())
    c1 = cpu_s()
    us = [x / 1e3 for x in lat_ns]
    return {
        "p50_us": percentile(us, 50),
        "p90_us": percentile(us, 90),
        "p99_us": percentile(us, 99),
        "max_us": max(us),
        "samples": len(us),
        "cpu_s_per_write": (c1 - c0) / max(len(us), 1),
    }


def run_initiator(a: argparse.Namespace) -> int:
    T = get_transport(a.transport)
    region = T.allocate(a.region_bytes, {})
    np.frombuffer(region, np.uint8)[:] = 0x5A  # touch every page before timing
    ini = T.initiator(region, {"token": a.token, "connections": a.connections, **_opts(a)})
    try:
        ini.connect(json.loads(a.desc), timeout_s=5.0)
        res = _throughput(ini, a) if a.mode == "throughput" else _latency(ini, a)
        res["data_path"] = ini.data_path()
        res["retransmits"] = ini.stats().get("retransmits")
        _out(res)
    finally:
        ini.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("role", choices=["target", "initiator"])
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--desc", default="")
    ap.add_argument("--token", default="bench-token")
    ap.add_argument("--region-bytes", type=int, default=64 << 20)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--opt", action="append", default=[], help="transport option KEY=VALUE (both sides)")
    ap.add_argument("--mode", choices=["throughput", "latency"], default="throughput")
    ap.add_argument("--op", choices=["write", "read"], default="write", help="post writes or one-sided reads")
    ap.add_argument("--nbytes", type=int, default=1 << 20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--window-bytes", type=int, default=32 << 20)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--max-samples", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    return run_target(a) if a.role == "target" else run_initiator(a)


if __name__ == "__main__":
    sys.exit(main())
