"""`tcp` throughput against `iperf3 -l 1M` on the same path, one connection, interleaved.

Targets (issue 3): tcp at 1 MiB writes >= iperf3 single stream (median ratio >= 1.0);
64 KiB writes >= 0.8x our 1 MiB figure.

Ours is measured two ways, in the same rounds as iperf3:
  tcp-alone  the transport alone: Target and Initiator in two processes, pacing "none",
             a window of writes in flight, no pattern fill or verification
             (benchmarks/_peer_transport.py), streaming through a 64 MiB region at both ends;
  tcp-alone-1M-2MiB-region  the same over a 2 MiB region: iperf3's memory footprint (it
             reuses one cache-hot 1 MiB buffer), so the ratio shows what the transport adds
             over the kernel's single stream, apart from the pool's cache misses;
  runner     the product path: run_scenario() with a Synthetic scenario, pacing "none"
             (two execnet agents, pattern-filled pool, every page verified at the decode side).

    python benchmarks/bench_tcp.py                 # loopback, 5 rounds, ~90 s
    python benchmarks/bench_tcp.py --fabric both   # + a veth pair between two namespaces
    python benchmarks/bench_tcp.py --json          # one JSON document on stdout
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MIB = 1 << 20
KIB = 1 << 10


def contenders(a: argparse.Namespace, fabric: str, ns: Any) -> dict[str, Callable[[], dict[str, Any]]]:
    if ns is None:
        t_addr, t_ns, i_ns, pair = "127.0.0.1", None, None, None
    else:
        p = ns.pair
        t_addr, t_ns, i_ns, pair = p.decode.data_addr, ns.ns_decode, ns.ns_prefill, p
    out: dict[str, Callable[[], dict[str, Any]]] = {}
    for nb in (MIB, 64 * KIB):
        label = "1M" if nb == MIB else "64K"
        batch = a.batch if nb == MIB else a.batch * 8
        out[f"{fabric}/tcp-alone-{label}"] = (
            lambda nb=nb, batch=batch: C.transport_pair(
                transport=a.transport, nbytes=nb, batch=batch, window_bytes=a.window_mib * MIB,
                seconds=a.seconds, target_addr=t_addr, target_netns=t_ns, initiator_netns=i_ns)
        )
    if a.same_buffer:
        # iperf3 -l 1M sends and receives one 1 MiB buffer over and over (cache-hot); this
        # contender does the same with a 2 MiB region, to show what the 64 MiB pool's
        # cache-cold copies cost.
        out[f"{fabric}/tcp-alone-1M-2MiB-region"] = lambda: C.transport_pair(
            transport=a.transport, nbytes=MIB, batch=a.batch, window_bytes=a.window_mib * MIB,
            seconds=a.seconds, target_addr=t_addr, target_netns=t_ns, initiator_netns=i_ns,
            region_bytes=2 * MIB)
    out[f"{fabric}/iperf3-1M"] = lambda: C.iperf3_throughput(
        t_addr, length="1M", seconds=a.seconds, server_netns=t_ns, client_netns=i_ns)
    if a.runner:
        for nb in (MIB, 64 * KIB):
            label = "1M" if nb == MIB else "64K"
            n = max(int(a.runner_mib * MIB // nb), 8)
            sc = C.synthetic_scenario(nbytes=nb, transfers=n, batch=8 if nb == MIB else 64,
                                      pacing="none", verify=not a.no_verify, transport=a.transport,
                                      pool_bytes=a.pool_mib * MIB)
            out[f"{fabric}/runner-{label}"] = _first_n(a.runner_rounds, lambda sc=sc: C.runner_figures(sc, pair=pair))
    return out


def _first_n(n: int, fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Run fn in the first n rounds only (the runner path costs ~4 s of agent start-up)."""
    calls = [0]

    def wrapped() -> dict[str, Any]:
        calls[0] += 1
        return fn() if calls[0] <= n else {"skipped": True}

    return wrapped


