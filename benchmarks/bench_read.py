"""One-sided READ against WRITE of the same sizes, same transport, same path, interleaved.

A store fetch pulls KV (post_read: the target sends, the initiator receives); a prefill
pushes it (post: the initiator sends, the target receives). Both through the transport
alone, Target and Initiator in two processes (benchmarks/_peer_transport.py, --op read or
write), streaming through a 64 MiB region at both ends, pacing "none":

  read-1M / write-1M      throughput at 1 MiB per transfer (batches of 8)
  read-64K / write-64K    throughput at 64 KiB (batches of 64)
  read-4K / write-4K      latency, one transfer outstanding (post -> completion)

Rows are read / write: GB/s, CPU per GB on each side (the side that receives the payload
and the one that sends it), and p50 latency.

    python benchmarks/bench_read.py [--transport tcp|iouring|zerocopy] [--rounds 3] [--json]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

MIB, KIB = 1 << 20, 1 << 10


def contenders(a: argparse.Namespace, fabric: str, ns: Any) -> dict[str, Callable[[], dict[str, Any]]]:
    t_addr, t_ns, i_ns = ("127.0.0.1", None, None) if ns is None else (
        ns.pair.decode.data_addr, ns.ns_decode, ns.ns_prefill)
    out: dict[str, Callable[[], dict[str, Any]]] = {}
    for op in ("write", "read"):
        for nb, label, batch in ((MIB, "1M", 8), (64 * KIB, "64K", 64)):
            out[f"{fabric}/{op}-{label}"] = (lambda op=op, nb=nb, batch=batch: C.transport_pair(
                transport=a.transport, nbytes=nb, batch=batch, window_bytes=32 * MIB, seconds=a.seconds,
                target_addr=t_addr, target_netns=t_ns, initiator_netns=i_ns, op=op))
        out[f"{fabric}/{op}-4K"] = (lambda op=op: C.transport_pair(
            transport=a.transport, mode="latency", nbytes=4 * KIB, seconds=a.seconds,
            target_addr=t_addr, target_netns=t_ns, initiator_netns=i_ns, region_bytes=16 << 20, op=op))
    return out


def rows_for(fabric: str, raw: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    g = lambda name, key="gbps_bytes": C.column(raw[f"{fabric}/{name}"], key)  # noqa: E731
    rows = []
    for label, size in (("1M", "1 MiB"), ("64K", "64 KiB")):
        rows.append(C.ratio_row(f"{fabric}: read {size} vs write {size}", g(f"read-{label}"), g(f"write-{label}"),
                                unit="GB/s", target=None, ref_label="write"))
    # _peer_transport's initiator CPU is "sender", the target's "receiver" (named for writes)
    rows.append(C.ratio_row(f"{fabric}: CPU receiving the payload per GB, 1 MiB: read (initiator) vs write (target)",
                            g("read-1M", "cpu_s_per_gb_sender"), g("write-1M", "cpu_s_per_gb_receiver"),
                            unit="CPU s/GB", target=None, higher_is_better=False, ref_label="write"))
    rows.append(C.ratio_row(f"{fabric}: CPU sending the payload per GB, 1 MiB: read (target) vs write (initiator)",
                            g("read-1M", "cpu_s_per_gb_receiver"), g("write-1M", "cpu_s_per_gb_sender"),
                            unit="CPU s/GB", target=None, higher_is_better=False, ref_label="write"))
    rows.append(C.ratio_row(f"{fabric}: p50 latency 4 KiB, read vs write", g("read-4K", "p50_us"),
                            g("write-4K", "p50_us"), unit="µs", target=None, higher_is_better=False,
                            ref_label="write"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="one-sided READ vs WRITE, interleaved rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per run")
    ap.add_argument("--fabric", choices=["loopback", "netns", "both"], default="loopback")
    ap.add_argument("--transport", default="tcp")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    env = C.env_info()
    notes = [f"{a.rounds} rounds, order rotated each round; {a.seconds:g} s timed per run; transport {a.transport}"]
    raw, rows = C.run_fabrics(a.fabric, a.rounds, lambda fabric, ns: contenders(a, fabric, ns),
                              rows_for, notes)
    C.emit("bench_read", rows, raw, env, a.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
