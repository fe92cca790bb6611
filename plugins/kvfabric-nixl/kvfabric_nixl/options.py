"""The `nixl` transport's parameters (pure): one table, read by the probe and both halves.

Set them with `--kv-transport-param KEY=VALUE`, `kvfabric run --transport-param KEY=VALUE`
or a suite's `transport_params`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from pytest_kvfabric.errors import ProfileError

# name -> (default, help): declared once, read by from_options and the README.
PARAMS: dict[str, tuple[Any, str]] = {
    "backend": ("UCX", "NIXL backend plug-in moving the bytes (UCX, LIBFABRIC, ...); the UCX path proof needs UCX"),
    "ucx_tls": ("", "UCX_TLS for both agents (e.g. tcp, rc, ^cma); empty: UCX's own choice"),
    "ucx_net_devices": ("", "UCX_NET_DEVICES for both agents (e.g. eth0, mlx5_0:1); empty: all"),
    "progress_thread": (False, "NIXL's own progress thread (it busy-polls a core per agent); off: our polls progress UCX"),
    "require_ucx_transport": ("", "fail the case unless every UCX lane of the remote writes is this "
                                  "transport (rc matches rc_mlx5 and rc_verbs; tcp, cma, dc, ...)"),
}
_WORD = re.compile(r"^[A-Za-z0-9_]+$")
_LIST = re.compile(r"^\^?[A-Za-z0-9_:.,\-]*$")


@dataclass(frozen=True)
class NixlOptions:
    backend: str = "UCX"
    ucx_tls: str = ""
    ucx_net_devices: str = ""
    require_ucx_transport: str = ""
    progress_thread: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "NixlOptions":
        src = "transport_params"
        vals = {k: str(options.get(k, d) or "") for k, (d, _) in PARAMS.items() if k != "progress_thread"}
        raw = options.get("progress_thread", False)
        flags = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                 "off": False, "": False}
        if str(raw).lower() not in flags:
            raise ProfileError(src, "progress_thread", f"{raw!r} is not a boolean (true/false, 1/0)")
        if not _WORD.match(vals["backend"]):
            raise ProfileError(src, "backend", f"{vals['backend']!r} is not a NIXL backend name (e.g. UCX)")
        for key in ("ucx_tls", "ucx_net_devices"):
            if not _LIST.match(vals[key]):
                raise ProfileError(src, key, f"{vals[key]!r} is not a UCX list (names separated by commas)")
        req = vals["require_ucx_transport"].lower()
        if req and not _WORD.match(req):
            raise ProfileError(src, "require_ucx_transport", f"{req!r} is not a UCX transport name (rc, tcp, cma, ...)")
        if req and vals["backend"] != "UCX":
            raise ProfileError(src, "require_ucx_transport", f"needs backend UCX, not {vals['backend']}")
        return cls(vals["backend"], vals["ucx_tls"], vals["ucx_net_devices"], req, flags[str(raw).lower()])

    def ucx_env(self) -> dict[str, str]:
        env = {}
        if self.ucx_tls:
            env["UCX_TLS"] = self.ucx_tls
        if self.ucx_net_devices:
            env["UCX_NET_DEVICES"] = self.ucx_net_devices
        return env