def rows_for(fabric: str, raw: dict[str, list[dict[str, Any]]], runner: bool) -> list[dict[str, Any]]:
    g = lambda name, key="gbps_bytes": C.column(raw[f"{fabric}/{name}"], key)  # noqa: E731
    rows = [
        C.ratio_row(f"{fabric}: tcp-alone 1 MiB vs iperf3 -l 1M", g("tcp-alone-1M"), g("iperf3-1M"),
                    unit="GB/s", target=1.0, ref_label="iperf3"),
        C.ratio_row(f"{fabric}: tcp-alone 64 KiB vs tcp-alone 1 MiB", g("tcp-alone-64K"), g("tcp-alone-1M"),
                    unit="GB/s", target=0.8, ref_label="ours 1M"),
    ]
    if runner:
        rows += [
            C.ratio_row(f"{fabric}: runner 1 MiB vs iperf3 -l 1M", g("runner-1M"), g("iperf3-1M"),
                        unit="GB/s", target=1.0, ref_label="iperf3"),
            C.ratio_row(f"{fabric}: runner 64 KiB vs runner 1 MiB", g("runner-64K"), g("runner-1M"),
                        unit="GB/s", target=0.8, ref_label="ours 1M"),
        ]
    if f"{fabric}/tcp-alone-1M-2MiB-region" in raw:
        # The same memory footprint as iperf3 (which reuses one cache-hot 1 MiB buffer): what
        # the transport adds over the kernel's single stream, without the pool's cache misses.
        rows.append(C.ratio_row(f"{fabric}: tcp-alone 1 MiB, 2 MiB region (iperf3's footprint) vs iperf3",
                                g("tcp-alone-1M-2MiB-region"), g("iperf3-1M"), unit="GB/s", target=1.0,
                                ref_label="iperf3"))
        rows.append(C.ratio_row(f"{fabric}: CPU sender tcp-alone 1 MiB, 64 MiB vs 2 MiB region",
                                g("tcp-alone-1M", "cpu_s_per_gb_sender"),
                                g("tcp-alone-1M-2MiB-region", "cpu_s_per_gb_sender"), unit="CPU s/GB",
                                target=None, higher_is_better=False, ref_label="2 MiB region"))
    for side in ("sender", "receiver"):
        rows.append(C.ratio_row(
            f"{fabric}: CPU {side} tcp-alone 1 MiB vs iperf3", g("tcp-alone-1M", f"cpu_s_per_gb_{side}"),
            g("iperf3-1M", f"cpu_s_per_gb_{side}"), unit="CPU s/GB", target=None,
            higher_is_better=False, ref_label="iperf3"))
        if runner:
            rows.append(C.ratio_row(
                f"{fabric}: CPU {side} runner 1 MiB vs iperf3", g("runner-1M", f"cpu_s_per_gb_{side}"),
                g("iperf3-1M", f"cpu_s_per_gb_{side}"), unit="CPU s/GB", target=None,
                higher_is_better=False, ref_label="iperf3"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tcp transport vs iperf3, interleaved rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per tcp-alone/iperf3 run")
    ap.add_argument("--fabric", choices=["loopback", "netns", "both"], default="loopback")
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--batch", type=int, default=8, help="writes per post at 1 MiB (x8 at 64 KiB)")
    ap.add_argument("--window-mib", type=int, default=32, help="bytes in flight (tcp-alone)")
    ap.add_argument("--no-same-buffer", dest="same_buffer", action="store_false",
                    help="skip the tcp-alone run over a 2 MiB region (cache-hot, as iperf3 reuses one buffer)")
    ap.add_argument("--no-runner", dest="runner", action="store_false", help="skip the run_scenario path")
    ap.add_argument("--runner-rounds", type=int, default=3, help="rounds that include the runner path")
    # 2 GiB: about what iperf3 moves in its 1 s here, so TCP's ramp-up (slow start, receive
    # buffer autotuning) weighs the same on both sides (256 MiB runs lasted ~0.1 s).
    ap.add_argument("--runner-mib", type=int, default=2048, help="MiB moved per runner run")
    ap.add_argument("--pool-mib", type=int, default=64, help="emulated HBM per agent in runner runs")
    ap.add_argument("--no-verify", action="store_true", help="runner runs without page verification")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    env = C.env_info()
    notes = [f"{a.rounds} rounds, order rotated each round; {a.seconds:g} s timed per tcp-alone/iperf3 run; "
             f"runner (first {a.runner_rounds} rounds): {a.runner_mib} MiB per run, pool {a.pool_mib} MiB, verify {'off' if a.no_verify else 'on'}"]
    raw, rows = C.run_fabrics(a.fabric, a.rounds, lambda fabric, ns: contenders(a, fabric, ns),
                              lambda fabric, raw: rows_for(fabric, raw, a.runner), notes)
    C.emit("bench_tcp", rows, raw, env, a.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
