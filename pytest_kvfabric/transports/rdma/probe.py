"""Can this host run the rdma transport, and if not, exactly what is missing?

`decide(ProbeInputs)` is pure; `gather(options)` reads sysfs and tries the pyverbs import.
Checks, in order (the first failure is the reason):
  1. RDMA devices exist (/sys/class/infiniband present and non-empty)
  2. pyverbs imports (the ImportError says which library or symbol version is missing)
  3. the requested device (--kv-rdma-device) exists
  4. an active port
  5. a RoCE v2 GID carrying the data-plane address (Ethernet link layer), or the
     requested GID index exists (--kv-rdma-gid-index)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..base import Capability
from . import sysfs
from .sysfs import GidNotFound, PortInfo

INSTALL_HINT = (
    "either `pip install pytest-kvfabric[rdma]` over rdma-core of the same version as the "
    "PyPI pyverbs, or the distribution's python3-pyverbs used from a virtualenv created "
    "with --system-site-packages"
)
SOFT_ROCE_HINT = "soft-RoCE: `rdma link add rxe0 type rxe netdev IFACE`"


@dataclass(frozen=True)
class ProbeInputs:
    sysfs_root: str = sysfs.DEFAULT_ROOT
    sysfs_present: bool = False
    ports: tuple[PortInfo, ...] = ()
    fw_versions: Mapping[str, str | None] = field(default_factory=dict)
    pyverbs_error: str | None = None  # "ExcType: message" of the failed import, None if ok
    device: str | None = None
    port: int | None = None
    gid_index: int | None = None
    data_addr: str | None = None
    # Soft-RoCE (rdma_rxe) receives through a kernel UDP socket on port 4791 that lives in one
    # network namespace (the initial one in Linux 6.12): elsewhere its packets are dropped.
    soft_devices: frozenset[str] = frozenset()  # devices with no parent bus (/sys/devices/virtual)
    roce_udp_socket: bool | None = None  # a UDP socket on 4791 in this netns (None: unknown)


@dataclass(frozen=True)
class Selection:
    device: str
    port: int
    gid_index: int
    gid: str
    gid_type: str
    link_layer: str
    rate: str
    active_mtu: int | None
    fw_ver: str | None


class NotAvailable(Exception):
    """A probe failure inside decide(); str() is the reason."""


def explain_import_error(text: str) -> str:
    """Turn the pyverbs ImportError text into what is missing and the two ways to fix it."""
    if re.search(r"No module named '?pyverbs", text):
        return f"pyverbs is not installed ({text}); install {INSTALL_HINT}"
    version = re.search(r"version `?'?(IB(?:VERBS|_?RDMACM|VERBS_PRIVATE)?[A-Z_]*?_(\d+)(?:\.\d+)*)'? "
                        r"not found", text)
    if version:
        return (f"pyverbs needs rdma-core {version.group(2)} (symbol version {version.group(1)}) "
                f"but the system's rdma-core libraries are older ({text}); install {INSTALL_HINT}")
    missing = re.search(r"(lib[\w.+-]+\.so[\d.]*): cannot open shared object file", text)
    if missing:
        return (f"pyverbs is installed but rdma-core's {missing.group(1)} is missing ({text}); "
                f"install {INSTALL_HINT}")
    return f"pyverbs could not be imported ({text}); install {INSTALL_HINT}"


def _select(inputs: ProbeInputs) -> Selection:
    root = inputs.sysfs_root
    # Without a device pyverbs cannot help, but say now if it is missing too.
    also = (f"; also, {explain_import_error(inputs.pyverbs_error)}"
            if inputs.pyverbs_error is not None else "")
    if not inputs.sysfs_present:
        raise NotAvailable(
            f"no RDMA devices: {root} does not exist (the kernel has no InfiniBand/RDMA "
            f"support, CONFIG_INFINIBAND, or no RDMA driver is loaded); on a kernel with "
            f"CONFIG_RDMA_RXE use {SOFT_ROCE_HINT}{also}")
    if not inputs.ports:
        raise NotAvailable(
            f"no RDMA devices: {root} is empty (no RDMA NIC driver bound to a device); "
            f"for a software device use {SOFT_ROCE_HINT}{also}")
    if inputs.pyverbs_error is not None:
        raise NotAvailable(explain_import_error(inputs.pyverbs_error))
    names = sorted({p.device for p in inputs.ports})
    ports = list(inputs.ports)
    if inputs.device is not None:
        ports = [p for p in ports if p.device == inputs.device]
        if not ports:
            raise NotAvailable(f"RDMA device {inputs.device!r} not found; devices: {', '.join(names)}")
    if inputs.port is not None:
        ports = [p for p in ports if p.port == inputs.port]
        if not ports:
            raise NotAvailable(f"RDMA port {inputs.port} not found on {inputs.device or ', '.join(names)}")
    active = [p for p in ports if p.active]
    if not active:
        states = ", ".join(f"{p.device} port {p.port} {p.state or '?'} ({p.phys_state or '?'})"
                           for p in ports)
        raise NotAvailable(f"no active RDMA port: {states}")
    problems = []
    for p in active:  # first active port that can carry the data-plane address wins
        try:
            return _gid_on(inputs, p)
        except GidNotFound as exc:
            problems.append(str(exc))
    raise NotAvailable("; ".join(problems))


def _gid_on(inputs: ProbeInputs, p: PortInfo) -> Selection:
    def sel(index: int, gid: str, gid_type: str) -> Selection:
        return Selection(p.device, p.port, index, gid, gid_type, p.link_layer, p.rate,
                         p.active_mtu, inputs.fw_versions.get(p.device))

    if inputs.gid_index is not None:
        entry = next((g for g in p.gids if g.index == inputs.gid_index), None)
        if entry is None:
            raise GidNotFound(f"{p.device} port {p.port} has no GID at index {inputs.gid_index}")
        if p.link_layer == "Ethernet" and entry.gid_type != sysfs.ROCE_V2:
            raise GidNotFound(f"{p.device} port {p.port} GID index {inputs.gid_index} is "
                              f"{entry.gid_type or 'of unknown type'}, not RoCE v2")
        return sel(entry.index, entry.gid, entry.gid_type or "")
    if p.link_layer == "InfiniBand":
        if not p.gids:
            raise GidNotFound(f"{p.device} port {p.port} has no GID")
        g = p.gids[0]  # IB routes by LID; GID 0 (link-local) is always valid
        return sel(g.index, g.gid, g.gid_type or "IB")
    return sel(*sysfs.select_gid(inputs.sysfs_root, p.device, p.port, inputs.data_addr))


def select(inputs: ProbeInputs) -> Selection:
    """The device/port/GID to use; raises NotAvailable with the probe's reason."""
    s = _select(inputs)
    if s.device in inputs.soft_devices and s.link_layer == "Ethernet" and inputs.roce_udp_socket is False:
        raise NotAvailable(
            f"soft-RoCE device {s.device} cannot receive in this network namespace: no UDP socket on "
            f"port {ROCE_V2_PORT} here (rdma_rxe opens it in one namespace only, the initial one in "
            f"Linux 6.12), so RoCE v2 packets to {inputs.data_addr or 'this address'} would be dropped; "
            f"run rdma on the local fabric, or on a kernel whose rdma_rxe is namespace-aware")
    return s


