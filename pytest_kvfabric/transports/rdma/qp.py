"""RC queue-pair attributes for RESET -> INIT -> RTR -> RTS, as plain dicts.

Each builder returns (attrs, mask): attrs maps ibv_qp_attr field names to values (enum
values as their libibverbs names, e.g. "IBV_MTU_4096"), mask lists the ibv_qp_attr_mask
names to pass to ibv_modify_qp. transport.py translates them to pyverbs QPAttr, so this
module (and its tests) need no pyverbs.

Options (transport options keys) and defaults, every one an explicit attribute:
  port            1     local port number
  pkey_index      0
  path_mtu        None  bytes (256..4096); None = the smaller active MTU of the two ports
  timeout         14    local ACK timeout, 4.096 us * 2**timeout (14 ~ 67 ms)
  retry_cnt       7     transport retries before IBV_WC_RETRY_EXC_ERR
  rnr_retry       7     7 = retry receiver-not-ready forever (the target replenishes recvs)
  min_rnr_timer   12    RNR NAK delay code (12 = 0.64 ms)
  max_rd_atomic   1     outstanding RDMA READs we issue (post_read) per QP; more in flight
                        hide the round trip of small reads
  max_dest_rd_atomic 1  outstanding reads/atomics we accept
  hop_limit       64    GRH hop limit (RoCE v2 IP TTL)
  traffic_class   0     GRH traffic class byte = DSCP << 2 | ECN (RoCE QoS)
  dscp            None  alternative to traffic_class: DSCP 0..63, shifted left by 2
  sl              0     service level (InfiniBand; RoCE maps priority from DSCP/PCP)
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from ...errors import ProfileError

SOURCE = "<rdma transport options>"

MTU_NAMES = {256: "IBV_MTU_256", 512: "IBV_MTU_512", 1024: "IBV_MTU_1024",
             2048: "IBV_MTU_2048", 4096: "IBV_MTU_4096"}

# (name, default, low, high) for integer options; ranges are the ibv_qp_attr field widths.
_INT_OPTIONS = (
    ("port", 1, 1, 255),
    ("pkey_index", 0, 0, 0xFFFF),
    ("timeout", 14, 0, 31),
    ("retry_cnt", 7, 0, 7),
    ("rnr_retry", 7, 0, 7),
    ("min_rnr_timer", 12, 0, 31),
    ("max_rd_atomic", 1, 0, 255),
    ("max_dest_rd_atomic", 1, 0, 255),
    ("hop_limit", 64, 1, 255),
    ("traffic_class", 0, 0, 255),
    ("sl", 0, 0, 15),
)


@dataclass(frozen=True)
class QpOptions:
    port: int = 1
    pkey_index: int = 0
    path_mtu: int | None = None
    timeout: int = 14
    retry_cnt: int = 7
    rnr_retry: int = 7
    min_rnr_timer: int = 12
    max_rd_atomic: int = 1
    max_dest_rd_atomic: int = 1
    hop_limit: int = 64
    traffic_class: int = 0
    sl: int = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "QpOptions":
        """Validate transport options; bad values raise ProfileError naming the key."""
        values: dict[str, Any] = {}
        for name, default, low, high in _INT_OPTIONS:
            values[name] = int_option(options, name, default, low, high)
        dscp = options.get("dscp")
        if dscp is not None:
            dscp_tc = int_option(options, "dscp", 0, 0, 63) << 2
            if options.get("traffic_class") is not None and values["traffic_class"] != dscp_tc:
                raise ProfileError(SOURCE, "dscp", f"dscp {dscp} conflicts with traffic_class "
                                   f"{values['traffic_class']} (traffic_class = dscp << 2)")
            values["traffic_class"] = dscp_tc
        mtu = options.get("path_mtu")
        if mtu is not None:
            mtu = int_option(options, "path_mtu", 0, 0, 1 << 20)
            if mtu not in MTU_NAMES:
                raise ProfileError(SOURCE, "path_mtu", f"{mtu} is not one of "
                                   f"{', '.join(map(str, MTU_NAMES))}")
        values["path_mtu"] = mtu
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def int_option(options: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
        if isinstance(raw, float) and raw != value or isinstance(raw, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ProfileError(SOURCE, name, f"{raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ProfileError(SOURCE, name, f"{value} outside [{low}, {high}]")
    return value


def mtu_name(nbytes: int) -> str:
    try:
        return MTU_NAMES[nbytes]
    except KeyError:
        raise ValueError(f"path MTU {nbytes} is not one of {sorted(MTU_NAMES)}") from None


def negotiated_mtu(opts: QpOptions, local_active: int | None, remote_active: int | None) -> int:
    """The path MTU: the option if given, else the smaller active MTU (1024 if unknown)."""
    known = [m for m in (local_active, remote_active) if m]
    ceiling = min(known) if known else 1024
    if opts.path_mtu is not None:
        if opts.path_mtu > ceiling:
            raise ProfileError(SOURCE, "path_mtu", f"{opts.path_mtu} exceeds the active "
                               f"port MTU {ceiling}")
        return opts.path_mtu
    return max(m for m in MTU_NAMES if m <= ceiling)


def init_attrs(opts: QpOptions, *, remote_write: bool) -> tuple[dict[str, Any], list[str]]:
    """RESET -> INIT. Remote write and read only on the side whose memory the peer accesses
    (the target: decode, or a store the initiator reads from with RDMA READ)."""
    access = ["IBV_ACCESS_LOCAL_WRITE"] + (
        ["IBV_ACCESS_REMOTE_WRITE", "IBV_ACCESS_REMOTE_READ"] if remote_write else [])
    attrs = {
        "qp_state": "IBV_QPS_INIT",
        "pkey_index": opts.pkey_index,
        "port_num": opts.port,
        "qp_access_flags": access,
    }
    return attrs, ["IBV_QP_STATE", "IBV_QP_PKEY_INDEX", "IBV_QP_PORT", "IBV_QP_ACCESS_FLAGS"]


def rtr_attrs(
    opts: QpOptions,
    *,
    dest_qpn: int,
    rq_psn: int,
    dgid: str,
    sgid_index: int,
    path_mtu: int,
    dlid: int = 0,
) -> tuple[dict[str, Any], list[str]]:
    """INIT -> RTR: where the peer is (GRH: dgid, our sgid index, hop limit, traffic class)."""
    _check_24bit("dest_qpn", dest_qpn)
    _check_24bit("rq_psn", rq_psn)
    attrs = {
        "qp_state": "IBV_QPS_RTR",
        "path_mtu": mtu_name(path_mtu),
        "dest_qp_num": dest_qpn,
        "rq_psn": rq_psn,
        "max_dest_rd_atomic": opts.max_dest_rd_atomic,
        "min_rnr_timer": opts.min_rnr_timer,
        "ah_attr": {
            "is_global": 1,
            "dlid": dlid,
            "sl": opts.sl,
            "src_path_bits": 0,
            "port_num": opts.port,
            "grh": {
                "dgid": dgid,
                "sgid_index": sgid_index,
                "hop_limit": opts.hop_limit,
                "traffic_class": opts.traffic_class,
                "flow_label": 0,
            },
        },
    }
    mask = ["IBV_QP_STATE", "IBV_QP_AV", "IBV_QP_PATH_MTU", "IBV_QP_DEST_QPN",
            "IBV_QP_RQ_PSN", "IBV_QP_MAX_DEST_RD_ATOMIC", "IBV_QP_MIN_RNR_TIMER"]
    return attrs, mask


def rts_attrs(opts: QpOptions, *, sq_psn: int) -> tuple[dict[str, Any], list[str]]:
    """RTR -> RTS: our send side (first PSN, ACK timeout, retries, outstanding reads)."""
    _check_24bit("sq_psn", sq_psn)
    attrs = {
        "qp_state": "IBV_QPS_RTS",
        "sq_psn": sq_psn,
        "timeout": opts.timeout,
        "retry_cnt": opts.retry_cnt,
        "rnr_retry": opts.rnr_retry,
        "max_rd_atomic": opts.max_rd_atomic,
    }
    mask = ["IBV_QP_STATE", "IBV_QP_SQ_PSN", "IBV_QP_TIMEOUT", "IBV_QP_RETRY_CNT",
            "IBV_QP_RNR_RETRY", "IBV_QP_MAX_QP_RD_ATOMIC"]
    return attrs, mask


def _check_24bit(name: str, value: int) -> None:
    # QPNs and PSNs are 24-bit on the wire (BTH).
    if not 0 <= int(value) < (1 << 24):
        raise ValueError(f"{name} {value} is not a 24-bit value")


def ack_timeout_us(timeout: int) -> float:
    """Local ACK timeout the `timeout` code means (0 = infinite)."""
    return float("inf") if timeout == 0 else 4.096 * (1 << timeout)


# enum ibv_wc_status (libibverbs verbs.h); stable ABI values.
WC_STATUS = (
    "IBV_WC_SUCCESS", "IBV_WC_LOC_LEN_ERR", "IBV_WC_LOC_QP_OP_ERR", "IBV_WC_LOC_EEC_OP_ERR",
    "IBV_WC_LOC_PROT_ERR", "IBV_WC_WR_FLUSH_ERR", "IBV_WC_MW_BIND_ERR", "IBV_WC_BAD_RESP_ERR",
    "IBV_WC_LOC_ACCESS_ERR", "IBV_WC_REM_INV_REQ_ERR", "IBV_WC_REM_ACCESS_ERR",
    "IBV_WC_REM_OP_ERR", "IBV_WC_RETRY_EXC_ERR", "IBV_WC_RNR_RETRY_EXC_ERR",
    "IBV_WC_LOC_RDD_VIOL_ERR", "IBV_WC_REM_INV_RD_REQ_ERR", "IBV_WC_REM_ABORT_ERR",
    "IBV_WC_INV_EECN_ERR", "IBV_WC_INV_EEC_STATE_ERR", "IBV_WC_FATAL_ERR",
    "IBV_WC_RESP_TIMEOUT_ERR", "IBV_WC_GENERAL_ERR",
)

_WC_HINTS = {
    "IBV_WC_REM_ACCESS_ERR": "the target refused the write or read: wrong rkey, address outside "
                             "its memory region, or no remote write/read access",
    "IBV_WC_RETRY_EXC_ERR": "no ACK after retry_cnt retries: peer gone, wrong GID/QPN, link "
                            "down, or lossy fabric (check PFC/ECN and the retransmission counters)",
    "IBV_WC_RNR_RETRY_EXC_ERR": "the target had no receive WR posted for a write with immediate",
    "IBV_WC_WR_FLUSH_ERR": "the QP is in the error state (IBV_QPS_ERR) after an earlier failure",
    "IBV_WC_LOC_PROT_ERR": "the local buffer is outside the registered memory region",
    "IBV_WC_LOC_LEN_ERR": "the write is longer than the device's max message size",
}


def wc_status_name(status: int) -> str:
    return WC_STATUS[status] if 0 <= status < len(WC_STATUS) else f"IBV_WC_STATUS_{status}"


def describe_wc_error(status: int, *, vendor_err: int = 0, what: str = "") -> str:
    """One line naming the work-completion status, what failed, and the likely cause."""
    name = wc_status_name(status)
    hint = _WC_HINTS.get(name, "")
    where = f" ({what})" if what else ""
    vendor = f", vendor_err {vendor_err:#x}" if vendor_err else ""
    return f"work completion {name}{where}{vendor}" + (f": {hint}" if hint else "")
