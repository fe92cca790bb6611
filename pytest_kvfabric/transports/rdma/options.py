"""Transport-level options of the rdma transport (pure validation; QP options live in qp.py).

  device         None     RDMA device (--kv-rdma-device); None = first active port that
                          carries the data-plane address
  port           None     port number; None = first active
  gid_index      None     GID index (--kv-rdma-gid-index); None = the RoCE v2 GID of the
                          data-plane address
  traffic_class  0        GRH traffic class (--kv-rdma-tc), see qp.py
  qps            1        RC QPs per endpoint pair (1 = strictly ordered placement)
  signal_every   16       signal every Nth send WR per QP (the last of each post always)
  poll           "busy"   "busy" polls the CQ; "channel" sleeps on a completion channel
  max_send_wr    256      send-queue depth per QP, and the longest chain posted at once
  recv_depth     256      receive WRs kept posted per QP for immediates (replenished)
  token          ""       shared secret the initiator presents on the side connection
  data_addr      None     initiator: local data-plane address (default: routed source
                          address towards the target)
  sysfs_root     /sys/class/infiniband  where device attributes and counters are read
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import ProfileError
from .qp import SOURCE, QpOptions, int_option
from .sysfs import DEFAULT_ROOT

POLL_MODES = ("busy", "channel")


@dataclass(frozen=True)
class RdmaOptions:
    device: str | None
    port: int | None
    gid_index: int | None
    qps: int
    signal_every: int
    poll: str
    max_send_wr: int
    recv_depth: int
    token: str
    data_addr: str | None
    qp: QpOptions
    sysfs_root: str = DEFAULT_ROOT

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "RdmaOptions":
        poll = str(options.get("poll") or "busy")
        if poll not in POLL_MODES:
            raise ProfileError(SOURCE, "poll", f"{poll!r} is not one of {', '.join(POLL_MODES)}")
        gid = options.get("gid_index")
        port = options.get("port")
        max_send_wr = int_option(options, "max_send_wr", 256, 1, 1 << 16)
        signal_every = int_option(options, "signal_every", 16, 1, 1 << 16)
        if signal_every > max_send_wr:
            raise ProfileError(SOURCE, "signal_every", f"{signal_every} exceeds max_send_wr "
                               f"{max_send_wr} (the send queue would fill with unsignalled WRs)")
        return cls(
            device=options.get("device") or None,
            port=None if port in (None, "") else int_option(options, "port", 1, 1, 255),
            gid_index=None if gid in (None, "") else int_option(options, "gid_index", 0, 0, 1 << 16),
            qps=int_option(options, "qps", 1, 1, 64),
            signal_every=signal_every,
            poll=poll,
            max_send_wr=max_send_wr,
            recv_depth=int_option(options, "recv_depth", 256, 1, 1 << 16),
            token=str(options.get("token") or ""),
            data_addr=options.get("data_addr") or None,
            qp=QpOptions.from_options(options),
            sysfs_root=str(options.get("sysfs_root") or DEFAULT_ROOT),
        )
