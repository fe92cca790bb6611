"""Scenario flags shared by `kvfabric plan` and `kvfabric run`: one place turns args into a Scenario."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from ..emulator.kvlayout import kv_layout
from ..core.limits import MAX_MODEL_DIM, MAX_POOL_MIB, MAX_REQUESTS, MAX_SEED, MAX_TOKENS, check_number
from ..emulator.workload import PRESETS
from ..core.profiles import KV_DTYPE_BITS, load_gpu, load_model
from ..core.scenario import ACCESS_PATTERNS, DEFAULT_POOL_MIB, Deployment, Scenario

DEFAULT_ISL = 1024
DEFAULT_OSL = 128


def int_in(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum] (argparse names the flag on error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None
        why = check_number(value, minimum, maximum)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value
    parse.__name__ = "integer"
    return parse


def float_in(minimum: float, maximum: float, exclusive_minimum: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in range (NaN and infinity are refused)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
        why = check_number(value, minimum, maximum, exclusive_minimum)
        if why:
            raise argparse.ArgumentTypeError(why)
        return value
    parse.__name__ = "number"
    return parse


positive_int = int_in(1, MAX_MODEL_DIM)
non_negative_int = int_in(0, MAX_MODEL_DIM)
token_count = int_in(1, MAX_TOKENS)


def add_profile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profiles", metavar="DIR", action="extend", nargs="+", default=[],
                        help="extra profile directory, searched before the shipped profiles (repeatable)")


def add_scenario_args(parser: argparse.ArgumentParser, default_gpu: str | None = None) -> None:
    """Every flag that shapes a Scenario (plan and run take the same ones); with default_gpu,
    --gpu is optional."""
    parser.add_argument("--model", required=True, help="model profile id, alias, or path to a YAML profile")
    if default_gpu is None:
        parser.add_argument("--gpu", required=True, help="GPU profile id, alias, or path to a YAML profile")
    else:
        parser.add_argument("--gpu", default=default_gpu, help=f"GPU profile id, alias, or path (default {default_gpu})")
    parser.add_argument("--isl", type=token_count, help=f"input tokens per request (default {DEFAULT_ISL}, or the preset's)")
    parser.add_argument("--osl", type=token_count, help=f"output tokens per request (default {DEFAULT_OSL}, or the preset's)")
    parser.add_argument("--requests", type=int_in(1, MAX_REQUESTS), help="number of requests (default 1, or the preset's)")
    parser.add_argument("--workload", choices=sorted(PRESETS), help="application preset (ISL/OSL distributions, arrivals)")
    parser.add_argument("--prefill-tp", type=positive_int, default=1)
    parser.add_argument("--decode-tp", type=positive_int, default=1)
    parser.add_argument("--prefill-pp", type=positive_int, default=1)
    parser.add_argument("--decode-pp", type=positive_int, default=1)
    parser.add_argument("--page-size", type=token_count, default=16, help="tokens per KV page (block)")
    parser.add_argument("--access", choices=ACCESS_PATTERNS, default="layer",
                        help="layer: one transfer per layer per page; block: one per page with all stage layers")
    parser.add_argument("--kv-dtype", choices=sorted(KV_DTYPE_BITS), help="KV dtype (default: the model's)")
    parser.add_argument("--chunk", type=int_in(0, MAX_TOKENS), default=0, help="chunked-prefill chunk in tokens (0 = whole prompt)")
    parser.add_argument("--dp-attention", action="store_true", help="data-parallel attention (MLA latent not replicated)")
    parser.add_argument("--prefill-ep", type=int_in(1, MAX_MODEL_DIM), default=1, help="expert parallelism of the prefill side (divides its TP)")
    parser.add_argument("--decode-ep", type=int_in(1, MAX_MODEL_DIM), default=1, help="expert parallelism of the decode side (divides its TP)")
    parser.add_argument("--max-batch-tokens", type=int_in(0, MAX_TOKENS), default=0,
                        help="continuous batching: prompt tokens per prefill step (0 = one request per step)")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    parser.add_argument("--pool-mib", type=int_in(1, MAX_POOL_MIB), default=DEFAULT_POOL_MIB,
                        help=f"emulated HBM KV pool per side, MiB (default {DEFAULT_POOL_MIB})")
    add_profile_args(parser)


def workload_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The workload flags as suite-YAML fields: a preset, else the CLI's own default request."""
    spec: dict[str, Any] = {"preset": args.workload} if getattr(args, "workload", None) else {
        "isl": DEFAULT_ISL, "osl": DEFAULT_OSL, "requests": 1}
    for key in ("isl", "osl", "requests"):
        if getattr(args, key, None) is not None:
            spec[key] = getattr(args, key)
    return spec


def scenario_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario flag as suite-YAML fields (layer 3 of harness/resolve.py)."""
    common = {"page_size": args.page_size, "access": args.access, "kv_dtype": args.kv_dtype,
              "dp_attention": args.dp_attention}
    return {
        "prefill": {**common, "tp": args.prefill_tp, "pp": args.prefill_pp, "chunk_tokens": args.chunk,
                    "ep": args.prefill_ep, "max_batch_tokens": args.max_batch_tokens},
        "decode": {**common, "tp": args.decode_tp, "pp": args.decode_pp, "chunk_tokens": 0, "ep": args.decode_ep},
        "workload": workload_fields(args),
        "seed": args.seed,
        "pool_mib": args.pool_mib,
    }


def scenario_from_args(args: argparse.Namespace, scenario_id: str = "cli") -> Scenario:
    """Resolve profiles and build the Scenario. Bad ids/values raise KvFabricError (one line, exit 2)."""
    from ..harness.resolve import build, fit

    dirs = list(args.profiles or [])
    model = load_model(args.model, dirs)
    gpu = load_gpu(args.gpu, dirs)
    fields = scenario_fields(args)
    kv_layout(model, Deployment(**fields["prefill"]), "<cli>", "prefill")  # fail fast, naming the side and the valid TP values
    kv_layout(model, Deployment(**fields["decode"]), "<cli>", "decode")
    scenario = build(fields, id=scenario_id, model=model, gpu=gpu, transport="tcp", source="<cli>")
    return fit(scenario, (), "<cli>")  # deployments the user chose: no TP raised, a misfit is an error
