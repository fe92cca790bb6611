"""`kvfabric sweep --transport NAMES [--sizes 4KiB..64MiB] [--batch N,...] [--fabric F] [--json PATH]`:
write throughput, latency percentiles and CPU cost against transfer size, every page verified."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..fabric.select import FABRICS, get_fabric
from ..harness.progress import Progress, human_seconds
from ..run import sweepplan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="transfer-size sweep: throughput, latency and CPU per size and transport",
                       description=__doc__.splitlines()[0])
    p.add_argument("--transport", required=True, metavar="NAMES", help="comma list of transports")
    p.add_argument("--sizes", default=sweepplan.DEFAULT_SIZES,
                   help=f"LO..HI (powers of two) or a comma list; KiB/MiB binary, KB/MB decimal (default {sweepplan.DEFAULT_SIZES})")
    p.add_argument("--batch", default="1", metavar="N[,N...]", help="writes posted together per request (default 1)")
    p.add_argument("--depth", type=int, default=4, metavar="D", help="requests (batches) in flight (default 4)")
    p.add_argument("--seconds", type=float, default=sweepplan.DEFAULT_SECONDS,
                   help=f"time per size before no new request starts (default {sweepplan.DEFAULT_SECONDS:g})")
    p.add_argument("--fabric", default=FABRICS[0], choices=FABRICS, help="where the two agents run (default local)")
    p.add_argument("--hosts", metavar="PATH", help="host-pair inventory for --fabric hosts (its first pair)")
    p.add_argument("--transport-param", action="append", default=[], metavar="KEY=VALUE",
                   help="transport parameter, repeatable (as kvfabric run)")
    p.add_argument("--json", metavar="PATH", help="write the sweep report (input to `kvfabric report`)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> tuple[list[str], list[int], list[int], dict[str, Any]]:
    from ..errors import ProfileError, UnknownIdError
    from ..harness.options import transport_params
    from ..transports.registry import available_names

    names = [t.strip() for t in args.transport.split(",") if t.strip()]
    for t in names:
        if t not in available_names():
            raise UnknownIdError("transport", t, available_names(), "<cli>")
    if not names:
        raise ProfileError("<cli>", "--transport", "no transport given")
    if args.depth < 1:
        raise ProfileError("<cli>", "--depth", f"must be >= 1, got {args.depth}")
    if not 0 < args.seconds <= 3600:
        raise ProfileError("<cli>", "--seconds", f"must be in (0, 3600], got {args.seconds:g}")
    if get_fabric(args.fabric).needs_inventory and not args.hosts:
        raise ProfileError("<cli>", "--hosts", f"--fabric {args.fabric} needs an inventory (--hosts PATH)")
    return (names, sweepplan.parse_sizes(args.sizes), sweepplan.parse_counts(args.batch, "--batch"),
            transport_params(args.transport_param, "--transport-param"))


def run(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from ..errors import KvFabricError
    from ..fabric.select import open_pair
    from ..core.profiles import DEFAULT_GPU, DEFAULT_MODEL, load_gpu, load_model
    from ..report import fingerprint
    from ..run.runner import AgentPair
    from ..core.scenario import Scenario

    names, sizes, batches, params = _check(args)
    base = Scenario(id="sweep", model=load_model(DEFAULT_MODEL), gpu=load_gpu(DEFAULT_GPU))
    npoints = len(names) * len(sizes) * len(batches)
    # Each point: its time budget plus agent setup; say so before a long sweep starts.
    predicted = npoints * (args.seconds + 1.0)
    if predicted >= 60:
        sys.stderr.write(f"kvfabric sweep: {npoints} points, about {human_seconds(predicted)} "
                         f"({args.seconds:g} s per size and transport)\n")
    pair, close = open_pair(args.fabric, worker=0, hosts_file=args.hosts)
    points: list[dict[str, Any]] = []
    failures: list[str] = []
    progress = Progress()
    t0 = time.monotonic()
    done = 0
    try:
        for t in names:
            reason = _unavailable(pair, t, params)
            if reason:
                failures.append(f"transport {t!r} not available: {reason}")
                done += len(sizes) * len(batches)
                continue
            with AgentPair(pair, None, {}) as agents:
                for b in batches:
                    for size in sizes:
                        eta = (time.monotonic() - t0) / done * (npoints - done) if done else predicted
                        progress.update(f"sweep {t} {sweepplan_size(size)} batch {b}: point {done + 1}/{npoints}, "
                                        f"about {human_seconds(eta)} left", force=True)
                        sc = sweepplan.point_scenario(base, t, size, b, args.depth, args.seconds, params)
                        agents.timeout_s = sweepplan.timeout_s(size, b, args.seconds)
                        try:
                            res = agents.run(sc).to_dict()
                        except KvFabricError as exc:
                            failures.append(f"{t} {sweepplan_size(size)} batch {b}: {type(exc).__name__}: {exc}")
                            done += 1
                            continue
                        points.append(sweepplan.point_record(t, size, b, args.depth, res))
                        done += 1
    finally:
        progress.close()
        close()
    print(_table(points))
    if args.json:
        report = {"format": sweepplan.SWEEP_FORMAT, "version": 1,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "pair": pair.name, "fabric": args.fabric,
                  "settings": {"sizes": sizes, "batches": batches, "depth": args.depth, "seconds": args.seconds,
                               "transport_params": params},
                  "environment": fingerprint.fingerprint(interfaces=_here(pair)),
                  "points": points}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    for line in failures:
        sys.stderr.write(f"kvfabric sweep: {line.splitlines()[0]}\n")
    return 1 if failures else 0


def _unavailable(pair: Any, transport: str, params: dict[str, Any]) -> str | None:
    from ..harness.case import pair_probe_reason, probe_reason

    if get_fabric(pair.fabric).probes_here:
        r = probe_reason(transport, params)
        return r.split(": ", 1)[1] if r and r.startswith(f"{transport}: ") else r
    return pair_probe_reason(pair, transport, params)


def _here(pair: Any) -> list[tuple[str, str | None]]:
    """The pair's interfaces that this host can fingerprint: the agents' own, when they run here."""
    fabric = get_fabric(pair.fabric)
    return [(i["name"], i["netns"]) for i in fabric.interfaces(pair)] if fabric.probes_here else []


def sweepplan_size(n: int) -> str:
    from ..report.fig_compare import human_size

    return human_size(n)


def _table(points: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    rows = [(p["transport"], sweepplan_size(p["size_bytes"]), p["batch"], p["transfers"],
             f(p["throughput_gbps"]), f((p["latency_us"] or {}).get("p50")), f((p["latency_us"] or {}).get("p99")),
             f((p["cpu_s_per_gb"] or {}).get("sender")), f((p["cpu_s_per_gb"] or {}).get("receiver")),
             (p["integrity"] or {}).get("pages_checked"), (p["integrity"] or {}).get("errors"))
            for p in points]
    return tabulate(rows, headers=["transport", "size", "batch", "writes", "Gb/s", "p50 µs", "p99 µs",
                                   "CPU s/GB S", "CPU s/GB R", "pages checked", "errors"])
