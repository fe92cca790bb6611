"""`kvfabric run`: run one scenario between two local agents over loopback and print its figures."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..endpoint.prefill import MAX_INFLIGHT
from ..harness.progress import Progress, eta_s, human_bytes, human_seconds
from ..errors import IntegrityError, TransportError
from ..core.limits import MAX_TIMEOUT_S
from ..core.profiles import DEFAULT_GPU
from ..core.scenario import FAULTS, PACINGS
from ..emulator.flows import MAX_INSTANCES, MAX_RAILS, ROUTINGS
from ._scenario_args import add_scenario_args, float_in, int_in, positive_int, scenario_from_args


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="move a scenario's KV bytes between two local agents and measure",
        description=__doc__.splitlines()[0],
    )
    add_scenario_args(p, default_gpu=DEFAULT_GPU)  # --gpu is optional for run (a sensible default GPU)
    p.add_argument("--transport", required=True, help="transport name (kvfabric run lists them on a bad name)")
    p.add_argument("--pace", choices=PACINGS, default=PACINGS[0],
                   help="emulated: post each layer when the emulated GPU has computed it; none: as fast as possible")
    p.add_argument("--connections", type=positive_int, help="parallel connections (stream transports)")
    p.add_argument("--transport-param", action="append", default=[], metavar="KEY=VALUE",
                   help="transport parameter, repeatable (e.g. mode=send_zc, interface=eth2), as pytest's --kv-transport-param")
    p.add_argument("--window", type=positive_int, default=MAX_INFLIGHT,
                   help=f"max writes in flight (default {MAX_INFLIGHT})")
    p.add_argument("--timeout", type=float_in(0, MAX_TIMEOUT_S, exclusive_minimum=True), help="run timeout in seconds (default: derived from the scenario)")
    p.add_argument("--inject", choices=FAULTS, help="inject one fault to prove the checks catch it "
                   "(corrupt, misplace, drop: integrity error; kill, stall: transport error); exit 1 expected")
    p.add_argument("--no-verify", action="store_true", help="skip page verification at the decode side")
    p.add_argument("--json", metavar="PATH", help="write the Result as JSON (the README lists the keys)")
    p.add_argument("--rails", type=int_in(1, MAX_RAILS), default=1, metavar="N",
                   help="agents per instance and side (prefill rank k on rail k mod N; on loopback every rail is lo)")
    p.add_argument("--prefill-instances", type=int_in(1, MAX_INSTANCES), default=1, metavar="P",
                   help="prefill instances (xPyD), each its own agent(s)")
    p.add_argument("--decode-instances", type=int_in(1, MAX_INSTANCES), default=1, metavar="D",
                   help="decode instances (xPyD), each its own agent(s)")
    p.add_argument("--routing", choices=ROUTINGS, default=ROUTINGS[0], help="how requests pick a decode instance")
    p.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="run the scenario N times back to back on the same agents; print and write the median "
                        "figures, each gated figure's 95%% interval, and (JSON 'repeats') every run")
    p.set_defaults(func=main)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "  ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def table(d: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [
        ("scenario", d["scenario"]), ("transport / pair", f"{d['transport']} / {d['pair']}"),
        ("model / gpu", f"{d['model']} / {d['gpu']}"), ("pacing", d["pacing"]),
        ("requests", f"{d['requests_completed']} of {d['requests']} completed"),
        ("transfers / bytes", f"{d['transfers']} / {d['bytes']}"),
        ("throughput Gb/s", _fmt(d["throughput_gbps"])), ("throughput GB/s", _fmt(d["throughput_GBps"])),
        ("latency us", _fmt(d["latency_us"])), ("exposed ms", _fmt(d["exposed_ms"])),
        ("transfer ms / request", _fmt(d["transfer_ms"])), ("ttft ms", _fmt(d["ttft_ms"])),
        ("tpot ms", _fmt(d["tpot_ms"])), ("post lateness us", _fmt(d["post_lateness_us"])),
        ("post() call us", _fmt(d["post_call_us"])),
        ("cpu s/GB", _fmt(d["cpu_s_per_gb"])), ("of which spin s/GB", _fmt(d["spin_s_per_gb"])),
        ("retransmits", _fmt(d["retransmits"])),
        ("connect / register ms", f"{_fmt(d['connect_ms'])} / {_fmt(d['register_ms'])}"),
        ("integrity", f"{d['integrity']['pages_checked']} pages checked, {d['integrity']['errors']} errors"),
        ("data path", (d["data_path"].get("sender") or {}).get("description", "-")),
        ("agent hot path", _per_side(d, "hot_path")),
    ]
    cap = d.get("capacity")
    if cap:
        rows.append(("needs / carried Gb/s", f"{_fmt(cap.get('needed_gbps'))} / {_fmt(cap.get('carried_gbps'))}"
                     + (" (short)" if cap.get("short") else "")))
    if any((d["data_path"].get(side) or {}).get("busy_poll_us") is not None for side in _SIDES):
        rows.append(("busy poll us", _per_side(d, "busy_poll_us")))  # a spinning side's cpu s/GB is its spin
    return tabulate(rows, tablefmt="simple")


_SIDES = ("sender", "receiver")


def _per_side(d: dict[str, Any], key: str) -> str:
    """'sender X / receiver Y' from each side's data_path report ('-' where a side lacks it)."""
    return " / ".join(f"{side} {_fmt((d['data_path'].get(side) or {}).get(key))}" for side in _SIDES)


