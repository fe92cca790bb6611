"""Transport parameters declared as data: name, type, range, one-line doc, one table per transport.

A transport class sets `params = STREAM_PARAMS + (...)`; `check(...)` refuses an unknown name
(listing the valid ones) or a bad value before any agent starts, on the CLI, in suites and in
`--kv-transport-param`. A transport that declares nothing (`params = None`, e.g. a plug-in
written before this table existed) is not checked. Keys the framework itself sets (the token,
the data address, the netns) and keys starting with "_" are not user parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

# Set by the runner, the fabrics or the probes, never by the user.
FRAMEWORK_KEYS = frozenset({"token", "host", "data_addr", "bind_host", "address", "netns", "index",
                            "initiator", "require_zero_copy", "sysfs_root"})


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int | float | bool | str
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    # for a value the kind alone cannot say (devmem rx_queues: a list or "auto:N"); replaces the rest
    validate: Callable[[Any], str | None] | None = None

    def check(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None."""
        if self.validate is not None:
            return self.validate(value)
        if self.kind is bool:
            return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
        if self.kind is str:
            if not isinstance(value, str):
                return f"expected text, got {value!r}"
            if self.choices and value not in self.choices:
                return f"must be one of {', '.join(self.choices)}; got {value!r}"
            return None
        ok = isinstance(value, int) or (self.kind is float and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            return f"expected {'an integer' if self.kind is int else 'a number'}, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}, got {value}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum:g}, got {value}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}; got {value}"
        return None

    def describe(self) -> str:
        rng = (f" one of {'|'.join(map(str, self.choices))}" if self.choices else
               f" {self.minimum:g}..{self.maximum:g}" if self.minimum is not None and self.maximum is not None
               else "")
        return f"{self.name} ({self.kind.__name__}{rng}): {self.doc}"


# tcp and zerocopy (and the stream code they share)
STREAM_PARAMS: tuple[Param, ...] = (
    Param("connections", int, "parallel TCP connections per endpoint pair (default 1)", 1, 64),
    Param("nodelay", bool, "TCP_NODELAY on the data sockets (default true)"),
    Param("sndbuf", int, "SO_SNDBUF in bytes (default: the kernel's autotuning)", 4096, 1 << 30),
    Param("rcvbuf", int, "SO_RCVBUF in bytes (default: the kernel's autotuning)", 4096, 1 << 30),
    Param("busy_poll_us", float, "spin this long before sleeping in a wait (default: per transport)", 0, 1e6),
    Param("writev", bool, "batched WRITEV frames when the target offers them (default true)"),
    Param("writev_max_bytes", int, "payload cap of one WRITEV frame (default 4 MiB)", 4096, 1 << 30),
    Param("max_unsent_bytes", int, "bytes queued per connection before post() waits", 0, 1 << 36),
    Param("close_timeout_s", float, "seconds close() waits for the last ACKs (default 2)", 0, 3600),
    Param("port", int, "target data port (default 0: any free port)", 0, 65535),
    Param("hello_timeout_s", float, "seconds from accept to a proven HELLO before a stranger is "
          "dropped (default 5)", 0.01, 3600),
)

IOURING_PARAMS: tuple[Param, ...] = (
    Param("mode", str, "send: copied io_uring SEND; send_zc: zero-copy SEND_ZC", choices=("send", "send_zc")),
    Param("queue_depth", int, "SQ entries per ring (default 256)", 8, 32768),
    Param("inflight", int, "writes in flight per ring (default queue_depth - 2)", 1, 32768),
    Param("defer_taskrun", bool, "IORING_SETUP_DEFER_TASKRUN (default true)"),
    Param("zcrx", bool, "zero-copy receive (needs a capable NIC)"),
    Param("zcrx_ifname", str, "interface for zero-copy receive (default: the data address's)"),
    Param("zcrx_rxq", int, "RX queue for zero-copy receive", 0, 4095),
    Param("nodelay", bool, "TCP_NODELAY on the data socket (default true)"),
    Param("sndbuf", int, "SO_SNDBUF in bytes", 4096, 1 << 30),
    Param("rcvbuf", int, "SO_RCVBUF in bytes", 4096, 1 << 30),
    # no busy_poll_us / close_timeout_s: the rings wait in io_uring_enter and close() does not
    # linger for ACKs, so they would be accepted and ignored
    Param("port", int, "target data port (default 0: any free port)", 0, 65535),
    Param("hello_timeout_s", float, "seconds from accept to a proven HELLO before a stranger is "
          "dropped (default 5)", 0.01, 3600),
)


# devmem RX queue ids: the kernel's netdev queue ids are u32, but no NIC has near 4096 RX queues
MAX_RX_QUEUE = 4095


def _rx_queues(value: Any) -> str | None:
    """devmem `rx_queues`: "auto", "auto:N", a queue id, "14,15" / "14 15", or a list [14, 15]."""
    want = 'expected "auto", "auto:N", a queue id or a list of queue ids'
    if isinstance(value, str):
        text = value
        if text == "auto":
            return None
        if text.startswith("auto:"):
            n = text[5:]
            return None if n.isdecimal() and 1 <= int(n) <= MAX_RX_QUEUE else f"{want}; N in 1..{MAX_RX_QUEUE}, got {value!r}"
        items: list[Any] = text.replace(",", " ").split()
        if not items or not all(i.isdecimal() for i in items):
            return f"{want}, got {value!r}"
        items = [int(i) for i in items]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        return f"{want}, got {value!r}"
    for q in items:
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= MAX_RX_QUEUE:
            return f"queue ids are integers 0..{MAX_RX_QUEUE}, got {q!r}"
    if len(set(items)) != len(items):
        return f"queue ids repeat: {value!r}"
    return None


def _ifname(value: Any) -> str | None:
    # IFNAMSIZ is 16 with the NUL; the kernel refuses "/", whitespace and "." / ".."
    if (not isinstance(value, str) or not 1 <= len(value) <= 15 or value in (".", "..")
            or any(c == "/" or c == ":" or c.isspace() for c in value)):
        return f"expected a network interface name (1..15 characters, no '/', ':' or spaces), got {value!r}"
    return None


# devmem: the stream parameters (it is a stream transport) plus its NIC ones (devmem/transport.py)
DEVMEM_PARAMS: tuple[Param, ...] = STREAM_PARAMS + (
    Param("interface", str, "the devmem NIC (required for a run; the probe touches no NIC without it)",
          validate=_ifname),
    Param("rx_queues", list, 'RX queues bound to the landing dma-buf: "auto" (the last), "auto:N" '
          "(the last N) or a list like [14, 15]", validate=_rx_queues),
    Param("tx", bool, "bind the sender's pool dma-buf for devmem TX (default true)"),
    Param("dontneed_batch", int, "tokens per SO_DEVMEM_DONTNEED call (default 128, the kernel's cap)", 1, 128),
    # below 1 MiB the NIC's page pool cannot fill an RX ring; udmabuf's own size limit applies above
    Param("landing_nbytes", int, "size of the RX landing dma-buf in bytes (default 64 MiB)", 1 << 20, 1 << 36),
    Param("require_device_placement", bool, "fail the run at the first payload byte landing in host memory"),
)

# rdma (rdma/options.py and rdma/qp.py validate again when the transport builds its QPs);
# `device`, `gid_index` and `traffic_class` are also --kv-rdma-device/-gid-index/-tc
RDMA_PARAMS: tuple[Param, ...] = (
    Param("device", str, "RDMA device, e.g. mlx5_0 or rxe0 (default: the first active port carrying "
          "the data-plane address)"),
    Param("port", int, "RDMA port number of the device (default: the first active)", 1, 255),
    Param("gid_index", int, "source GID index (default: the RoCE v2 GID of the data-plane address)", 0, 255),
    Param("traffic_class", int, "GRH traffic class byte = DSCP << 2 | ECN (default 0)", 0, 255),
    Param("dscp", int, "alternative to traffic_class: DSCP, shifted left by 2", 0, 63),
    Param("qps", int, "RC QPs per endpoint pair (default 1: strictly ordered placement)", 1, 64),
    Param("signal_every", int, "signal every Nth send WR per QP (default 16; <= max_send_wr)", 1, 1 << 16),
    Param("poll", str, "busy: poll the CQ; channel: sleep on a completion channel", choices=("busy", "channel")),
    Param("max_send_wr", int, "send-queue depth per QP (default 256; >= signal_every)", 1, 1 << 16),
    Param("recv_depth", int, "receive WRs kept posted per QP (default 256)", 1, 1 << 16),
    Param("path_mtu", int, "path MTU in bytes (default: the smaller active MTU of the two ports)",
          256, 4096, choices=(256, 512, 1024, 2048, 4096)),
    Param("pkey_index", int, "partition key index (default 0)", 0, 0xFFFF),
    Param("timeout", int, "local ACK timeout, 4.096 us * 2**timeout (default 14, ~67 ms)", 0, 31),
    Param("retry_cnt", int, "transport retries before IBV_WC_RETRY_EXC_ERR (default 7)", 0, 7),
    Param("rnr_retry", int, "receiver-not-ready retries (default 7: forever)", 0, 7),
    Param("min_rnr_timer", int, "RNR NAK delay code (default 12: 0.64 ms)", 0, 31),
    Param("max_rd_atomic", int, "outstanding RDMA reads/atomics issued (default 1)", 0, 255),
    Param("max_dest_rd_atomic", int, "outstanding RDMA reads/atomics accepted (default 1)", 0, 255),
    Param("hop_limit", int, "GRH hop limit, the RoCE v2 IP TTL (default 64)", 1, 255),
    Param("sl", int, "service level (InfiniBand; default 0)", 0, 15),
    Param("side_port", int, "target side-connection TCP port (default 0: any free port)", 0, 65535),
    Param("accept_timeout_s", float, "seconds the target waits for the initiator's side connection "
          "(default 600)", 0.01, 86400),
)


def check(declared: Mapping[str, tuple[Param, ...] | None], params: Mapping[str, Any]) -> str | None:
    """Why `params` cannot go to the transports `declared` ({name: params or None}), or None.

    A key must be declared by at least one of the transports (it then applies to those); a
    value must pass the check of every transport declaring it."""
    names = list(declared)
    for key, value in params.items():
        key = str(key)
        if key in FRAMEWORK_KEYS or key.startswith("_"):
            continue
        owners = [(t, p) for t, ps in declared.items() if ps for p in ps if p.name == key]
        if not owners:
            if any(ps is None for ps in declared.values()):
                continue  # an undeclared (plug-in) transport may take it
            valid = sorted({p.name for ps in declared.values() for p in (ps or ())})
            return (f"unknown parameter {key!r} for transport {', '.join(names)}; "
                    f"valid: {', '.join(valid)}")
        for t, p in owners:
            why = p.check(value)
            if why:
                return f"transport {t} parameter {key}: {why}"
    return None


def table(params: Iterable[Param]) -> list[str]:
    """One line per parameter, for --help texts and docs."""
    return [p.describe() for p in params]
