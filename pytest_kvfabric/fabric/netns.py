"""The `netns` fabric: two network namespaces joined by a veth pair on this machine.

Naming (ours alone, so cleanup can never touch anything else):
  namespaces  ``<prefix><tag>-<index>p`` (prefill) and ``<prefix><tag>-<index>d`` (decode),
              prefix ``kvf-`` for sessions (tests use ``kvft8-``), tag = the creator's pid
              by default (see select.py), index = the xdist worker number.
  veth ends   ``<prefix>p<index>`` in the prefill namespace, ``<prefix>d<index>`` in the
              decode namespace. The veth is created *inside* the prefill namespace with its
              peer placed straight into the decode namespace, so no link of ours ever exists
              in the root namespace; deleting the namespaces deletes the veth.
  addresses   10.203.<index>.1/24 (prefill) and 10.203.<index>.2/24 (decode), assigned only
              inside our namespaces (they never appear in the root namespace's tables).
  layouts     rails and instances (netns_layout.py) add namespaces ``...p<i>``/``...d<j>`` and a
              bridge namespace ``...b`` under the same prefix, each with its creator record, so
              everything below (teardown, cleanup_stale) covers them and their bridges too.
  creator     /run/kvfabric/<netns>.pid holds "<pid> <starttime>" of the creating process,
              written *before* the namespace exists; cleanup_stale() removes a prefixed
              namespace only when that process is gone (starttime guards against pid reuse).

Netlink (pyroute2) does namespaces, veth, MTU, addresses, link state and the tbf qdisc.
Offload toggles use the SIOCETHTOOL ioctl on a socket made inside the namespace (pyroute2's
Ethtool has no namespace argument), so no `ethtool` binary is needed. We shell out in one
place only: `ip netns exec`, which is
how agents are started inside a namespace (execnet's popen spec shlex-splits ``python=``,
so ``popen//python=ip netns exec NAME /path/python`` needs no wrapper script).
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import KvFabricError
from ..transports import ethtool_ioctl
from ..lab import env as lab_env
from .alloc import FabricUnavailable
from .base import Host, HostPair
from .netns_options import OFFLOAD_KEYS, parse_offloads

__all__ = ["OFFLOAD_KEYS", "NetnsPair", "NetnsUnavailable", "parse_offloads"]

FABRIC_NAME = "netns"  # the fabric these pairs belong to (netns_fabric.NetnsFabric)
PREFIX = "kvf-"
PID_DIR = Path("/run/kvfabric")
NETNS_DIR = Path("/run/netns")
ADDR_NET = "10.203"  # 10.203.<index>.0/24 per pair, inside our namespaces only
PREFIXLEN = 24
IFNAMSIZ = 15  # usable characters in an interface name
KILL_WAIT_S = 2.0


class NetnsUnavailable(FabricUnavailable):
    """This machine/process cannot create the netns fabric; str() is the skip reason."""


def netns_unavailable_reason() -> str | None:
    """Why the netns fabric cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"netns fabric needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"netns fabric needs root to create network namespaces (euid is {os.geteuid()})"
    if not os.path.exists("/proc/self/ns/net"):
        return "kernel has no network namespace support (/proc/self/ns/net missing)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' not found on PATH (needed for 'ip netns exec' to start agents)"
    try:
        import pyroute2  # noqa: F401
    except ImportError as exc:  # pragma: no cover - dependency of the package
        return f"pyroute2 is not importable: {exc}"
    return None


def netns_names(prefix: str, tag: str, index: int) -> tuple[str, str]:
    return f"{prefix}{tag}-{index}p", f"{prefix}{tag}-{index}d"


def veth_names(prefix: str, index: int) -> tuple[str, str]:
    p, d = f"{prefix}p{index}", f"{prefix}d{index}"
    if len(p) > IFNAMSIZ or len(d) > IFNAMSIZ:
        raise ValueError(f"veth name {d!r} longer than {IFNAMSIZ} characters (prefix {prefix!r}, index {index})")
    return p, d


def pair_addrs(index: int) -> tuple[str, str]:
    if not 0 <= index <= 255:
        raise ValueError(f"netns pair index {index} out of range 0..255 (address 10.203.<index>.0/24)")
    return f"{ADDR_NET}.{index}.1", f"{ADDR_NET}.{index}.2"


# --- creator records -------------------------------------------------------------------

def _starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces/parens: split after the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, starttime: str | None) -> bool:
    now = _starttime(pid)
    return now is not None and (starttime is None or now == starttime)


