"""The `mooncake` transport's parameters (pure): one table, read by the probe and both halves.

Set them with `--kv-transport-param KEY=VALUE`, `kvfabric run --transport-param KEY=VALUE`
or a suite's `transport_params`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pytest_kvfabric.errors import ProfileError

PROTOCOLS = ("tcp", "rdma")
# name -> (default, help): declared once, shown by the README and in every error message.
PARAMS: dict[str, tuple[Any, str]] = {
    "protocol": ("tcp", "Mooncake transport protocol: tcp (kernel TCP) or rdma (needs an RDMA device)"),
    "device": ("", "RDMA device names for protocol rdma, comma separated (empty: Mooncake picks)"),
    "workers": (2, "threads posting batch_transfer_sync calls (batches in flight at once), 1-16"),
}


@dataclass(frozen=True)
class MooncakeOptions:
    protocol: str = "tcp"
    device: str = ""
    workers: int = 2

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "MooncakeOptions":
        src = "transport_params"
        protocol = str(options.get("protocol", PARAMS["protocol"][0])).lower()
        if protocol not in PROTOCOLS:
            raise ProfileError(src, "protocol", f"{protocol!r} is not a Mooncake protocol this "
                                                f"plug-in runs; valid: {', '.join(PROTOCOLS)}")
        device = str(options.get("device", PARAMS["device"][0]) or "")
        raw = options.get("workers", PARAMS["workers"][0])
        try:
            workers = int(raw)
        except (TypeError, ValueError):
            raise ProfileError(src, "workers", f"{raw!r} is not an integer (1-16)") from None
        if not 1 <= workers <= 16:
            raise ProfileError(src, "workers", f"{workers} is outside 1-16")
        return cls(protocol, device, workers)
