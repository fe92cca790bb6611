"""NIC readiness for devmem RX: header split, flow steering, RSS, queue count, driver.

Pure parsers for `ethtool` output and a pure `check_nic` that names each missing piece with
the command that fixes it; `gather_nic` is the thin I/O part (ethtool netlink first, the
`ethtool` CLI as the fallback, saying which answered). Documentation/networking/devmem.rst:
"Header split, flow steering, & RSS are required features for devmem TCP."
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Sequence

from .. import ethtool_ioctl
from .netlink import GenlSocket, NetlinkError


@dataclass(frozen=True)
class SteeringRule:
    rule_id: int
    flow_type: str  # e.g. "TCP over IPv4"
    dst_port: int | None
    queue: int | None  # None: the rule drops or goes to an RSS context


@dataclass
class NicState:
    ifname: str
    ifindex: int = 0
    driver: str = ""
    firmware: str = ""
    driver_source: str = ""
    header_split: str = "unknown"  # on | off | unknown
    header_split_source: str = ""  # which tool answered, or why none did
    rx_queues: int | None = None  # configured RX queues (netdev queue-get)
    ntuple: str = "unknown"  # on | off | unknown
    rules: list[SteeringRule] = field(default_factory=list)
    rules_source: str = ""
    rss_queues: set[int] | None = None  # queues in the RSS indirection table
    rss_source: str = ""


# ---- parsers (pure) ----------------------------------------------------------------------

def parse_ethtool_g(text: str) -> str:
    """'on'/'off'/'unknown' from `ethtool -g IFACE` ("TCP data split: on")."""
    m = re.search(r"^TCP data split:\s*(\S+)", text, re.M)
    if not m:
        return "unknown"
    v = m.group(1).lower()
    return v if v in ("on", "off") else "unknown"


def parse_ethtool_i(text: str) -> tuple[str, str]:
    """(driver, firmware-version) from `ethtool -i IFACE`."""
    drv = re.search(r"^driver:[ \t]*(.*)$", text, re.M)
    fw = re.search(r"^firmware-version:[ \t]*(.*)$", text, re.M)
    return (drv.group(1).strip() if drv else "", fw.group(1).strip() if fw else "")


def parse_ethtool_k_ntuple(text: str) -> str:
    m = re.search(r"^ntuple-filters:\s*(on|off)", text, re.M)
    return m.group(1) if m else "unknown"


def parse_ethtool_n(text: str) -> list[SteeringRule]:
    """Rules from `ethtool -n IFACE` (one "Filter: N" block per rule)."""
    rules = []
    for block in re.split(r"^Filter:\s*", text, flags=re.M)[1:]:
        rid = int(block.split(None, 1)[0])
        ftype = re.search(r"Rule Type:\s*(.*)", block)
        port = re.search(r"Dest port:\s*(\d+)\s+mask:\s*(0x[0-9a-fA-F]+|\d+)", block)
        dst_port = None
        if port and int(port.group(2), 0) == 0:  # mask 0 = port must match exactly
            dst_port = int(port.group(1))
        q = re.search(r"Action:\s*Direct to queue\s+(\d+)", block)
        rules.append(SteeringRule(rid, ftype.group(1).strip() if ftype else "",
                                  dst_port, int(q.group(1)) if q else None))
    return rules


def parse_ethtool_x(text: str) -> set[int] | None:
    """Queues appearing in the RSS indirection table of `ethtool -x IFACE`, None if absent."""
    if "indirection table" not in text:
        return None
    queues: set[int] = set()
    for line in text.splitlines():
        m = re.match(r"^\s*\d+:\s+([\d\s]+)$", line)
        if m:
            queues.update(int(x) for x in m.group(1).split())
        elif line.strip().startswith("RSS hash key"):
            break
    return queues or None  # "Operation not supported" instead of rows: unknown


def last_queues(rx_queue_count: int, n: int) -> list[int]:
    """rx_queues="auto": the last n queues (the RSS table then spreads over the others)."""
    if n < 1 or n >= rx_queue_count:
        raise ValueError(
            f"cannot dedicate {n} of {rx_queue_count} RX queues to devmem (need at least one left for RSS)"
        )
    return list(range(rx_queue_count - n, rx_queue_count))


# ---- decision (pure) ---------------------------------------------------------------------

def _rss_fix(ifn: str, queues: Sequence[int]) -> str:
    # `equal N` spreads RSS over queues 0..N-1, so the devmem queues must be the last ones
    if queues and min(queues) > 0:
        return f"`ethtool -X {ifn} equal {min(queues)}`"
    return f"bind the last RX queues (rx_queues=auto) and run `ethtool -X {ifn} equal N` (N = first devmem queue)"


def check_nic(state: NicState, queues: Sequence[int], port: int | None = None) -> list[str]:
    """Each missing piece, with its own reason and fix command; [] when the NIC is ready."""
    ifn = state.ifname
    reasons = []
    if state.header_split != "on":
        how = f" ({state.header_split_source})" if state.header_split_source else ""
        reasons.append(f"TCP header/data split is {state.header_split} on {ifn}{how}: "
                       f"run `ethtool -G {ifn} tcp-data-split on`")
    if state.rx_queues is not None:
        bad = [q for q in queues if q >= state.rx_queues]
        if bad:
            reasons.append(f"{ifn} has {state.rx_queues} RX queues; queues {bad} do not exist: "
                           f"`ethtool -L {ifn} combined N` or choose other --kv-devmem-queues")
        elif state.rx_queues - len(set(queues)) < 1:
            reasons.append(f"all {state.rx_queues} RX queues of {ifn} would be bound to devmem; "
                           f"leave at least one for other traffic (`ethtool -L {ifn} combined N`)")
    if state.ntuple == "off":
        reasons.append(f"ntuple flow steering is off on {ifn}: run `ethtool -K {ifn} ntuple on`")
    steered = {r.queue for r in state.rules
               if r.queue in set(queues) and (port is None or r.dst_port in (None, port))}
    if not steered:
        q = queues[0] if queues else "Q"
        p = f" dst-port {port}" if port else " dst-port PORT"
        src = f" ({state.rules_source})" if state.rules_source else ""
        reasons.append(f"no flow steering rule sends the flow to devmem queues {list(queues)} on {ifn}{src}: "
                       f"run `ethtool -N {ifn} flow-type tcp4{p} action {q}`")
    if state.rss_queues is None:
        src = f" ({state.rss_source})" if state.rss_source else ""
        reasons.append(f"RSS indirection table of {ifn} unknown{src}; exclude the devmem queues: "
                       f"{_rss_fix(ifn, queues)}")
    else:
        overlap = sorted(state.rss_queues & set(queues))
        if overlap:
            reasons.append(f"RSS spreads other flows onto devmem queues {overlap} of {ifn}: "
                           f"{_rss_fix(ifn, queues)}")
    return reasons


# ---- gathering (I/O) ---------------------------------------------------------------------

def _ethtool(args: list[str], netns: str | None, timeout_s: float = 5.0) -> tuple[int, str]:
    exe = shutil.which("ethtool") or ("/usr/sbin/ethtool" if os.path.exists("/usr/sbin/ethtool") else None)
    if exe is None:
        return 127, "ethtool not installed"
    cmd = [exe, *args]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    if p.returncode == 0:
        return 0, p.stdout
    return p.returncode, "; ".join((p.stderr.strip() or p.stdout.strip()).splitlines())


def gather_nic(ifname: str, ifindex: int, nl: GenlSocket, netns: str | None = None) -> NicState:
    """Ask the kernel (netlink) and ethtool; every field says where it came from or why not."""
    st = NicState(ifname, ifindex)
    try:
        st.header_split = nl.tcp_data_split(ifname)
        st.header_split_source = "ethtool netlink rings-get" + (
            ": the driver does not report tcp-data-split" if st.header_split == "unknown" else "")
    except NetlinkError as exc:
        rc, out = _ethtool(["-g", ifname], netns)
        if rc == 0:
            st.header_split = parse_ethtool_g(out)
            st.header_split_source = f"`ethtool -g {ifname}` (netlink rings-get: {exc.errname})"
        else:
            st.header_split_source = f"driver does not report rings: netlink {exc.errname}, `ethtool -g`: {out}"
    try:
        st.rx_queues = sum(1 for q in nl.queues(ifindex) if q.get("type") == "rx")
    except NetlinkError:
        st.rx_queues = None
    rc, out = _ethtool(["-i", ifname], netns)
    if rc == 0:
        st.driver, st.firmware = parse_ethtool_i(out)
        st.driver_source = "ethtool -i"
    else:
        try:  # the kernel's own answer (SIOCETHTOOL GDRVINFO) when the ethtool CLI is absent
            with ethtool_ioctl.socket_in_netns(netns) as s:
                info = ethtool_ioctl.drvinfo(s, ifname)
            st.driver, st.firmware = info["driver"], info["firmware-version"]
            st.driver_source = "SIOCETHTOOL GDRVINFO"
        except OSError as exc:
            st.driver_source = f"unknown (`ethtool -i`: {out}; SIOCETHTOOL: {exc.strerror or exc})"
    rc, out = _ethtool(["-k", ifname], netns)
    if rc == 0:
        st.ntuple = parse_ethtool_k_ntuple(out)
    rc, out = _ethtool(["-n", ifname], netns)
    if rc == 0:
        st.rules, st.rules_source = parse_ethtool_n(out), f"ethtool -n {ifname}"
    else:
        st.rules_source = f"`ethtool -n {ifname}`: {out}"
    rc, out = _ethtool(["-x", ifname], netns)
    if rc == 0:
        st.rss_queues, st.rss_source = parse_ethtool_x(out), f"ethtool -x {ifname}"
    else:
        st.rss_source = f"`ethtool -x {ifname}`: {out}"
    return st
