"""Error types. Every user-facing error names where (file, field path) and why, so no traceback is needed."""
from __future__ import annotations


class KvFabricError(Exception):
    """Base class; str() is the one-line message shown to users."""


class ProfileError(KvFabricError):
    """A model/GPU profile, suite, inventory or scenario input is invalid.

    `source` is the file (or "<cli>"/"<ini>"), `field` a dotted/indexed path such as
    ``moe.experts`` or ``scenarios[2].slo.p99_latency_us``.
    """

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {reason}")


class UnknownIdError(ProfileError):
    """An id that names no known profile; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str], source: str = "<input>") -> None:
        self.valid = sorted(valid)
        super().__init__(source, kind, f"unknown {kind} {name!r}; valid: {', '.join(self.valid)}")


class TransportError(KvFabricError):
    """The data path failed (peer died, timeout, protocol violation)."""


class ProtocolError(TransportError):
    """A peer sent a frame we cannot accept (malformed, out of region); the connection is closed."""


class IntegrityError(KvFabricError):
    """A page arrived corrupted or misplaced; names request/layer/page."""
