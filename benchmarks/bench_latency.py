"""4 KiB write-to-completion latency against the TCP round trip sockperf measures.

Target (issue 3): p50 of a 4 KiB write, post -> completion (the target's ACK read by the
initiator), within 1.3x of the round trip of `sockperf ping-pong --tcp -m 4096` on the same
path. sockperf prints half the round trip as its latency, so the reference is 2 x its p50.

Ours, in the same interleaved rounds:
  tcp-alone  one write outstanding at a time (post, poll until its completion), Target and
             Initiator in two processes (benchmarks/_peer_transport.py), default options
             (busy_poll_us=50: a bounded spin before sleeping);
  tcp-alone-sleep  the same with busy_poll_us=0 (sleep in epoll at once), and the
             initiator CPU per write of both, so the spin's cost is on the table;
  runner     run_scenario() with a Synthetic scenario of 4 KiB writes posted one at a time
             every --interval-us (emulated pacing, so writes do not queue behind each other);
             latency_us.p50 from the Result.

    python benchmarks/bench_latency.py [--rounds 5] [--fabric loopback|netns|both] [--json]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def contenders(a: argparse.Namespace, fabric: str, ns: Any) -> dict[str, Callable[[], dict[str, Any]]]:
    if ns is None:
        t_addr, t_ns, i_ns, pair = "127.0.0.1", None, None, None
    else:
        p = ns.pair
        t_addr, t_ns, i_ns, pair = p.decode.data_addr, ns.ns_decode, ns.ns_prefill, p
    out: dict[str, Callable[[], dict[str, Any]]] = {
        f"{fabric}/tcp-alone-4K": lambda: C.transport_pair(
            transport=a.transport, mode="latency", nbytes=a.nbytes, seconds=a.seconds,
            target_addr=t_addr, target_netns=t_ns, initiator_netns=i_ns, region_bytes=16 << 20),
        **({f"{fabric}/tcp-alone-4K-sleep": lambda: C.transport_pair(
            transport=a.transport, mode="latency", nbytes=a.nbytes, seconds=a.seconds,
            target_addr=t_addr, target_netns=t_ns, initiator_netns=i_ns, region_bytes=16 << 20,
            options={"busy_poll_us": 0})} if a.sleep else {}),
        f"{fabric}/sockperf-4K": lambda: C.sockperf_rtt(
            t_addr, msg_bytes=a.nbytes, seconds=a.seconds, server_netns=t_ns, client_netns=i_ns),
    }
    if a.runner:
        n = max(int(a.seconds * 1e6 / a.interval_us), 16)
        sc = C.synthetic_scenario(nbytes=a.nbytes, transfers=n, batch=1, interval_us=a.interval_us,
                                  pacing="emulated", transport=a.transport, pool_bytes=16 << 20)

        def runner() -> dict[str, Any]:
            r = C.runner_figures(sc, pair=pair)
            r["p50_us"] = r["latency_us"]["p50"]
            r["p99_us"] = r["latency_us"]["p99"]
            return r

        out[f"{fabric}/runner-4K"] = runner
    return out


def rows_for(fabric: str, raw: dict[str, list[dict[str, Any]]], runner: bool) -> list[dict[str, Any]]:
    col = lambda name, key: C.column(raw[f"{fabric}/{name}"], key)  # noqa: E731
    rows = [C.ratio_row(f"{fabric}: tcp-alone 4 KiB p50 vs sockperf RTT p50", col("tcp-alone-4K", "p50_us"),
                        col("sockperf-4K", "rtt_p50_us"), unit="µs", target=1.3, higher_is_better=False,
                        ref_label="2 x sockperf")]
    if f"{fabric}/tcp-alone-4K-sleep" in raw:
        rows.append(C.ratio_row(f"{fabric}: tcp-alone 4 KiB p50, busy_poll_us=0 (sleep at once) vs sockperf RTT p50",
                                col("tcp-alone-4K-sleep", "p50_us"), col("sockperf-4K", "rtt_p50_us"),
                                unit="µs", target=1.3, higher_is_better=False, ref_label="2 x sockperf"))
        # what the default's bounded spin costs: initiator CPU per write, spinning vs sleeping
        cpu = lambda name: [x * 1e6 for x in col(name, "cpu_s_per_write")]  # noqa: E731
        rows.append(C.ratio_row(f"{fabric}: initiator CPU per 4 KiB write, default vs busy_poll_us=0",
                                cpu("tcp-alone-4K"), cpu("tcp-alone-4K-sleep"), unit="µs CPU",
                                target=None, higher_is_better=False, ref_label="sleeping"))
    if runner:
        rows.append(C.ratio_row(f"{fabric}: runner 4 KiB p50 vs sockperf RTT p50", col("runner-4K", "p50_us"),
                                col("sockperf-4K", "rtt_p50_us"), unit="µs", target=1.3,
                                higher_is_better=False, ref_label="2 x sockperf"))
    rows.append(C.ratio_row(f"{fabric}: tcp-alone 4 KiB p99 vs sockperf RTT p99", col("tcp-alone-4K", "p99_us"),
                            col("sockperf-4K", "rtt_p99_us"), unit="µs", target=None, higher_is_better=False,
                            ref_label="2 x sockperf"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="4 KiB write-to-completion latency vs sockperf ping-pong")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per run")
    ap.add_argument("--fabric", choices=["loopback", "netns", "both"], default="loopback")
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--nbytes", type=int, default=4096)
    ap.add_argument("--interval-us", type=float, default=500.0, help="runner: one write every this many µs")
    ap.add_argument("--no-runner", dest="runner", action="store_false")
    ap.add_argument("--no-sleep", dest="sleep", action="store_false",
                    help="skip the tcp-alone run with busy_poll_us=0 (no spin before sleeping)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    env = C.env_info()
    notes = [f"{a.rounds} rounds, order rotated each round; {a.seconds:g} s per run; "
             f"reference = 2 x sockperf's printed (half round trip) percentile"]
    raw, rows = C.run_fabrics(a.fabric, a.rounds, lambda fabric, ns: contenders(a, fabric, ns),
                              lambda fabric, raw: rows_for(fabric, raw, a.runner), notes)
    C.emit("bench_latency", rows, raw, env, a.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