def write_pidfile(name: str) -> None:
    PID_DIR.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    (PID_DIR / f"{name}.pid").write_text(f"{pid} {_starttime(pid)}\n")


def _read_pidfile(name: str) -> tuple[int, str | None] | None:
    try:
        parts = (PID_DIR / f"{name}.pid").read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


def _remove_pidfile(name: str) -> None:
    try:
        (PID_DIR / f"{name}.pid").unlink()
    except FileNotFoundError:
        pass


# --- namespace helpers -----------------------------------------------------------------

def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (what `ip netns pids` reports)."""
    try:
        ino = os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def _kill_all(pids: list[int]) -> None:
    """SIGTERM, wait (bounded), SIGKILL: processes inside our namespace are ours by construction."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            pids = [p for p in pids if _starttime(p) is not None and not _is_zombie(p)]
            if not pids:
                return
            time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def remove_netns(name: str) -> None:
    """Kill what runs inside, delete the namespace (its veth end goes with it), drop the record."""
    from pyroute2 import netns as pr_netns

    _kill_all(netns_pids(name))
    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        pass  # already gone (another worker's cleanup got there first)
    _remove_pidfile(name)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces named `prefix`* whose creator process is dead. Returns the removed names.

    Never touches a namespace without our prefix, one whose creator is alive, or one without a
    creator record (we cannot prove it is ours and dead, so it stays).
    """
    if not prefix:
        raise ValueError("cleanup_stale needs a non-empty prefix")
    removed = []
    for name in list_netns():
        if not name.startswith(prefix):
            continue
        rec = _read_pidfile(name)
        if rec is None or pid_alive(*rec):
            continue
        remove_netns(name)
        removed.append(name)
    # records whose namespace is already gone (creator killed between steps)
    if PID_DIR.is_dir():
        for f in PID_DIR.glob(f"{prefix}*.pid"):
            name = f.name[: -len(".pid")]
            rec = _read_pidfile(name)
            if not (NETNS_DIR / name).exists() and (rec is None or not pid_alive(*rec)):
                _remove_pidfile(name)
    return removed


def link_counters(netns: str | None, ifname: str) -> dict[str, int]:
    """{rx_bytes, tx_bytes} of `ifname` inside `netns` (None: the root namespace), via netlink."""
    from pyroute2 import IPRoute

    kw = {"netns": netns} if netns else {}
    with IPRoute(**kw) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise KvFabricError(f"interface {ifname!r} not found in netns {netns or '<root>'}")
        link = ipr.get_links(idx[0])[0]
    stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS") or {}
    return {"rx_bytes": int(stats.get("rx_bytes", 0)), "tx_bytes": int(stats.get("tx_bytes", 0))}


def links_down(hosts: list[tuple[str | None, str]]) -> list[str]:
    """'IF in netns NS is down (...)' for each (netns, ifname) whose link is not up: the cause a
    timed-out run should lead with. Best effort: an interface that cannot be read is skipped."""
    from pyroute2 import IPRoute

    down = []
    for netns, ifname in hosts:
        try:
            kw = {"netns": netns} if netns else {}
            with IPRoute(**kw) as ipr:
                idx = ipr.link_lookup(ifname=ifname)
                if not idx:
                    down.append(f"{ifname} in netns {netns} is gone")
                    continue
                link = ipr.get_links(idx[0])[0]
        except Exception:  # noqa: BLE001 - namespace gone or no permission: say nothing
            continue
        admin_up = bool(link["flags"] & 1)  # IFF_UP
        oper = link.get_attr("IFLA_OPERSTATE") or "UNKNOWN"
        if not admin_up or oper not in ("UP", "UNKNOWN"):
            why = "set down" if not admin_up else f"operstate {oper}, carrier lost"
            down.append(f"link {ifname} in netns {netns or '<root>'} is down ({why})")
    return down


def netns_gateway_spec(netns: str, python: str | None = None, cpus: list[int] | None = None) -> str:
    """execnet spec that starts the interpreter inside `netns` (popen shlex-splits python=),
    on `cpus` only when given (taskset: the agent and everything it starts)."""
    ip = shutil.which("ip") or "ip"
    pin = [shutil.which("taskset") or "taskset", "-c", ",".join(map(str, cpus))] if cpus else []
    cmd = shlex.join([ip, "netns", "exec", netns, *pin, python or sys.executable])
    if "//" in cmd:
        raise NetnsUnavailable(f"cannot build an execnet spec: '//' in command {cmd!r}")
    return f"popen//python={cmd}"


def split_cpus(cpus: list[int]) -> tuple[list[int], list[int]]:
    """(prefill, decode): the CPUs this process may use, halved (the decode half gets the odd one)."""
    cpus = sorted(cpus)
    if len(cpus) < 2:
        raise NetnsUnavailable(f"cpu_split needs at least 2 CPUs available to this process, found {len(cpus)}")
    half = len(cpus) // 2
    return cpus[:half], cpus[half:]


def cpu_mask(cpus: list[int]) -> str:
    """The sysfs rps_cpus mask (hex, comma-separated 32-bit groups) of a CPU list."""
    bits = 0
    for c in cpus:
        bits |= 1 << c
    words = []
    while True:
        words.append(f"{bits & 0xFFFFFFFF:08x}")
        bits >>= 32
        if not bits:
            break
    return ",".join(reversed(words))


def set_rps(netns: str, ifname: str, cpus: list[int]) -> None:
    """Steer the receive processing of ifname's queues (RPS) to cpus, inside netns."""
    script = (f'for q in /sys/class/net/{ifname}/queues/rx-*/rps_cpus; do printf %s {cpu_mask(cpus)} > "$q" || exit 1; '
              'done')
    res = subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", script], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise KvFabricError(f"setting rps_cpus of {ifname} in {netns} failed: {res.stderr.strip() or res.returncode}")


