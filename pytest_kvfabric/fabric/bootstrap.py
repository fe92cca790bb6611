"""How an interpreter starts on an agent's host: the source every gateway runs first, the agent's
bootstrap, and a gateway opened within a time bound.

The fabric starts agents (the runner sends AGENT_BOOTSTRAP through `gateway.remote_exec`); the
endpoint only serves the channel it is given, so endpoint/ never imports fabric/.
"""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from ..errors import KvFabricError

# What every piece of code sent through gateway.remote_exec runs first. Before numpy loads:
# agents and probes do no BLAS work, and OpenBLAS's worker threads spin for ~0.1 s of CPU
# after start-up, which the other agent on a small host needs.
_REMOTE_PRELUDE = """
import os, sys
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
try:
    import pytest_kvfabric  # noqa: F401
except ImportError:
    sys.path.insert(0, %r)
"""


def remote_source(body: str) -> str:
    """Source for gateway.remote_exec: the common prelude (this checkout importable where the
    package is not installed; OpenBLAS single-threaded), then body."""
    return _REMOTE_PRELUDE % str(Path(__file__).resolve().parents[2]) + body


# The agent process's entry point (endpoint/agent.py documents the messages it serves).
AGENT_BOOTSTRAP = remote_source("""
from pytest_kvfabric.endpoint.agent import serve
serve(channel)
""")


class HostUnreachable(KvFabricError):
    """A host of the inventory cannot be reached or cannot run an agent; names host and cause."""


def cause_of(exc: BaseException) -> str:
    """The cause of a failed connection or gateway start, in a few words."""
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer (timed out)"
    if isinstance(exc, socket.gaierror):
        return f"name does not resolve ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def open_gateway(spec: str, timeout_s: float, who: str) -> tuple[Any, Any]:
    """execnet gateway in its own group, bounded by timeout_s (makegateway itself has no timeout)."""
    import execnet

    group = execnet.Group()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["gw"] = group.makegateway(spec)
        except BaseException as exc:  # reported to the caller below
            box["exc"] = exc

    t = threading.Thread(target=target, name=f"kvf-gw-{who}", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive() or "exc" in box:
        group.terminate(timeout=1.0)
        cause = "no gateway within %.1f s" % timeout_s if t.is_alive() else cause_of(box["exc"])
        raise HostUnreachable(f"host {who}: cannot start the agent interpreter ({spec.split('//')[-1]}): {cause}")
    return group, box["gw"]
