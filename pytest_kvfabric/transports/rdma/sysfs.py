"""Read what the kernel's RDMA core exposes under /sys/class/infiniband (no verbs needed).

Layout (per device D, port N, GID index I):
  D/fw_ver, D/node_guid
  D/ports/N/state ("4: ACTIVE"), phys_state ("5: LinkUp"), link_layer ("Ethernet"),
  rate ("100 Gb/sec (4X EDR)"), active_mtu (some drivers; else ask ibv_query_port)
  D/ports/N/gids/I, gid_attrs/types/I ("RoCE v2", "IB/RoCE v1"), gid_attrs/ndevs/I
  D/ports/N/counters/*, hw_counters/*

Every function takes the root path so tests point it at a tree they write themselves.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Iterable

DEFAULT_ROOT = "/sys/class/infiniband"

ROCE_V2 = "RoCE v2"
ROCE_V1 = "IB/RoCE v1"

# `counters/port_xmit_data` and `port_rcv_data` count 4-octet words (IBA PortCounters).
WORD_COUNTERS = ("port_xmit_data", "port_rcv_data")

# Counters a data-path report names when the driver exposes them (mlx5 names).
EVIDENCE_COUNTERS = (
    "tx_bytes",  # derived: counters/port_xmit_data * 4
    "rx_bytes",  # derived: counters/port_rcv_data * 4
    "out_of_sequence",
    "packet_seq_err",
    "np_cnp_sent",
    "rp_cnp_handled",
    "np_ecn_marked_roce_packets",
    "local_ack_timeout_err",
    "implied_nak_seq_err",
    "duplicate_request",
    "rnr_nak_retry_err",
    "req_cqe_error",
    "resp_cqe_error",
    "roce_adp_retrans",
    "roce_slow_restart",
    # soft-RoCE (rxe) names
    "sent_pkts",
    "rcvd_pkts",
    "out_of_seq_request",
    "rcvd_seq_err",
    "completer_retry_err",
    "retry_exceeded_err",
    "retry_rnr_exceeded_err",
)


class GidNotFound(LookupError):
    """No usable GID: the message lists what the port does have."""


@dataclass(frozen=True)
class GidEntry:
    index: int
    gid: str  # 8-word form as the kernel prints it
    gid_type: str | None  # "RoCE v2", "IB/RoCE v1", or None if unreadable
    ndev: str | None


@dataclass(frozen=True)
class PortInfo:
    device: str
    port: int
    state: str  # "ACTIVE", "DOWN", ...
    phys_state: str  # "LinkUp", "Disabled", ...
    link_layer: str  # "Ethernet" or "InfiniBand"
    rate: str
    active_mtu: int | None
    gids: tuple[GidEntry, ...] = field(default=())

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"


def _read(path: str) -> str | None:
    """File text stripped, or None: empty GID slots raise EINVAL on read, absent files ENOENT."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _after_colon(text: str | None) -> str:
    # "4: ACTIVE" -> "ACTIVE"; a value without a numeric prefix is kept as is.
    if not text:
        return ""
    head, sep, tail = text.partition(":")
    return tail.strip() if sep and head.strip().isdigit() else text.strip()


def _sorted_ints(path: str) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(path) if n.isdigit())
    except OSError:
        return []


def devices(root: str = DEFAULT_ROOT) -> list[str]:
    """Device names, sorted; empty if the directory is missing (kernel without RDMA)."""
    try:
        return sorted(os.listdir(root))
    except OSError:
        return []


def ports(root: str, device: str) -> list[int]:
    return _sorted_ints(os.path.join(root, device, "ports"))


def fw_ver(root: str, device: str) -> str | None:
    return _read(os.path.join(root, device, "fw_ver"))


def _mtu_value(text: str | None) -> int | None:
    # Accept "4096", "4096 (5)" or ibv enum-ish "5" (IBV_MTU_4096 = 5).
    if not text:
        return None
    word = text.split()[0]
    if not word.isdigit():
        return None
    value = int(word)
    return 128 << value if 1 <= value <= 5 else value


def gid_table(root: str, device: str, port: int) -> list[GidEntry]:
    """Non-zero GIDs of a port, in index order."""
    base = os.path.join(root, device, "ports", str(port))
    out = []
    for index in _sorted_ints(os.path.join(base, "gids")):
        gid = _read(os.path.join(base, "gids", str(index)))
        if not gid or _gid_addr(gid) in (None, ipaddress.IPv6Address(0)):
            continue
        out.append(
            GidEntry(
                index,
                gid,
                _read(os.path.join(base, "gid_attrs", "types", str(index))),
                _read(os.path.join(base, "gid_attrs", "ndevs", str(index))),
            )
        )
    return out