def decide(inputs: ProbeInputs) -> Capability:
    try:
        s = select(inputs)
    except NotAvailable as exc:
        return Capability.missing(str(exc))
    mtu = f", active MTU {s.active_mtu}" if s.active_mtu else ""
    kind = "RoCE v2" if s.link_layer == "Ethernet" else s.link_layer
    return Capability.ok(
        f"{kind} one-sided RDMA WRITE on {s.device} port {s.port} (GID index {s.gid_index} "
        f"{s.gid_type}, {s.rate or 'rate unknown'}{mtu}, fw {s.fw_ver or '?'})",
        **{k: getattr(s, k) for k in Selection.__dataclass_fields__},
    )


ROCE_V2_PORT = 4791


def udp_port_bound(port: int, tables: tuple[str, ...] = ("/proc/net/udp", "/proc/net/udp6")) -> bool | None:
    """Whether this network namespace has a UDP socket bound to port (kernel sockets too)."""
    want = f":{port:04X}"
    readable = False
    for path in tables:
        try:
            with open(path) as fh:
                readable = True
                next(fh, None)  # header
                for line in fh:
                    fields = line.split()
                    if len(fields) > 1 and fields[1].upper().endswith(want):
                        return True
        except OSError:
            continue
    return False if readable else None


def soft_devices(root: str, names: set[str]) -> frozenset[str]:
    import os

    return frozenset(n for n in names if "/devices/virtual/" in os.path.realpath(os.path.join(root, n)))


def try_import_pyverbs() -> str | None:
    """None if pyverbs and its compiled verbs bindings load, else 'ExcType: message'."""
    try:
        import pyverbs.device  # noqa: F401  (loads libibverbs.so.1 through the extension)
    except Exception as exc:  # ImportError, OSError from the loader
        return f"{type(exc).__name__}: {exc}"
    return None


def gather(
    options: Mapping[str, Any] | None = None,
    root: str = sysfs.DEFAULT_ROOT,
    import_pyverbs: Callable[[], str | None] = try_import_pyverbs,
) -> ProbeInputs:
    """Read sysfs and try the import. Bad option values raise ProfileError naming the key."""
    import os

    from .options import RdmaOptions

    options = options or {}
    opts = RdmaOptions.from_options(options)
    present = os.path.isdir(root)
    ports = tuple(sysfs.all_ports(root)) if present else ()
    return ProbeInputs(
        sysfs_root=root,
        sysfs_present=present,
        ports=ports,
        fw_versions={d: sysfs.fw_ver(root, d) for d in {p.device for p in ports}},
        pyverbs_error=import_pyverbs(),
        device=opts.device,
        port=opts.port,
        gid_index=opts.gid_index,
        data_addr=opts.data_addr,
        soft_devices=soft_devices(root, {p.device for p in ports}),
        roce_udp_socket=udp_port_bound(ROCE_V2_PORT),
    )


def probe(options: Mapping[str, Any] | None = None, root: str | None = None) -> Capability:
    options = options or {}
    return decide(gather(options, root or options.get("sysfs_root") or sysfs.DEFAULT_ROOT))
