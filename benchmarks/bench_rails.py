"""Rails scaling: aggregate throughput and CPU s/GB per rail against the number of rails, with
iperf3 over the same veths as the reference, in the same rounds.

For each rail count N (1, 2, ... up to this machine's CPUs, or --max-rails), the netns fabric
builds a layout of N rails (fabric/netns_layout.py: N veth pairs between two namespaces, one
subnet each, each rail's processes pinned to the rail's CPU set by rails.rail_cpu_sets). On it:

  iperf3 xN      reference: N iperf3 client/server pairs at once, rail r's on rail r's addresses
                 and CPUs (-l 1M, one stream each);
  tcp-alone xN   our tcp transport alone at once on every rail (benchmarks/_peer_transport.py:
                 target + initiator per rail, 1 MiB writes, pacing none, no verification);
  runner xN      the product (--runner; needs run/flows.py): one multi-agent run (run_flows)
                 of llama3.1-8b at prefill TP 8, 1 MiB page writes, pacing none, on the same
                 layout: rank k on rail k mod N, one agent per rail and side, every page
                 verified at the decode agents.

Per rail, a run's figures are taken over its own timed window; the N windows overlap but do not
start at the same instant (each pair sets up on its own), so the aggregate is the sum of the
rails' rates, not one window's bytes. CPU s/GB per rail is sender + receiver CPU seconds per GB
moved on that rail. "cores per rail at 400 Gb/s" is that figure x 50 GB/s.

    python benchmarks/bench_rails.py                      # rails 1..ncpu, 3 rounds, ~1 min
    python benchmarks/bench_rails.py --max-rails 4 --rounds 5 --seconds 3
    python benchmarks/bench_rails.py --json
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MIB = 1 << 20
RAIL_GBPS_400G = 50.0  # 400 Gb/s in decimal GB/s


def concurrently(jobs: list[Callable[[], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run every job at once (threads driving subprocesses); re-raise the first failure."""
    out: list[dict[str, Any] | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            out[i] = jobs[i]()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise RuntimeError("a rail's run did not finish within 120 s")
    return [o for o in out if o is not None]


def aggregate(per_rail: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of the rails' rates; CPU s/GB per rail (sender + receiver), median over rails."""
    import statistics

    gbps = sum(r["gbps_bytes"] for r in per_rail)
    snd = [r.get("cpu_s_per_gb_sender") or 0.0 for r in per_rail]
    rcv = [r.get("cpu_s_per_gb_receiver") or 0.0 for r in per_rail]
    cpu = [a + b for a, b in zip(snd, rcv)]
    return {"gbps_bytes": gbps, "cpu_s_per_gb_rail": statistics.median(cpu),
            "cpu_s_per_gb_sender": statistics.median(snd), "cpu_s_per_gb_receiver": statistics.median(rcv),
            "rails_gbps": [r["gbps_bytes"] for r in per_rail], "rails_cpu_s_per_gb": cpu,
            "retransmits": sum(int(r.get("retransmits") or 0) for r in per_rail)}


def contenders(a: argparse.Namespace, n: int, lay: Any) -> dict[str, Callable[[], dict[str, Any]]]:
    pre, dec = lay.layout.prefill[0], lay.layout.decode[0]
    cpus = [next(p.cpus for p in lay.plan if p.role == "prefill" and p.rail == r) for r in range(n)]

    def iperf() -> dict[str, Any]:
        return aggregate(concurrently([
            (lambda r=r: C.iperf3_throughput(dec[r].data_addr, length="1M", seconds=a.seconds,
                                             server_netns=dec[r].netns, client_netns=pre[r].netns, cpus=cpus[r]))
            for r in range(n)]))

    def tcp() -> dict[str, Any]:
        return aggregate(concurrently([
            (lambda r=r: C.transport_pair(transport="tcp", nbytes=MIB, batch=8, window_bytes=32 * MIB,
                                          seconds=a.seconds, target_addr=dec[r].data_addr, target_netns=dec[r].netns,
                                          initiator_netns=pre[r].netns, cpus=cpus[r]))
            for r in range(n)]))

    out = {f"iperf3 x{n}": iperf, f"tcp-alone x{n}": tcp}
    if a.runner:
        out[f"runner x{n}"] = lambda: runner_figures(a, n, lay.layout)
    return out


def runner_figures(a: argparse.Namespace, n: int, layout: Any) -> dict[str, Any]:
    """The product: one FlowRunner run over the layout; rank k on rail k (prefill TP = n)."""
    from pytest_kvfabric.run.flows import run_flows  # the multi-agent runner (issue 23, run side)

    sc = runner_scenario(a, n)
    d = run_flows(sc, layout, timeout_s=120).to_dict()
    if d["integrity"].get("errors"):
        raise RuntimeError(f"integrity errors in a benchmark run: {d['integrity']}")
    per_rail = []
    for e in d.get("per_rail") or []:
        per_rail.append({"gbps_bytes": (e.get("throughput_gbps") or 0.0) / 8})
    cpu = d["cpu_s_per_gb"]
    return {"gbps_bytes": (d.get("throughput_gbps") or float("nan")) / 8,
            "cpu_s_per_gb_rail": (cpu.get("sender") or 0.0) + (cpu.get("receiver") or 0.0),
            "cpu_s_per_gb_sender": cpu.get("sender") or 0.0, "cpu_s_per_gb_receiver": cpu.get("receiver") or 0.0,
            "rails_gbps": [r["gbps_bytes"] for r in per_rail], "pages_checked": d["integrity"].get("pages_checked"),
            "retransmits": d.get("retransmits")}


def runner_scenario(a: argparse.Namespace, n: int) -> Any:
    """llama3.1-8b, prefill TP 8 (rank k -> rail k mod n, as on an 8-GPU node), decode TP 8,
    --runner-requests requests of --runner-isl tokens back to back, pacing none, pages verified.
    Pages of 64 tokens sent whole (access "block": all 32 layers of a page in one write) make
    1 MiB writes per rank (64 x 32 layers x 512 B of one KV head), iperf3's -l 1M; layer-wise
    16-token pages would be 8 KiB writes, a different (per-write cost) regime."""
    from pytest_kvfabric.core.profiles import load_gpu, load_model
    from pytest_kvfabric.core.scenario import Arrival, Deployment, Distribution, Scenario, Workload

    wl = Workload(isl=Distribution.fixed(a.runner_isl), osl=Distribution.fixed(1), requests=a.runner_requests,
                  arrival=Arrival("closed", concurrency=a.runner_requests))
    return Scenario(id=f"bench-rails-{n}", model=load_model("llama3.1-8b"), gpu=load_gpu("h100"), workload=wl,
                    prefill=Deployment(tp=8, page_size=64, access="block"),
                    decode=Deployment(tp=8, page_size=64, access="block"), pacing="none", pool_bytes=64 * MIB,
                    transport="tcp", seed=1, rails=n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-rails", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runner", action="store_true", help="add the product's multi-agent runner (run/flows.py)")
    ap.add_argument("--runner-requests", type=int, default=4)
    ap.add_argument("--runner-isl", type=int, default=4096)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from pytest_kvfabric.fabric.netns import netns_unavailable_reason
    from pytest_kvfabric.fabric.netns_layout import NetnsLayout

    reason = netns_unavailable_reason()
    if reason:
        print(f"bench_rails needs the netns fabric: {reason}", file=sys.stderr)
        return 2
    if a.runner:
        try:
            import pytest_kvfabric.run.flows  # noqa: F401 - the multi-agent runner
        except ImportError as exc:
            print(f"--runner needs the multi-agent runner (pytest_kvfabric/run/flows.py): {exc}", file=sys.stderr)
            return 2
    env = C.env_info()
    counts = list(range(1, max(1, a.max_rails) + 1))
    raw: dict[str, list[dict[str, Any]]] = {}
    notes = [f"rails 1..{counts[-1]} on a host with {len(os.sched_getaffinity(0))} CPUs allowed: with more rails "
             "than CPUs, rails share cores (rails.rail_cpu_sets), so the aggregate shows the CPUs, not the rails",
             "shared busy host (other sessions' tests and builds run at the same time): compare the same-run "
             "ratios, not the absolute figures"]
    for n in counts:
        lay = NetnsLayout.create(str(os.getpid()), 210 + n, n, (1, 1), prefix="kvfb-")
        try:
            notes.append(f"{n} rails: CPU sets per rail {[p.cpus for p in lay.plan if p.role == 'prefill']} "
                         "(None: not pinned), both sides of a rail on its set")
            got = C.interleave(a.rounds, contenders(a, n, lay), log=C.log)
        finally:
            lay.destroy()
        raw.update(got)
    rows = []
    for n in counts:
        ours, ref = raw[f"tcp-alone x{n}"], raw[f"iperf3 x{n}"]
        rows.append(C.ratio_row(f"{n} rails: aggregate, tcp-alone vs iperf3", C.column(ours, "gbps_bytes"),
                                C.column(ref, "gbps_bytes"), unit="GB/s", target=None, ref_label="iperf3"))
        rows.append(C.ratio_row(f"{n} rails: CPU s/GB per rail, tcp-alone vs iperf3",
                                C.column(ours, "cpu_s_per_gb_rail"), C.column(ref, "cpu_s_per_gb_rail"),
                                unit="CPU s/GB", target=None, higher_is_better=False, ref_label="iperf3"))
        if n > 1:
            one_o, one_r = C.column(raw["tcp-alone x1"], "gbps_bytes"), C.column(raw["iperf3 x1"], "gbps_bytes")
            so = [x / y for x, y in zip(C.column(ours, "gbps_bytes"), one_o) if y]
            sr = [x / y for x, y in zip(C.column(ref, "gbps_bytes"), one_r) if y]
            rows.append(C.ratio_row(f"{n} rails over 1 rail (scaling), tcp-alone vs iperf3", so, sr,
                                    unit="x", target=None, ref_label="iperf3"))
        if a.runner and f"runner x{n}" in raw:
            run = raw[f"runner x{n}"]
            rows.append(C.ratio_row(f"{n} rails: aggregate, runner vs iperf3", C.column(run, "gbps_bytes"),
                                    C.column(ref, "gbps_bytes"), unit="GB/s", target=None, ref_label="iperf3"))
            rows.append(C.ratio_row(f"{n} rails: CPU s/GB per rail, runner vs iperf3",
                                    C.column(run, "cpu_s_per_gb_rail"), C.column(ref, "cpu_s_per_gb_rail"),
                                    unit="CPU s/GB", target=None, higher_is_better=False, ref_label="iperf3"))
    for name, res in raw.items():
        med = {k: C.summary(C.column(res, f"cpu_s_per_gb_{k}"))["median"] for k in ("sender", "receiver")}
        notes.append(f"{name}: CPU s/GB per rail sender {med['sender']:.3f}, receiver {med['receiver']:.3f} -> "
                     f"cores per 400 Gb/s rail (x {RAIL_GBPS_400G:g} GB/s): prefill side {med['sender'] * RAIL_GBPS_400G:.1f}, "
                     f"decode side {med['receiver'] * RAIL_GBPS_400G:.1f}; 8 rails: "
                     f"{med['sender'] * RAIL_GBPS_400G * 8:.0f} / {med['receiver'] * RAIL_GBPS_400G * 8:.0f}")
    C.emit("bench_rails", rows, raw, env, a.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