def port_info(root: str, device: str, port: int) -> PortInfo:
    base = os.path.join(root, device, "ports", str(port))
    return PortInfo(
        device=device,
        port=port,
        state=_after_colon(_read(os.path.join(base, "state"))),
        phys_state=_after_colon(_read(os.path.join(base, "phys_state"))),
        link_layer=_read(os.path.join(base, "link_layer")) or "",
        rate=_read(os.path.join(base, "rate")) or "",
        active_mtu=_mtu_value(_read(os.path.join(base, "active_mtu"))),
        gids=tuple(gid_table(root, device, port)),
    )


def all_ports(root: str = DEFAULT_ROOT) -> list[PortInfo]:
    return [port_info(root, d, p) for d in devices(root) for p in ports(root, d)]


def _gid_addr(gid: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(gid)
    except ValueError:
        return None


def gid_for_address(addr: str) -> ipaddress.IPv6Address:
    """The GID value a RoCE v2 port carries for an IP address (IPv4 maps to ::ffff:a.b.c.d)."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])  # a GID has no IPv6 scope
    if isinstance(ip, ipaddress.IPv4Address):
        return ipaddress.IPv6Address("::ffff:" + str(ip))
    return ip


def select_gid(
    root: str, device: str, port: int, data_addr: str | None
) -> tuple[int, str, str]:
    """(index, gid, type) of the RoCE v2 GID carrying data_addr.

    data_addr None: the first RoCE v2 GID. RoCE v1 entries with the same value are skipped
    (v1 is not routable). Raises GidNotFound naming the GIDs the port has.
    """
    table = gid_table(root, device, port)
    wanted = gid_for_address(data_addr) if data_addr else None
    for entry in table:
        if entry.gid_type != ROCE_V2:
            continue
        if wanted is None or _gid_addr(entry.gid) == wanted:
            return entry.index, entry.gid, entry.gid_type
    have = ", ".join(f"{e.index}={_gid_addr(e.gid)} ({e.gid_type or '?'})" for e in table) or "none"
    what = f"for {data_addr} ({wanted})" if wanted is not None else "at all"
    raise GidNotFound(f"{device} port {port} has no RoCE v2 GID {what}; GIDs: {have}")


def read_counters(root: str, device: str, port: int) -> dict[str, int]:
    """Snapshot of counters/* and hw_counters/* (integers only), plus derived tx/rx bytes."""
    base = os.path.join(root, device, "ports", str(port))
    snap: dict[str, int] = {}
    for sub in ("counters", "hw_counters"):
        directory = os.path.join(base, sub)
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            text = _read(os.path.join(directory, name))
            if text is None:
                continue
            try:
                snap[name] = int(text.split()[0], 0)
            except (ValueError, IndexError):
                continue  # e.g. a "lifespan" knob or "N/A"
    if "port_xmit_data" in snap:
        snap["tx_bytes"] = snap["port_xmit_data"] * 4
    if "port_rcv_data" in snap:
        snap["rx_bytes"] = snap["port_rcv_data"] * 4
    return snap


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after - before for counters in both snapshots.

    A counter that went down was reset or wrapped (32-bit IB PortCounters saturate or
    wrap): its delta is reported as the after value, the lower bound of what happened.
    """
    out = {}
    for name, value in after.items():
        if name in before:
            diff = value - before[name]
            out[name] = diff if diff >= 0 else value
    return out


def snapshot_ports(root: str = DEFAULT_ROOT) -> dict[str, dict[str, int]]:
    """read_counters of every port here, keyed 'device:port' (empty without RDMA): what an
    engine-backed transport takes at start to show later which ports its bytes crossed."""
    return {f"{d}:{p}": read_counters(root, d, p) for d in devices(root) for p in ports(root, d)}


def moved_since(before: dict[str, dict[str, int]], keys: Iterable[str],
                root: str = DEFAULT_ROOT) -> dict[str, dict[str, int]]:
    """For each 'device:port' of keys that was in the snapshot: its non-zero counter deltas."""
    out: dict[str, dict[str, int]] = {}
    for key in keys:
        if key in before and key not in out:
            dev, _, port = key.rpartition(":")
            delta = counter_delta(before[key], read_counters(root, dev, int(port)))
            out[key] = {k: v for k, v in sorted(delta.items()) if v}
    return out


def evidence(delta: dict[str, int]) -> dict[str, int]:
    """The counters a congestion or retry gate cares about, where the driver exposes them."""
    return {name: delta[name] for name in EVIDENCE_COUNTERS if name in delta}
