"""What UCX really used, from its protocol selection tables (UCX_PROTO_INFO=y), parsed (pure).

With UCX_PROTO_INFO=y, UCX logs one table per (endpoint configuration, operation, memory
type) the first time it selects protocols for it:

    +--------+-------------+-----------------------------------+
    | ini intra-node cfg#1                                     |
    | remote memory write by ucp_put* from host memory to host |
    +--------+-------------+-----------------------------------+
    | 0..inf | zero-copy   | cma/memory                        |
    +--------+-------------+-----------------------------------+

The title names the worker, the endpoint's scope (self, intra-node, inter-node) and its
configuration; each row gives a message-size range, the protocol and the lanes
("transport/device", several joined by "and" with percentages when UCX splits a message).
NIXL's WRITE is ucp_put; its notifications are active messages (ucp_am_send).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_PREFIX = re.compile(r"^\[[^\]]*\]\s*\[[^\]]*\]\s*")  # "[timestamp] [host:pid:thread]"
_TITLE = re.compile(r"^\|\s*(\S+)\s+(self|intra-node|inter-node|\S+)\s+cfg#(\d+)\s*\|$")
_ROW = re.compile(r"^\|\s*([0-9.]+\S*|\d+)\s*\|\s*([^|]*?)\s*\|\s*([^|]*?)\s*\|$")
_LANE = re.compile(r"([a-z][a-z0-9_]*)/([A-Za-z0-9_.:\-]+)")


@dataclass
class ProtoTable:
    worker: str
    scope: str
    cfg: int
    operation: str = ""
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (range, protocol, lanes)

    @property
    def lanes(self) -> list[str]:
        """Distinct "transport/device" lanes of every row, in order of appearance."""
        out: list[str] = []
        for _, _, cfg in self.rows:
            for tl, dev in _LANE.findall(cfg):
                lane = f"{tl}/{dev}"
                if lane not in out:
                    out.append(lane)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"scope": self.scope, "cfg": self.cfg, "operation": self.operation,
                "rows": [list(r) for r in self.rows], "lanes": self.lanes}


def parse(text: str) -> list[ProtoTable]:
    """Every protocol table in a UCX log (lines of other kinds are ignored)."""
    tables: list[ProtoTable] = []
    cur: ProtoTable | None = None
    for raw in text.splitlines():
        line = _PREFIX.sub("", raw).strip()
        if not line.startswith(("|", "+")):
            continue
        if line.startswith("+"):
            continue
        m = _TITLE.match(line)
        if m:
            cur = ProtoTable(m.group(1), m.group(2), int(m.group(3)))
            tables.append(cur)
            continue
        if cur is None:
            continue
        inner = line.strip("|").strip()
        if not cur.operation:
            cur.operation = inner
            continue
        r = _ROW.match(line)
        if r and r.group(1) != "Range":
            cur.rows.append((r.group(1), r.group(2), r.group(3)))
    return tables


def remote_writes(tables: list[ProtoTable]) -> list[ProtoTable]:
    """Tables of ucp_put towards a peer (not the loopback endpoint UCX opens to itself)."""
    return [t for t in tables if t.scope != "self" and t.operation.startswith("remote memory write")]


def notifications(tables: list[ProtoTable]) -> list[ProtoTable]:
    return [t for t in tables if t.scope != "self" and t.operation.startswith("active message")]


def lanes_of(tables: list[ProtoTable]) -> list[str]:
    out: list[str] = []
    for t in tables:
        out += [lane for lane in t.lanes if lane not in out]
    return out


def transport_matches(lane: str, wanted: str) -> bool:
    """rc matches rc_mlx5/... and rc_verbs/...; tcp matches tcp/...; exact names match themselves."""
    tl = lane.split("/", 1)[0]
    return tl == wanted or tl.startswith(wanted + "_")


def requirement_failure(lanes: list[str], wanted: str) -> str | None:
    """Why these remote-write lanes do not satisfy require_ucx_transport=wanted, or None."""
    if not lanes:
        return (f"require_ucx_transport={wanted}: UCX logged no protocol selection for remote writes "
                f"to the peer, so the path cannot be proven")
    other = [lane for lane in lanes if not transport_matches(lane, wanted)]
    if other:
        return (f"require_ucx_transport={wanted}: UCX moved the remote writes over {', '.join(other)}"
                f" (lanes used: {', '.join(lanes)}), not {wanted}")
    return None


# Transports whose put is placed by a NIC without a CPU copy on either side.
NIC_PLACED = ("rc", "dc", "ud", "rc_mlx5", "rc_verbs", "dc_mlx5", "ud_mlx5", "ud_verbs", "srd", "gga")


def zero_copy(lanes: list[str]) -> bool | None:
    if not lanes:
        return None
    return all(lane.split("/", 1)[0] in NIC_PLACED for lane in lanes)
