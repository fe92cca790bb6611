"""devmem capability probe: real checks, each missing piece reported with its own reason.

`decide(ProbeInputs)` is pure (table-tested); `gather(options)` performs the checks: udmabuf,
the netdev netlink family, the NIC (header split, steering, RSS, queues, driver) and a REAL
`bind-rx` (and `bind-tx`) call whose errno and extack come from the kernel. When no dma-buf can
be made the bind is attempted with a memfd, and the reason says so: the kernel then shows which
check it fails first (e.g. EOPNOTSUPP flagged on `ifindex` means the device was refused
before the fd was looked at).
"""
from __future__ import annotations

import errno as _errno
import os
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..base import Capability, short_reason
from . import netlink as nl
from . import udmabuf
from .nic import NicState, check_nic, gather_nic, last_queues

PROBE_DMABUF_NBYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class BindResult:
    """What the kernel answered to bind-rx / bind-tx."""

    ok: bool
    fd_kind: str  # "udmabuf" | "memfd (no dma-buf available)"
    binding_id: int = 0
    errno: int = 0
    errname: str = ""
    message: str = ""
    bad_attr: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"bound (binding id {self.binding_id}, {self.fd_kind})"
        s = f"{self.errname} ({os.strerror(self.errno)})"
        if self.message:
            s += f": {self.message}"
        if self.bad_attr:
            s += f" [kernel flagged attribute {self.bad_attr}]"
        return s + f", fd passed: {self.fd_kind}"


@dataclass
class ProbeInputs:
    interface: str | None
    ifindex: int | None = None
    netns: str | None = None
    udmabuf_reason: str | None = None
    netdev_error: str | None = None
    netdev_ops: frozenset[int] = frozenset()
    queues: list[int] = field(default_factory=list)
    queues_error: str | None = None
    nic: NicState | None = None
    port: int | None = None
    bind_rx: BindResult | None = None
    bind_tx: BindResult | None = None
    want_tx: bool = True


def _bind_rx_reason(ifn: str, queues: list[int], r: BindResult, driver: str) -> str:
    # leads with the NIC and its driver: the part a short skip reason keeps
    base = (f"{ifn} (driver {driver or '?'}): netdev bind-rx of {ifn} queues {queues} refused by the "
            f"kernel: {r.describe()}")
    if r.errno == _errno.EOPNOTSUPP and r.bad_attr == "ifindex":
        base += (f"; the device was refused before the fd was examined: driver "
                 f"{driver or '?'} has no queue-management ops, so it cannot host devmem "
                 f"(needs a NIC whose driver supports devmem TCP, e.g. bnxt, gve, mlx5, fbnic)")
    elif r.errno in (_errno.EBADF, _errno.EINVAL) and r.fd_kind != "udmabuf":
        base += "; the kernel rejected the fd because it is not a dma-buf"
    elif r.errno == _errno.EINVAL and r.fd_kind == "udmabuf" and "bind dmabuf to device" in r.message:
        # seen in the lab (Linux 6.12, real /dev/udmabuf): dma_buf_attach() to the netdev's
        # parent device fails; lo and veth have none (no bus device, no DMA)
        base += (f"; the dma-buf could not be attached to {ifn}'s parent device: driver "
                 f"{driver or '?'} is a virtual netdev without a DMA-capable bus device, so it cannot "
                 f"receive into device memory (needs a NIC whose driver supports devmem TCP, "
                 f"e.g. bnxt, gve, mlx5, fbnic)")
    return base


def decide(inp: ProbeInputs) -> Capability:
    """Every missing piece as its own reason; available only when none is missing."""
    reasons: list[str] = []
    if inp.udmabuf_reason:
        reasons.append(inp.udmabuf_reason)
    if inp.interface is None:
        reasons.append("no devmem interface named: set transport parameter `interface` "
                       "(the probe binds RX queues, so it touches only a NIC you name)")
    elif inp.ifindex is None:
        reasons.append(f"interface {inp.interface!r} does not exist"
                       + (f" in netns {inp.netns}" if inp.netns else ""))
    if inp.netdev_error:
        reasons.append(inp.netdev_error)
    elif inp.netdev_ops and nl.NETDEV_CMD["bind-rx"] not in inp.netdev_ops:
        reasons.append("kernel netdev family has no bind-rx (Linux < 6.12 or CONFIG_NET_DEVMEM off)")
    if inp.queues_error:
        reasons.append(inp.queues_error)
    ifn = inp.interface or "?"
    driver = inp.nic.driver if inp.nic else ""
    if inp.bind_rx is not None and not inp.bind_rx.ok:
        reasons.append(_bind_rx_reason(ifn, inp.queues, inp.bind_rx, driver))
    if inp.nic is not None:
        reasons.extend(check_nic(inp.nic, inp.queues, inp.port))
    details: dict[str, Any] = {
        "interface": inp.interface, "ifindex": inp.ifindex, "queues": inp.queues,
        "driver": driver, "firmware": inp.nic.firmware if inp.nic else "",
        "header_split": inp.nic.header_split if inp.nic else "unknown",
        "bind_rx": inp.bind_rx.describe() if inp.bind_rx else "not attempted",
        "bind_tx": inp.bind_tx.describe() if inp.bind_tx else "not attempted",
        "reasons": list(reasons),
        "detail": "; ".join(reasons),
    }
    if reasons:  # a short skip reason; every reason in full in details["reasons"] / ["detail"]
        return Capability.missing(short_reason(reasons), **details)
    if inp.want_tx and inp.bind_tx is not None and inp.bind_tx.ok:
        path = f"devmem RX+TX on {ifn} queues {inp.queues}"
    else:
        why = inp.bind_tx.describe() if inp.bind_tx else "TX disabled by option"
        path = f"devmem RX only on {ifn} queues {inp.queues} (TX from host memory: {why})"
    return Capability.ok(path, **details)