def set_offloads(netns: str, ifname: str, offloads: dict[str, bool]) -> None:
    if not offloads:
        return
    try:
        with ethtool_ioctl.socket_in_netns(netns) as s:
            ethtool_ioctl.set_offloads(s, ifname, offloads)
    except OSError as exc:
        raise KvFabricError(f"offload toggle in netns {netns} failed: {exc.strerror or exc}") from None


def rxe_name(ifname: str) -> str:
    """The soft-RoCE device the lab puts on a veth end (rdma device names are global)."""
    return f"rxe_{ifname}"[:31]


def add_rxe(netns: str, ifname: str) -> None:
    """Inside the lab (lab/env.py), each veth end gets an rdma_rxe device, so RoCEv2 packets
    cross the veth. It goes away with the veth when the namespace is deleted."""
    res = subprocess.run(["ip", "netns", "exec", netns, "rdma", "link", "add", rxe_name(ifname), "type", "rxe",
                          "netdev", ifname], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise NetnsUnavailable(f"rdma link add {rxe_name(ifname)} type rxe netdev {ifname} in {netns}: "
                               f"{(res.stderr or res.stdout).strip() or 'failed'}")


def tbf_params(rate_mbit: float, mtu: int) -> dict[str, Any]:
    # burst must hold at least one MTU-sized frame and ~1 ms at rate (tbf's usual rule of thumb)
    rate_bps = int(rate_mbit * 1_000_000)
    burst = max(2 * (mtu + 64), rate_bps // 8 // 1000, 16 * 1024)
    return {"rate": f"{rate_bps}bit", "burst": burst, "latency": "50ms"}


def build_or_undo(build: Callable[[], None], destroy: Callable[[], None], what: str) -> None:
    """Run `build`; on any failure `destroy` what it made, then re-raise: a usage or fabric error
    as it is, any other error as NetnsUnavailable naming `what` (an interrupt as it is)."""
    try:
        build()
    except BaseException as exc:
        try:
            destroy()
        except KvFabricError:
            pass  # report the original failure; leftovers are removed by cleanup_stale
        if isinstance(exc, (KvFabricError, ValueError)):
            raise
        if isinstance(exc, Exception):
            raise NetnsUnavailable(f"cannot create {what}: {exc}") from exc
        raise


class NetnsPair:
    """Two namespaces + veth; `create` returns the HostPair, `destroy` removes everything."""

    def __init__(self, prefix: str, tag: str, index: int, mtu: int,
                 offloads: dict[str, bool], rate_mbit: float | None, cpu_split: bool = False) -> None:
        self.prefix, self.tag, self.index = prefix, tag, index
        self.mtu, self.offloads, self.rate_mbit = mtu, dict(offloads), rate_mbit
        # cpu_split: each side gets its own CPUs, for its agent and for its receive processing
        self.cpus: tuple[list[int], list[int]] | None = (
            split_cpus(list(os.sched_getaffinity(0))) if cpu_split else None)
        self.ns_prefill, self.ns_decode = netns_names(prefix, tag, index)
        self.if_prefill, self.if_decode = veth_names(prefix, index)
        self.addr_prefill, self.addr_decode = pair_addrs(index)
        self.host_pair: HostPair | None = None
        self._destroyed = False

    @classmethod
    def create(cls, tag: str, index: int, mtu: int = 9000, offloads: dict[str, bool] | None = None,
               rate_mbit: float | None = None, *, prefix: str = PREFIX, cpu_split: bool = False) -> "NetnsPair":
        """Build the pair (idempotent cleanup on any failure). Raises NetnsUnavailable with the reason."""
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        if not prefix or not tag or "/" in tag or "/" in prefix:
            raise ValueError(f"bad netns prefix/tag {prefix!r}/{tag!r}")
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} out of range 68..65535")
        if rate_mbit is not None and not rate_mbit > 0:
            raise ValueError(f"rate_mbit must be > 0, got {rate_mbit}")
        if cpu_split and shutil.which("taskset") is None:
            raise NetnsUnavailable("cpu_split needs 'taskset' (util-linux) on PATH, not found")
        self = cls(prefix, tag, index, mtu, parse_offloads(offloads), rate_mbit, cpu_split)
        build_or_undo(self._build, self.destroy, f"netns pair {self.ns_prefill}/{self.ns_decode}")
        return self

    def _build(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2 import netns as pr_netns

        for name in (self.ns_prefill, self.ns_decode):
            if (NETNS_DIR / name).exists():
                raise KvFabricError(f"netns {name} already exists (another session with the same tag?)")
        for name in (self.ns_prefill, self.ns_decode):
            write_pidfile(name)  # before the namespace: a crash in between stays cleanable
            pr_netns.create(name)
        with IPRoute(netns=self.ns_prefill) as ipr:
            ipr.link("add", ifname=self.if_prefill, kind="veth",
                     peer={"ifname": self.if_decode, "net_ns_fd": self.ns_decode})
        for ns, ifname, addr in ((self.ns_prefill, self.if_prefill, self.addr_prefill),
                                 (self.ns_decode, self.if_decode, self.addr_decode)):
            with IPRoute(netns=ns) as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.link("set", index=idx, mtu=self.mtu)
                ipr.addr("add", index=idx, address=addr, prefixlen=PREFIXLEN)
                ipr.link("set", index=idx, state="up")
                if self.rate_mbit is not None:
                    ipr.tc("add", "tbf", index=idx, **tbf_params(self.rate_mbit, self.mtu))
            set_offloads(ns, ifname, self.offloads)
            if lab_env.virtualized():
                add_rxe(ns, ifname)
        if self.cpus is not None:
            for ns, ifname, cpus in ((self.ns_prefill, self.if_prefill, self.cpus[0]),
                                     (self.ns_decode, self.if_decode, self.cpus[1])):
                set_rps(ns, ifname, cpus)
        self.host_pair = self._host_pair()

    def _host_pair(self) -> HostPair:
        details: dict[str, Any] = {
            "mtu": self.mtu,
            "offloads": {k: ("on" if v else "off") for k, v in self.offloads.items()},
            "rate_mbit": self.rate_mbit,
            "netns": [self.ns_prefill, self.ns_decode],
            "veth": [self.if_prefill, self.if_decode],
            "subnet": f"{ADDR_NET}.{self.index}.0/{PREFIXLEN}",
            "cpu_split": {"prefill": self.cpus[0], "decode": self.cpus[1]} if self.cpus else None,
            "rxe": [rxe_name(self.if_prefill), rxe_name(self.if_decode)] if lab_env.virtualized() else None,
        }
        pcpus, dcpus = self.cpus if self.cpus else (None, None)
        return HostPair(
            name=f"netns:{self.tag}-{self.index}",
            fabric=FABRIC_NAME,
            prefill=Host(f"{self.ns_prefill}", netns_gateway_spec(self.ns_prefill, cpus=pcpus),
                         self.addr_prefill, self.if_prefill, self.ns_prefill),
            decode=Host(f"{self.ns_decode}", netns_gateway_spec(self.ns_decode, cpus=dcpus),
                        self.addr_decode, self.if_decode, self.ns_decode),
            details=details,
        )

    @property
    def pair(self) -> HostPair:
        assert self.host_pair is not None, "pair not created"
        return self.host_pair

    def destroy(self) -> None:
        """Kill processes left inside, delete both namespaces (and thereby the veth). Idempotent."""
        if self._destroyed:
            return
        errors = []
        for name in (self.ns_prefill, self.ns_decode):
            try:
                remove_netns(name)
            except Exception as exc:  # keep going: remove the other one too
                errors.append(f"{name}: {exc}")
        self._destroyed = True
        if errors:
            raise KvFabricError("netns teardown failed: " + "; ".join(errors))

    def __enter__(self) -> HostPair:
        return self.pair

    def __exit__(self, *exc: object) -> None:
        self.destroy()
