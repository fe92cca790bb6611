"""iouring (send, send_zc) vs tcp vs iperf3, side by side in one run, at 64 KiB and 1 MiB.

    python benchmarks/bench_iouring.py [--rounds 3] [--seconds 1.5] [--json] [--netns]

Each contender runs target and initiator in two processes (pacing "none": post as fast as
the transport takes writes, at most --window-bytes outstanding), rounds interleaved with a
rotating order; the table shows medians [min-max] and ratios of medians. CPU seconds per GB
are our processes' getrusage deltas over the timed window, iperf3's from its JSON
cpu_utilization_percent. GB = 1e9 bytes.

--netns reruns everything across a veth namespace pair (the `placement` hook: a function
from the target's data address to (target netns, initiator netns)).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    PYTHON, cpu_s, cpu_s_per_gb, column, emit, env_info, interleave, iperf3_throughput, log,
    netns_prefix, peer, peer_env, ratio_row, summary,
)

# (target netns, initiator netns) for a target data address; loopback: both in ours.
Placement = Callable[[str], "tuple[str | None, str | None]"]


def loopback(addr: str) -> tuple[str | None, str | None]:
    return None, None


CONTENDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "iouring-send": ("iouring", {"mode": "send"}),
    "iouring-send_zc": ("iouring", {"mode": "send_zc"}),
    "tcp": ("tcp", {}),
}


# -- peers (this file, run as a child process) ---------------------------------------------
def _out(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


def peer_target(a: argparse.Namespace) -> int:
    import numpy as np

    from pytest_kvfabric.transports.registry import get_transport

    T = get_transport(a.transport)
    opts = {**json.loads(a.options), "token": a.token}
    region = T.allocate(a.region_bytes, opts)
    np.frombuffer(region, np.uint8)[:] = 0
    tgt = T.target(region, opts)
    _out({"descriptor": tgt.listen(a.bind, 5.0)})
    deadline = time.monotonic() + a.timeout
    c0, nbytes = cpu_s(), 0
    try:
        while time.monotonic() < deadline and not tgt.peers_closed():
            placed, _ = tgt.progress(0.5)
            nbytes += int(placed["nbytes"].sum()) if len(placed) else 0
        _out({"bytes": nbytes, "cpu_s": cpu_s() - c0, "data_path": tgt.data_path()})
    finally:
        tgt.close()
    return 0


def peer_initiator(a: argparse.Namespace) -> int:
    import numpy as np

    from _peer_transport import _throughput  # the same timed loop as bench_tcp.py
    from pytest_kvfabric.transports.registry import get_transport

    T = get_transport(a.transport)
    opts = {**json.loads(a.options), "token": a.token}
    region = T.allocate(a.region_bytes, opts)
    np.frombuffer(region, np.uint8)[:] = 0x5A
    ini = T.initiator(region, opts)
    try:
        ini.connect(json.loads(a.desc), 5.0)
        res = _throughput(ini, a)
        res["data_path"] = ini.data_path()
        _out(res)
    finally:
        ini.close()
    return 0


# -- the driver -----------------------------------------------------------------------------
def run_pair(name: str, *, nbytes: int, seconds: float, addr: str, place: Placement,
             batch: int, window_bytes: int, region_bytes: int = 64 << 20) -> dict[str, Any]:
    transport, opts = CONTENDERS[name]
    tns, ins = place(addr)
    common = ["--transport", transport, "--options", json.dumps(opts), "--token", os.urandom(8).hex(),
              "--region-bytes", str(region_bytes)]
    budget = seconds + 25
    me = os.path.abspath(__file__)
    env = peer_env()
    with peer(netns_prefix(tns) + [PYTHON, me, "_target", "--bind", addr, "--timeout", f"{budget:g}"]
              + common, env=env, name=f"{name}-target") as tgt:
        desc = tgt.read_json(15.0)["descriptor"]
        with peer(netns_prefix(ins) + [PYTHON, me, "_initiator", "--desc", json.dumps(desc),
                                       "--nbytes", str(nbytes), "--batch", str(batch),
                                       "--window-bytes", str(window_bytes), "--seconds", f"{seconds:g}",
                                       "--warmup", "0.3"] + common, env=env, name=f"{name}-initiator") as ini:
            res = ini.read_json(budget)
            ini.wait(15.0)
        tres = tgt.read_json(15.0)
    res["cpu_s_per_gb_receiver"] = cpu_s_per_gb(tres["cpu_s"], tres["bytes"])
    res["cpu_s_per_gb_total"] = res["cpu_s_per_gb_sender"] + res["cpu_s_per_gb_receiver"]
    return res


def run_iperf3(*, length: str, seconds: float, addr: str, place: Placement) -> dict[str, Any]:
    tns, ins = place(addr)
    res = iperf3_throughput(addr, length=length, seconds=seconds, server_netns=tns, client_netns=ins)
    res["cpu_s_per_gb_total"] = res["cpu_s_per_gb_sender"] + res["cpu_s_per_gb_receiver"]
    return res


def bench(rounds: int, seconds: float, addr: str, place: Placement, batch: int,
          window_bytes: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    for label, nbytes, length in (("64 KiB", 64 << 10, "64K"), ("1 MiB", 1 << 20, "1M")):
        contenders: dict[str, Callable[[], dict[str, Any]]] = {
            name: (lambda name=name: run_pair(name, nbytes=nbytes, seconds=seconds, addr=addr, place=place,
                                              batch=batch, window_bytes=window_bytes))
            for name in CONTENDERS
        }
        contenders["iperf3"] = lambda: run_iperf3(length=length, seconds=seconds, addr=addr, place=place)
        res = interleave(rounds, contenders, log=log)
        raw[label] = res
        gb = {k: column(v, "gbps_bytes") for k, v in res.items()}
        cpu = {k: column(v, "cpu_s_per_gb_total") for k, v in res.items()}
        for ours in ("iouring-send", "iouring-send_zc"):
            rows.append(ratio_row(f"{label} {ours} vs tcp", gb[ours], gb["tcp"], unit="GB/s",
                                  target=1.0 if (ours == "iouring-send" and label == "64 KiB") else None,
                                  ref_label="tcp"))
            rows.append(ratio_row(f"{label} {ours} vs iperf3", gb[ours], gb["iperf3"], unit="GB/s",
                                  target=None, ref_label="iperf3"))
            rows.append(ratio_row(f"{label} {ours} CPU s/GB vs tcp", cpu[ours], cpu["tcp"], unit="s/GB",
                                  target=None, higher_is_better=False, ref_label="tcp"))
        rows.append(ratio_row(f"{label} tcp vs iperf3", gb["tcp"], gb["iperf3"], unit="GB/s",
                              target=None, ref_label="iperf3"))
        rows.append(ratio_row(f"{label} tcp CPU s/GB vs iperf3", cpu["tcp"], cpu["iperf3"], unit="s/GB",
                              target=None, higher_is_better=False, ref_label="iperf3"))
        zc = [r["data_path"].get("copied_fraction") for r in res["iouring-send_zc"]]
        raw[label + " send_zc copied_fraction"] = zc
        raw[label + " medians"] = {k: {"gbps": summary(gb[k])["median"], "cpu_s_per_gb": summary(cpu[k])["median"]}
                                   for k in res}
    return rows, raw


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_target", "_initiator"):
        ap = argparse.ArgumentParser()
        ap.add_argument("role")
        ap.add_argument("--transport")
        ap.add_argument("--options", default="{}")
        ap.add_argument("--token", default="bench-token")
        ap.add_argument("--region-bytes", type=int, default=64 << 20)
        ap.add_argument("--bind", default="127.0.0.1")
        ap.add_argument("--timeout", type=float, default=60.0)
        ap.add_argument("--desc", default="")
        ap.add_argument("--nbytes", type=int, default=1 << 20)
        ap.add_argument("--batch", type=int, default=16)
        ap.add_argument("--window-bytes", type=int, default=32 << 20)
        ap.add_argument("--seconds", type=float, default=1.5)
        ap.add_argument("--warmup", type=float, default=0.3)
        a = ap.parse_args(argv)
        return peer_target(a) if a.role == "_target" else peer_initiator(a)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--window-bytes", type=int, default=32 << 20)
    ap.add_argument("--netns", action="store_true", help="across a veth namespace pair of our own")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    env = env_info()
    notes = ["pace none; GB = 1e9 B; CPU s/GB = sender + receiver",
             "send_zc on loopback/veth: the kernel copies (every notification IORING_NOTIF_USAGE_ZC_COPIED)"]
    if a.netns:
        from _common import bench_netns

        with bench_netns() as ns:
            def place(addr: str) -> tuple[str | None, str | None]:
                return ns.ns_decode, ns.ns_prefill

            rows, raw = bench(a.rounds, a.seconds, ns.addr_decode, place, a.batch, a.window_bytes)
            notes.append(f"namespace pair {ns.ns_prefill} -> {ns.ns_decode}, MTU {ns.mtu}")
    else:
        rows, raw = bench(a.rounds, a.seconds, "127.0.0.1", loopback, a.batch, a.window_bytes)
        notes.append("loopback 127.0.0.1")
    for label in ("64 KiB", "1 MiB"):
        notes.append(f"{label} medians: " + ", ".join(
            f"{k} {v['gbps']:.2f} GB/s {v['cpu_s_per_gb']:.2f} CPU s/GB" for k, v in raw[label + ' medians'].items()))
        notes.append(f"{label} send_zc copied_fraction per round: {raw[label + ' send_zc copied_fraction']}")
    emit("bench_iouring", rows, raw, env, a.json, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