# ---- gathering ---------------------------------------------------------------------------

def _ip(args: list[str], netns: str | None, timeout_s: float = 5.0) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def ifindex_of(ifname: str, netns: str | None = None) -> int | None:
    if netns is None:
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            return None
    out = _ip(["-o", "link", "show", "dev", ifname], netns)
    return int(out.split(":", 1)[0]) if out[:1].isdigit() else None


def parse_queues(spec: Any, rx_queue_count: int | None) -> tuple[list[int], str | None]:
    """Option rx_queues: a list of ints, "auto" (last queue) or "auto:N" (last N queues)."""
    if spec is None or (isinstance(spec, str) and spec.startswith("auto")):
        n = int(spec.split(":", 1)[1]) if isinstance(spec, str) and ":" in spec else 1
        if rx_queue_count is None:
            return [], "RX queue count unknown (netdev queue-get failed); set option rx_queues"
        try:
            return last_queues(rx_queue_count, n), None
        except ValueError:
            # too few queues: still bind the last ones so the kernel answers; check_nic reports it
            return list(range(max(rx_queue_count - n, 0), rx_queue_count)), None
    if isinstance(spec, str):
        spec = [int(x) for x in spec.replace(",", " ").split()]
    if isinstance(spec, int):  # `--kv-transport-param rx_queues=15` arrives as an int
        spec = [spec]
    return [int(q) for q in spec], None


def _try_bind(sock_factory: Any, kind: str, ifindex: int, fd: int, fd_kind: str,
              queues: list[int]) -> BindResult:
    # A fresh socket per bind: closing it unbinds, so the probe leaves nothing bound.
    with sock_factory() as s:
        try:
            bid = s.bind_rx(ifindex, fd, queues) if kind == "rx" else s.bind_tx(ifindex, fd)
            return BindResult(True, fd_kind, binding_id=bid)
        except nl.NetlinkError as exc:
            return BindResult(False, fd_kind, errno=exc.errno, errname=exc.errname,
                              message=exc.message, bad_attr=exc.bad_attr)


def gather(options: Mapping[str, Any] | None = None) -> ProbeInputs:
    opts = dict(options or {})
    netns = opts.get("netns")
    ifname = opts.get("interface")
    inp = ProbeInputs(ifname, netns=netns, port=opts.get("port"), want_tx=bool(opts.get("tx", True)))
    inp.udmabuf_reason = udmabuf.missing_reason()
    if ifname is None:
        # Never pick a NIC for the user: a bind-rx restarts the queue, and the default-route
        # NIC's queues carry the user's own traffic (SSH). Nothing below runs without a name.
        return inp
    inp.ifindex = ifindex_of(ifname, netns)

    def factory() -> nl.GenlSocket:
        return nl.open_in_netns(netns)

    try:
        with factory() as s:
            fam = s.family(nl.NETDEV_FAMILY_NAME)
            inp.netdev_ops = fam.ops
            if inp.ifindex is not None:
                inp.nic = gather_nic(ifname, inp.ifindex, s, netns)
    except (nl.NetlinkError, OSError) as exc:
        inp.netdev_error = f"netdev netlink family unusable: {exc}"
        return inp
    if inp.ifindex is None:
        return inp
    inp.queues, inp.queues_error = parse_queues(opts.get("rx_queues", "auto"), inp.nic.rx_queues)
    if not inp.queues:
        return inp
    # The real bind (on the interface the user named): a udmabuf when we can make one, else a
    # memfd so the kernel still shows what it checks first.
    buf = None
    if inp.udmabuf_reason is None:
        try:
            buf = udmabuf.create(PROBE_DMABUF_NBYTES, "kvfabric-probe")
        except udmabuf.UdmabufUnavailable as exc:
            inp.udmabuf_reason = str(exc)
    if buf is not None:
        fd, kind = buf.dmabuf_fd, "udmabuf"
    else:
        fd, kind = os.memfd_create("kvfabric-probe", os.MFD_CLOEXEC), "memfd (no dma-buf available)"
        os.ftruncate(fd, PROBE_DMABUF_NBYTES)
    try:
        inp.bind_rx = _try_bind(factory, "rx", inp.ifindex, fd, kind, inp.queues)
        if inp.want_tx:
            inp.bind_tx = _try_bind(factory, "tx", inp.ifindex, fd, kind, inp.queues)
    except (OSError, nl.TransportError) as exc:
        inp.netdev_error = f"netdev bind request failed: {exc}"
    finally:
        if buf is not None:
            buf.close()
        else:
            os.close(fd)
    return inp


def probe(options: Mapping[str, Any] | None = None) -> Capability:
    try:
        return decide(gather(options))
    except Exception as exc:  # a probe never raises for a missing capability
        return Capability.missing(f"probe failed: {type(exc).__name__}: {exc}")
