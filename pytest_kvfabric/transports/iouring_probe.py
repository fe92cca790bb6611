"""Capability probe of the iouring transport: a pure decision over gathered inputs, plus a thin
gatherer that reads the real host (sysctls, the package import, a self-test in a child process).

Tests replace the inputs (ProbeInputs or the gatherer's readers), never the data path.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from .base import Capability

SYSCTL_DISABLED = "/proc/sys/kernel/io_uring_disabled"
SYSCTL_GROUP = "/proc/sys/kernel/io_uring_group"
SELFTEST_TIMEOUT_S = 20.0
MODES = ("send", "send_zc")


@dataclass(frozen=True)
class ProbeInputs:
    """Everything the decision needs; each field comes from one real source (see gather_inputs)."""

    io_uring_disabled: int | None  # kernel.io_uring_disabled (None: sysctl absent, i.e. enabled)
    io_uring_group: int | None  # kernel.io_uring_group gid (-1 or None: no group)
    privileged: bool  # euid 0 / CAP_SYS_ADMIN: allowed when io_uring_disabled=1
    groups: tuple[int, ...]  # this process's gids
    import_error: str | None  # text of the ImportError of `import liburing`, None if it imported
    ring_error: str | None = None  # ring setup / NOP round trip failed (or the self-test died)
    send_zc: bool | None = None  # IORING_OP_SEND_ZC in the kernel's opcode table
    send_zc_error: str = ""
    zcrx_ifname: str = ""
    zcrx_rxq: int = 0
    zcrx_errno: int | None = None  # 0: registration succeeded; else the kernel's errno
    zcrx_error: str = ""


def check_options(options: Mapping[str, Any]) -> str | None:
    mode = options.get("mode", "send")
    if mode not in MODES:
        return f"iouring option mode={mode!r}: valid modes are {', '.join(MODES)}"
    for key in ("queue_depth", "inflight"):
        if key in options and (not isinstance(options[key], int) or options[key] < 1):
            return f"iouring option {key}={options[key]!r}: must be a positive integer"
    return None


def decide(inputs: ProbeInputs, options: Mapping[str, Any]) -> Capability:
    """Pure: the capability for these inputs and transport options, with one distinct reason each."""
    bad = check_options(options)
    if bad:
        return Capability.missing(bad)
    if inputs.io_uring_disabled == 2:
        return Capability.missing(
            "io_uring disabled by sysctl: kernel.io_uring_disabled=2 (no process may create rings)"
        )
    if inputs.io_uring_disabled == 1 and not inputs.privileged:
        gid = inputs.io_uring_group
        if gid is None or gid < 0 or gid not in inputs.groups:
            return Capability.missing(
                "io_uring disabled by sysctl: kernel.io_uring_disabled=1 and this process is "
                f"neither privileged nor in kernel.io_uring_group (gid {gid})"
            )
    if inputs.import_error is not None:
        return Capability.missing(f"liburing not installed: {inputs.import_error}")
    if inputs.ring_error:
        return Capability.missing(f"io_uring ring unusable through liburing: {inputs.ring_error}")
    mode = options.get("mode", "send")
    if mode == "send_zc" and not inputs.send_zc:
        return Capability.missing(
            f"IORING_OP_SEND_ZC unsupported: {inputs.send_zc_error or 'kernel answered EINVAL'}"
        )
    zcrx_answer = (
        "registered" if inputs.zcrx_errno == 0 else inputs.zcrx_error or f"errno {inputs.zcrx_errno}"
    )
    if options.get("zcrx"):
        if inputs.zcrx_errno != 0:
            return Capability.missing(f"ZCRX unsupported: {zcrx_answer}", zcrx=zcrx_answer)
        return Capability.missing(
            f"ZCRX registered on {inputs.zcrx_ifname} queue {inputs.zcrx_rxq}, but the RECV_ZC "
            "receive path is not implemented in this transport yet", zcrx=zcrx_answer
        )
    path = {
        "send": "io_uring IORING_OP_SEND batches (kernel copies into socket buffers); "
        "IORING_OP_RECV straight into the destination slice",
        "send_zc": "io_uring IORING_OP_SEND_ZC batches with IORING_SEND_ZC_REPORT_USAGE; "
        "IORING_OP_RECV straight into the destination slice",
    }[mode]
    return Capability.ok(path, mode=mode, zcrx=zcrx_answer, send_zc=bool(inputs.send_zc))


# -- the real-input gatherer -----------------------------------------------------------------
def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def interface_for(address: str) -> str:
    """The interface that carries traffic to `address` (loopback -> lo; else `ip route get`)."""
    try:
        if ipaddress.ip_address(address).is_loopback:
            return "lo"
    except ValueError:
        pass
    try:
        out = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True,
                             text=True, timeout=5, check=True).stdout
        return json.loads(out)[0]["dev"]
    except (OSError, subprocess.SubprocessError, ValueError, LookupError):
        return "lo"


def run_selftest(ifname: str, rxq: int) -> dict[str, Any]:
    """Run _uring.selftest in a child: a crash in the package kills the child, not us."""
    cmd = [sys.executable, "-m", "pytest_kvfabric.transports._uring", "--ifname", ifname, "--rxq", str(rxq)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SELFTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"import_error": None, "ring_error": f"self-test timed out after {SELFTEST_TIMEOUT_S:.0f} s"}
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return {"import_error": None,
                "ring_error": f"self-test process killed by {sig} inside the liburing package"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"import_error": None, "ring_error": f"self-test failed (rc {proc.returncode}): {err}"}


def _import_error() -> str | None:
    try:
        import liburing  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=8)
def _selftest_cached(ifname: str, rxq: int) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(run_selftest(ifname, rxq).items()))


def gather_inputs(options: Mapping[str, Any]) -> ProbeInputs:
    disabled = _read_int(SYSCTL_DISABLED)
    group = _read_int(SYSCTL_GROUP)
    import_error = _import_error()
    ifname = options.get("zcrx_ifname") or interface_for(str(options.get("address", "127.0.0.1")))
    rxq = int(options.get("zcrx_rxq", 0))
    base = dict(io_uring_disabled=disabled, io_uring_group=group, privileged=os.geteuid() == 0,
                groups=tuple(os.getgroups()) + (os.getegid(),), import_error=import_error,
                zcrx_ifname=ifname, zcrx_rxq=rxq)
    if import_error is not None or disabled == 2:
        return ProbeInputs(**base)
    st = dict(_selftest_cached(ifname, rxq))
    return ProbeInputs(
        **base,
        ring_error=st.get("ring_error"),
        send_zc=st.get("send_zc"),
        send_zc_error=st.get("send_zc_error", ""),
        zcrx_errno=st.get("zcrx_errno"),
        zcrx_error=st.get("zcrx_error", ""),
    )


def probe(options: Mapping[str, Any] | None = None) -> Capability:
    options = dict(options or {})
    bad = check_options(options)
    if bad:
        return Capability.missing(bad)
    return decide(gather_inputs(options), options)
