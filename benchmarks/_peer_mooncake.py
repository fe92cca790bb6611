"""One side of the Mooncake Transfer Engine benchmark (TCP protocol), run as its own process.

    python benchmarks/_peer_mooncake.py target --host 127.0.0.1
        registers a buffer, prints {"session", "addr", "len"} as one JSON line, then waits
        for a line on stdin (or --timeout) and prints its CPU seconds as JSON.
    python benchmarks/_peer_mooncake.py initiator --session H:P --addr N --nbytes B --batch K
        batch_transfer_sync_write of K writes of B bytes per call for --seconds; prints JSON.

Metadata: P2PHANDSHAKE (no etcd), so the session name is "<host>:<rpc port>" and the peer's
buffer address travels over our stdout/argv, as the Mooncake docs' quick start does with ZMQ.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_s, cpu_s_per_gb  # noqa: E402


def _out(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def _engine(host: str):
    from mooncake.engine import TransferEngine

    eng = TransferEngine()
    ret = eng.initialize(host, "P2PHANDSHAKE", "tcp", "")
    if ret != 0:
        raise RuntimeError(f"TransferEngine.initialize({host!r}, 'P2PHANDSHAKE', 'tcp', '') returned {ret}")
    return eng


def _buffer(eng, nbytes: int, fill: int) -> np.ndarray:
    buf = np.full(nbytes, fill, dtype=np.uint8)  # touched: no page faults in the timed part
    ret = eng.register_memory(buf.ctypes.data, buf.nbytes)
    if ret != 0:
        raise RuntimeError(f"register_memory of {nbytes} bytes returned {ret}")
    return buf


def run_target(a: argparse.Namespace) -> int:
    eng = _engine(a.host)
    buf = _buffer(eng, a.region_bytes, 0)
    _out({"session": f"{a.host}:{eng.get_rpc_port()}", "addr": int(buf.ctypes.data), "len": buf.nbytes})
    c0 = cpu_s()
    ready, _, _ = select.select([sys.stdin], [], [], a.timeout)
    line = sys.stdin.readline() if ready else ""
    c1 = cpu_s()
    _out({"cpu_s": c1 - c0, "stopped_by": "controller" if line else "timeout"})
    return 0


def run_initiator(a: argparse.Namespace) -> int:
    eng = _engine(a.host)
    nb, k = a.nbytes, a.batch
    buf = _buffer(eng, a.region_bytes, 0x5A)
    slots = max(min(a.region_bytes, a.remote_len) // nb, 1)
    base, rbase = int(buf.ctypes.data), int(a.addr)
    i = 0

    def one_call() -> None:
        nonlocal i
        offs = [((i + j) % slots) * nb for j in range(k)]
        i += k
        ret = eng.batch_transfer_sync_write(a.session, [base + o for o in offs], [rbase + o for o in offs], [nb] * k)
        if ret != 0:
            raise RuntimeError(f"batch_transfer_sync_write to {a.session} returned {ret}")

    t_end = time.monotonic() + a.warmup
    while time.monotonic() < t_end:
        one_call()
    lat_ns: list[int] = []
    c0 = cpu_s()
    t0 = time.monotonic_ns()
    t_end = time.monotonic() + a.seconds
    calls = 0
    while time.monotonic() < t_end:
        t = time.monotonic_ns()
        one_call()
        lat_ns.append(time.monotonic_ns() - t)
        calls += 1
    t1 = time.monotonic_ns()
    c1 = cpu_s()
    nbytes = calls * k * nb
    secs = (t1 - t0) / 1e9
    lat_ns.sort()
    _out({
        "gbps_bytes": nbytes / secs / 1e9,
        "bytes": nbytes,
        "seconds": secs,
        "calls": calls,
        "call_us_p50": lat_ns[len(lat_ns) // 2] / 1e3 if lat_ns else None,
        "cpu_s_per_gb_sender": cpu_s_per_gb(c1 - c0, nbytes),
    })
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("role", choices=["target", "initiator"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--session", default="")
    ap.add_argument("--addr", type=int, default=0)
    ap.add_argument("--remote-len", type=int, default=64 << 20)
    ap.add_argument("--region-bytes", type=int, default=64 << 20)
    ap.add_argument("--nbytes", type=int, default=1 << 20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    return run_target(a) if a.role == "target" else run_initiator(a)


if __name__ == "__main__":
    sys.exit(main())
