"""The netns fabric's options (--kv-netns-*, `kvfabric sweep`), parsed and checked in one place.

Pure: no namespace is touched here, so the plugin's option check and the fabric read the same
rules (the offload toggles used to be parsed four times)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OFFLOAD_KEYS = ("gro", "gso", "tso")
NETNS_OPTION_KEYS = ("mtu", "offloads", "rate_mbit", "cpu_split")


def parse_offloads(value: str | Mapping[str, Any] | None) -> dict[str, bool]:
    """'gro=off,tso=on' (or {'gro': False, 'tso': True}) -> {'gro': False, 'tso': True}.

    Raises ValueError naming the offending item and what is valid."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        items = [(str(k).strip().lower(), bool(v), f"{k}={v}") for k, v in value.items()]
    else:
        items = []
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, val = item.partition("=")
            val = val.strip().lower()
            if not sep or val not in ("on", "off"):
                raise ValueError(f"offload {key.strip().lower()!r} needs =on or =off, got {item!r} "
                                 f"(expected FEATURE=on|off, FEATURE one of {', '.join(OFFLOAD_KEYS)})")
            items.append((key.strip().lower(), val == "on", item))
    out: dict[str, bool] = {}
    for key, on, _ in items:
        if key not in OFFLOAD_KEYS:
            raise ValueError(f"unknown offload {key!r}; valid: {', '.join(OFFLOAD_KEYS)}")
        out[key] = on
    return out


def netns_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """NetnsPair.create's keyword arguments from the fabric options; ValueError names the option."""
    unknown = sorted(set(options) - set(NETNS_OPTION_KEYS))
    if unknown:
        raise ValueError(f"unknown netns option(s) {', '.join(unknown)}; valid: {', '.join(NETNS_OPTION_KEYS)}")
    kw: dict[str, Any] = {}
    if options.get("mtu") is not None:
        kw["mtu"] = int(options["mtu"])
    try:
        offloads = parse_offloads(options.get("offloads"))
    except ValueError as exc:
        raise ValueError(f"--kv-netns-offloads: {exc}") from None
    if offloads:
        kw["offloads"] = offloads
    if options.get("rate_mbit") is not None:
        kw["rate_mbit"] = float(options["rate_mbit"])
    if options.get("cpu_split"):
        kw["cpu_split"] = True
    return kw