LONG_RUN_S = 60.0  # a plan predicted to take at least this long is announced before it starts


def predicted_s(scenario: Any) -> tuple[float, int, int]:
    """(emulated seconds, bytes, requests) of the scenario's plan: its arrivals and serial
    prefills (the GPU's time, which pacing waits out) and what it moves."""
    from ..emulator.plan import build_plan

    plan = build_plan(scenario)
    req = plan.requests
    emulated_ns = (int(req["arrival_ns"].max()) if len(req) else 0) + int(req["prefill_ns"].sum())
    return (emulated_ns / 1e9 if scenario.pacing == "emulated" else 0.0), int(plan.total_bytes), len(req)


PROBE_FROM_BYTES = 1 << 30  # an unpaced run this large gets a capacity probe first (for its time estimate)
PACED_PROBE_FROM_BYTES = 64 << 20  # a paced one from here (needed against carried Gb/s)


def _capacity(scenario: Any) -> Any:
    """Needed against carried Gb/s on loopback (a 0.3 s probe), for paced or large runs; else None."""
    from ..measure.capacity import Capacity, needed_gbps
    from ..run.capacity_probe import carried_gbps
    from ..emulator.plan import build_plan
    from ..fabric.local import local_pair

    plan = build_plan(scenario)
    paced = scenario.pacing == "emulated" and not scenario.synthetic
    if plan.total_bytes < (PACED_PROBE_FROM_BYTES if paced else PROBE_FROM_BYTES):
        return None  # over in moments whatever the link: not worth a probe
    need = needed_gbps(plan.total_bytes, float(plan.requests["prefill_ns"].sum())) if paced else None
    carried, how = carried_gbps(local_pair(), scenario.transport, scenario.transport_params)
    return Capacity(need, carried, how)


def short_link_line(capacity: Any) -> str | None:
    if capacity is None or not capacity.short:
        return None
    return (f"kvfabric run: {capacity.sentence()}: exposed time grows with every request "
            "(this link is slower than the scenario's deployment)")


def predicted_notice(scenario: Any, capacity: Any = None) -> str | None:
    """One line when the plan predicts minutes (its emulated prefill time, or its bytes at the rate
    the pair carried); None for a short run."""
    secs, nbytes, nreq = predicted_s(scenario)
    carried = getattr(capacity, "carried_gbps", None)
    xfer = nbytes * 8 / (carried * 1e9) if carried else 0.0
    if max(secs, xfer) < LONG_RUN_S:
        return None
    rate = f" and the bytes take {human_seconds(xfer)} at the {carried:.3g} Gb/s this pair carried" if carried else ""
    return (f"kvfabric run: this plan moves {human_bytes(nbytes)} in {nreq} request(s); its emulated prefill "
            f"takes {human_seconds(secs)}{rate}: expect at least {human_seconds(max(secs, xfer))}")


def progress_line(p: dict[str, Any]) -> str:
    left = eta_s(p["bytes_done"], p["bytes_total"], p["elapsed_s"])
    eta = "" if left is None else f", about {human_seconds(left)} left"
    return (f"requests {p['requests_done']}/{p['requests']}, {human_bytes(p['bytes_done'])} of "
            f"{human_bytes(p['bytes_total'])} moved{eta}")


