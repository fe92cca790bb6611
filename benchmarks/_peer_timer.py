"""The host's pacing floor: a process that only sleeps until deadlines (sleep, then spin the
last --spin-us, timer slack 1 ns as the prefill agent sets it) and records how late it woke.
No transport, no numpy work in the loop: what this host's scheduler allows a paced loop.

With --busy-others every other CPU this process may use runs a busy loop for the same time,
as during a run where both agents spin: a kernel thread or daemon that wakes then has no idle
CPU to go to and must preempt someone (the floor for two agents, not for one alone).

    python benchmarks/_peer_timer.py --interval-us 1473 --seconds 3 [--busy-others]  -> one JSON line
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

_SPINNER = ("import time\nend = time.monotonic() + {s}\nprint('spinning', flush=True)\n"
            "while time.monotonic() < end:\n    pass\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interval-us", type=float, required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--spin-us", type=float, default=50.0)
    ap.add_argument("--busy-others", action="store_true", help="keep every other CPU busy meanwhile")
    a = ap.parse_args(argv)
    others: list[subprocess.Popen[bytes]] = []
    if a.busy_others:
        n_other = max(len(os.sched_getaffinity(0)) - 1, 0)
        others = [subprocess.Popen([sys.executable, "-c", _SPINNER.format(s=a.seconds + 1.0)],
                                   stdout=subprocess.PIPE) for _ in range(n_other)]
    try:
        for p in others:  # each says so once it spins (EOF if it died): no deadline falls before
            p.stdout.readline()
        return _floor(a)
    finally:
        for p in others:  # they end on their own a second after the loop; never leave one behind
            p.kill()
        for p in others:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _floor(a: argparse.Namespace) -> int:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, as prefill does
    except (OSError, AttributeError):
        pass
    iv, spin = int(a.interval_us * 1000), int(a.spin_us * 1000)
    n = max(int(a.seconds * 1e6 / a.interval_us), 1)
    now = time.monotonic_ns
    t0 = now() + 1_000_000
    late: list[int] = []
    for g in range(n):
        r = t0 + g * iv
        w = r - now()
        if w > spin:
            time.sleep((w - spin) / 1e9)
        while now() < r:
            pass
        late.append(now() - r)
    late.sort()
    us = [x / 1e3 for x in late]
    pick = lambda q: us[min(int(q / 100 * len(us)), len(us) - 1)]  # noqa: E731
    sys.stdout.write(json.dumps({"p50": pick(50), "p99": pick(99), "max": us[-1], "n": len(us)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
