"""Environment fingerprint: what a baseline comparison must know to be fair (kernel, NIC, MTU...)."""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

from ..transports import ethtool_ioctl

PACKAGES = ("pytest-kvfabric", "pytest", "pytest-xdist", "execnet", "numpy", "liburing", "pyroute2", "pyverbs")
OFFLOADS = ("tcp-segmentation-offload", "generic-segmentation-offload", "generic-receive-offload",
            "large-receive-offload", "rx-checksumming", "tx-checksumming")
# ethtool_ioctl's short names -> the `ethtool -k` names this report uses
IOCTL_OFFLOADS = {"tso": "tcp-segmentation-offload", "gso": "generic-segmentation-offload",
                  "gro": "generic-receive-offload", "rx_csum": "rx-checksumming",
                  "tx_csum": "tx-checksumming"}
_TIMEOUT_S = 5


def _run(cmd: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def parse_ethtool_i(text: str) -> dict[str, str]:
    """`ethtool -i IFACE` output -> {driver, version, firmware-version, bus-info, ...}."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def parse_ethtool_k(text: str) -> dict[str, str]:
    """`ethtool -k IFACE` -> {feature: "on"|"off"} for the offloads that shape a TCP data path."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in OFFLOADS:
            out[key.strip()] = value.split()[0] if value.split() else ""
    return out


def interface(ifname: str, netns: str | None = None) -> dict[str, Any]:
    """Driver, firmware, MTU and offloads of one interface (inside a namespace if given)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    info: dict[str, Any] = {"name": ifname, "netns": netns}
    mtu = _run([*prefix, "cat", f"/sys/class/net/{ifname}/mtu"])
    info["mtu"] = int(mtu) if mtu and mtu.strip().isdigit() else None
    if shutil.which("ethtool"):
        drv = _run([*prefix, "ethtool", "-i", ifname])
        if drv:
            parsed = parse_ethtool_i(drv)
            info["driver"] = parsed.get("driver")
            info["driver_version"] = parsed.get("version")
            info["firmware"] = parsed.get("firmware-version")
        k = _run([*prefix, "ethtool", "-k", ifname])
        if k:
            info["offloads"] = parse_ethtool_k(k)
    else:  # no ethtool CLI: ask the kernel directly (driver and the offloads it answers about)
        try:
            with ethtool_ioctl.socket_in_netns(netns) as s:
                drv_info = ethtool_ioctl.drvinfo(s, ifname)
                info["offloads"] = {IOCTL_OFFLOADS[k]: v for k, v in ethtool_ioctl.get_offloads(s, ifname).items()
                                    if k in IOCTL_OFFLOADS}
            info["driver"] = drv_info["driver"]
            info["driver_version"] = drv_info["version"]
            info["firmware"] = drv_info["firmware-version"]
        except (OSError, ValueError):
            pass
    return info


def fingerprint(interfaces: Sequence[tuple[str, str | None]] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
    fp: dict[str, Any] = {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpus": _cpu_count(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "interfaces": [interface(name, ns) for name, ns in interfaces],
    }
    from ..lab.env import virtualized

    if virtualized():  # inside the lab VM: "tcg" means the timings are not meaningful
        fp["virtualized"] = virtualized()
    if extra:
        fp.update(extra)
    return fp


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