def main(args: argparse.Namespace) -> int:
    from ..run.runner import AgentPair
    from ..transports.registry import available_names, probe

    if args.transport not in available_names():
        from ..errors import UnknownIdError

        raise UnknownIdError("transport", args.transport, available_names(), "<cli>")  # exit 2
    if args.json:
        from ..core.outpath import check_output_path

        check_output_path(args.json, "--json", "<cli>")
    sc = scenario_from_args(args, scenario_id="run")
    from ..harness.options import transport_params

    params = transport_params(args.transport_param, "--transport-param")
    if args.connections:
        params["connections"] = args.connections
    from ..core.scenario import INJECT_PARAM
    from ..transports.registry import check_params

    if args.inject:
        params[INJECT_PARAM] = args.inject
    why = check_params([args.transport], params)
    if why:
        from ..errors import ProfileError

        raise ProfileError("<cli>", "--transport-param", why)  # exit 2, before any agent starts
    cap = probe(args.transport, params)
    if not cap.available:  # both agents run on this host: its probe decides
        sys.stderr.write(f"kvfabric run: transport {args.transport!r} not available: {cap.reason}\n")
        return 1
    from ..core.scenario import Topology

    sc = dataclasses.replace(sc, transport=args.transport, pacing=args.pace, transport_params=params,
                             verify=not args.no_verify, rails=args.rails,
                             topology=Topology(args.prefill_instances, args.decode_instances, args.routing))
    result = None
    capacity = _capacity(sc)
    for line in filter(None, (predicted_notice(sc, capacity), short_link_line(capacity))):
        sys.stderr.write(line + "\n")
    progress = Progress()
    runs: list[dict[str, Any]] = []
    try:
        with _agents(sc, args) as agents:
            if progress.enabled and isinstance(agents, AgentPair):  # on a terminal only: piped output stays the table alone
                agents.on_progress = lambda p: progress.update(progress_line(p))
                # Until the first report: the agents rebuild the plan and fill their pools.
                progress.update("starting the agents: plan, emulated HBM pools, page patterns ...", force=True)
            try:
                for _ in range(args.repeat):
                    result = agents.run(sc)
                    runs.append(result.to_dict())
            finally:
                progress.close()
    except IntegrityError as exc:
        result = getattr(exc, "result", None)
        err = f"kvfabric run: integrity error: {exc}"
    except TransportError as exc:
        err = f"kvfabric run: transport error: {exc}"
    else:
        err = None
    if result is not None and not runs:
        runs.append(result.to_dict())  # the failed run's partial figures
    if runs:
        d = _with_repeats(runs)
        if capacity is not None:
            d["capacity"] = capacity.to_dict()
        print(table(d))
        if d.get("flows"):
            print(flow_table(d))
        if len(runs) > 1:
            print(repeat_table(runs))
        from ..lab.env import TCG_NOTE, virtualized

        if virtualized() == "tcg":
            print(f"kvfabric run: {TCG_NOTE}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(d, f, indent=2, sort_keys=True)
                f.write("\n")
    if err is not None:
        sys.stderr.write(err.splitlines()[0] + "\n")
        return 1
    return 0


def _agents(sc: Any, args: argparse.Namespace) -> Any:
    """One agent pair, or a FlowRunner on a loopback layout for rails and instances (run/flows.py)."""
    from ..run.runner import AgentPair

    if not sc.multi_agent:
        return AgentPair(None, args.timeout, {"max_inflight": args.window})
    from ..fabric.local import local_layout
    from ..run.flows import FlowRunner

    return FlowRunner(local_layout(sc.rails, sc.topology.shape), args.timeout, {"max_inflight": args.window})


def flow_table(d: dict[str, Any]) -> str:
    """Per rail, per instance and per flow figures of a multi-agent run."""
    from tabulate import tabulate

    rows = []
    for e in d.get("per_rail") or ():
        rows.append((f"rail {e['rail']} ({e['interface']})", e["bytes"], _fmt(e.get("throughput_gbps")),
                     _fmt((e.get("exposed_ms") or {}).get("p99")), _fmt(e.get("retransmits"))))
    for side in ("prefill", "decode"):
        for e in (d.get("per_instance") or {}).get(side) or ():
            rows.append((f"{side} {e[side]}", e.get("bytes", 0), _fmt(e.get("throughput_gbps")),
                         _fmt((e.get("exposed_ms") or {}).get("p99")), _fmt(e.get("retransmits"))))
    for e in d.get("flows") or ():
        rows.append((f"flow {e['flow']}", e["bytes"], _fmt(e.get("throughput_gbps")),
                     _fmt((e.get("exposed_ms") or {}).get("p99")), _fmt(e.get("retransmits"))))
    out = tabulate(rows, headers=["", "bytes", "Gb/s", "exposed p99 ms", "retransmits"])
    extra = [f"fairness (Jain, flows): {_fmt(d.get('fairness_jain'))}"]
    if d.get("incast_penalty_ms") is not None:
        extra.append(f"incast penalty p99 ms (N senders minus one sender): {_fmt(d['incast_penalty_ms'])}")
    return out + "\n" + "\n".join(extra)


def _with_repeats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run as it was; several: the median figures plus every run under "repeats"."""
    if len(runs) == 1:
        return runs[0]
    from ..report.repeats import median_metrics

    return {**median_metrics(runs), "repeats": runs}


def repeat_table(runs: list[dict[str, Any]]) -> str:
    """Each gated figure over the repeats: median [95% interval], min..max."""
    from tabulate import tabulate

    from ..report.gate_metrics import GATED, lookup
    from ..report.repeats import spread

    rows = []
    for m in GATED:
        vals = [v for v in (lookup(r, m.path) for r in runs) if v is not None]
        if vals:
            med, lo, hi = spread(vals)
            rows.append((m.label, f"{med:.4g}", f"[{lo:.4g}, {hi:.4g}]", f"{min(vals):.4g} .. {max(vals):.4g}"))
    return tabulate(rows, headers=[f"over {len(runs)} repeats", "median", "95% CI", "min .. max"])
