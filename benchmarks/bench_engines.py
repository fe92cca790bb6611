"""Our `tcp` against the production engines as plug-ins (`nixl`, `mooncake`), same scenarios, one run.

Every contender is the whole product path (run_scenario: two agent processes, pattern fill,
every page verified), so the figures compare transports, not micro-loops. Rounds are
interleaved (order rotated each round); ratios are ours (tcp) / engine, per round, with the
median's confidence interval. Contenders:
  tcp            the built-in kernel TCP transport
  nixl-tcp       NIXL WRITE over UCX with ucx_tls=tcp, ucx_net_devices=lo (the network path)
  nixl-default   NIXL over UCX left to choose (on one host: cma, a kernel copy between processes)
  mooncake       Mooncake Transfer Engine, protocol tcp, P2PHANDSHAKE

    python benchmarks/bench_engines.py [--rounds 3] [--sizes 64K,1M] [--json]
Needs both plug-ins installed with their engines (`bash .ci/plugins` does it); a missing one
makes the script say exactly why and exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

SIZES = {"64K": (64 << 10, 512, 32), "1M": (1 << 20, 128, 8), "16M": (16 << 20, 16, 2)}  # nbytes, transfers, batch
ENGINES: dict[str, tuple[str, dict[str, Any]]] = {
    "tcp": ("tcp", {}),
    "nixl-tcp": ("nixl", {"ucx_tls": "tcp", "ucx_net_devices": "lo"}),
    "nixl-default": ("nixl", {}),
    "mooncake": ("mooncake", {"protocol": "tcp"}),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tcp vs NIXL (UCX) vs Mooncake, whole product path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="64K,1M", help=f"comma list of {', '.join(SIZES)}")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from pytest_kvfabric.transports import registry

    sizes = [s for s in a.sizes.split(",") if s]
    engines = [e for e in a.engines.split(",") if e]
    for bad in [s for s in sizes if s not in SIZES] + [e for e in engines if e not in ENGINES]:
        print(f"bench_engines: unknown size or engine {bad!r}", file=sys.stderr)
        return 2
    for e in engines:
        name, params = ENGINES[e]
        cap = registry.probe(name, params)
        if not cap.available:
            print(f"bench_engines: {e} unavailable: {cap.reason}", file=sys.stderr)
            return 2
    env = C.env_info()
    cont: dict[str, Callable[[], dict[str, Any]]] = {}
    for s in sizes:
        nbytes, transfers, batch = SIZES[s]
        for e in engines:
            name, params = ENGINES[e]
            sc = C.synthetic_scenario(nbytes=nbytes, transfers=transfers, batch=batch, pacing="none",
                                      transport=name, transport_params=params)
            cont[f"{e}-{s}"] = lambda sc=sc: C.runner_figures(sc, timeout_s=300)
    raw = C.interleave(a.rounds, cont, log=C.log)
    g = lambda n, key="gbps_bytes": C.column(raw[n], key)  # noqa: E731
    rows = []
    for s in sizes:
        for e in engines:
            if e == "tcp" or "tcp" not in engines:
                continue
            rows.append(C.ratio_row(f"tcp vs {e}, {s} writes", g(f"tcp-{s}"), g(f"{e}-{s}"), unit="GB/s",
                                    target=1.0, ref_label=e))
            for side in ("sender", "receiver"):
                rows.append(C.ratio_row(f"CPU {side} tcp vs {e}, {s}", g(f"tcp-{s}", f"cpu_s_per_gb_{side}"),
                                        g(f"{e}-{s}", f"cpu_s_per_gb_{side}"), unit="CPU s/GB", target=None,
                                        higher_is_better=False, ref_label=e))
    notes = [f"{a.rounds} rounds, order rotated each round; loopback; shared busy host (2 cores)",
             "each run: run_scenario, synthetic writes posted as fast as taken (pacing none), every page verified; "
             "sizes: " + ", ".join(f"{s} = {SIZES[s][1]} writes in batches of {SIZES[s][2]}" for s in sizes),
             "target 1.0: our tcp at least as fast as the engine on this machine"]
    C.emit("bench_engines", rows, raw, env, a.json, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
