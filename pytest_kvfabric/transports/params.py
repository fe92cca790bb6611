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
from typing import Any, Iterable, Mapping

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
    choices: tuple[str, ...] | None = None

    def check(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None."""
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
        return None

    def describe(self) -> str:
        rng = (f" one of {'|'.join(self.choices)}" if self.choices else
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
    Param("busy_poll_us", float, "spin this long before sleeping in a wait", 0, 1e6),
    Param("close_timeout_s", float, "seconds close() waits for the last ACKs", 0, 3600),
    Param("port", int, "target data port (default 0: any free port)", 0, 65535),
    Param("hello_timeout_s", float, "seconds from accept to a proven HELLO before a stranger is "
          "dropped (default 5)", 0.01, 3600),
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
