"""`kvfabric run`: run one scenario between two local agents over loopback and print its figures."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..endpoint.prefill import MAX_INFLIGHT
from ..errors import IntegrityError, TransportError
from ..limits import MAX_TIMEOUT_S
from ._scenario_args import add_scenario_args, float_in, positive_int, scenario_from_args

DEFAULT_GPU = "h100"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="move a scenario's KV bytes between two local agents and measure",
        description=__doc__.splitlines()[0],
    )
    add_scenario_args(p)
    for action in p._actions:  # --gpu is optional for run (a sensible default GPU)
        if action.dest == "gpu":
            action.required = False
            action.default = DEFAULT_GPU
            action.help = f"GPU profile id, alias, or path (default {DEFAULT_GPU})"
    p.add_argument("--transport", required=True, help="transport name (kvfabric run lists them on a bad name)")
    p.add_argument("--pace", choices=("emulated", "none"), default="emulated",
                   help="emulated: post each layer when the emulated GPU has computed it; none: as fast as possible")
    p.add_argument("--connections", type=positive_int, help="parallel connections (stream transports)")
    p.add_argument("--transport-param", action="append", default=[], metavar="KEY=VALUE",
                   help="transport parameter, repeatable (e.g. mode=send_zc, interface=eth2), as pytest's --kv-transport-param")
    p.add_argument("--window", type=positive_int, default=MAX_INFLIGHT,
                   help=f"max writes in flight (default {MAX_INFLIGHT})")
    p.add_argument("--timeout", type=float_in(0, MAX_TIMEOUT_S, exclusive_minimum=True), help="run timeout in seconds (default: derived from the scenario)")
    p.add_argument("--no-verify", action="store_true", help="skip page verification at the decode side")
    p.add_argument("--json", metavar="PATH", help="write the Result as JSON (the README lists the keys)")
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
    if any((d["data_path"].get(side) or {}).get("busy_poll_us") is not None for side in _SIDES):
        rows.append(("busy poll us", _per_side(d, "busy_poll_us")))  # a spinning side's cpu s/GB is its spin
    return tabulate(rows, tablefmt="simple")


_SIDES = ("sender", "receiver")


def _per_side(d: dict[str, Any], key: str) -> str:
    """'sender X / receiver Y' from each side's data_path report ('-' where a side lacks it)."""
    return " / ".join(f"{side} {_fmt((d['data_path'].get(side) or {}).get(key))}" for side in _SIDES)


def main(args: argparse.Namespace) -> int:
    from ..runner import AgentPair
    from ..transports.registry import available_names, probe

    if args.transport not in available_names():
        from ..errors import UnknownIdError

        raise UnknownIdError("transport", args.transport, available_names(), "<cli>")  # exit 2
    if args.json:
        from ..outpath import check_output_path

        check_output_path(args.json, "--json", "<cli>")
    sc = scenario_from_args(args, scenario_id="run")
    from ..options import transport_params

    params = transport_params(args.transport_param, "--transport-param")
    if args.connections:
        params["connections"] = args.connections
    cap = probe(args.transport, params)
    if not cap.available:  # both agents run on this host: its probe decides
        sys.stderr.write(f"kvfabric run: transport {args.transport!r} not available: {cap.reason}\n")
        return 1
    sc = dataclasses.replace(sc, transport=args.transport, pacing=args.pace, transport_params=params,
                             verify=not args.no_verify)
    result = None
    runs: list[dict[str, Any]] = []
    try:
        with AgentPair(None, args.timeout, {"max_inflight": args.window}) as agents:
            for _ in range(args.repeat):
                result = agents.run(sc)
                runs.append(result.to_dict())
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
        print(table(d))
        if len(runs) > 1:
            print(repeat_table(runs))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(d, f, indent=2, sort_keys=True)
                f.write("\n")
    if err is not None:
        sys.stderr.write(err.splitlines()[0] + "\n")
        return 1
    return 0


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
