"""Entry point of the store's processes (roles "store" and "client"), driven over an execnet
channel with the same messages as endpoint/agent.py:

    {"cmd": "setup", "role": "store"|"client", "spec", "token", "bind" (store), "options"}
        -> {"ok": True, "pid", ...} (store: "descriptor", "lookup_addr")
    {"cmd": "run", "timeout_s", "descriptor" and "lookup_addr" (client)} -> {"ok": True, ...}
    {"cmd": "exit"} (or the channel closing) ends the process.
Any failure answers {"ok": False, "kind", "error": one line, "pid"}.
"""
from __future__ import annotations

import os
from typing import Any


def _failure(exc: BaseException) -> dict[str, Any]:
    msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
    return {"ok": False, "kind": type(exc).__name__, "error": msg, "pid": os.getpid()}


def serve(channel: Any) -> None:
    from .store_client import StoreClient
    from .store_server import StoreServer

    session: Any = None
    try:
        while True:
            try:
                msg = channel.receive()
            except EOFError:
                return
            if not isinstance(msg, dict) or msg.get("cmd") == "exit":
                return
            try:
                if msg.get("cmd") == "setup":
                    if session is not None:
                        session.close()
                    session = None
                    session = (StoreServer if msg["role"] == "store" else StoreClient)(msg)
                    reply = {**session.reply, "pid": os.getpid()}
                elif msg.get("cmd") == "run":
                    if session is None:
                        raise RuntimeError("run before setup")
                    try:
                        reply = (session.run(float(msg["timeout_s"])) if isinstance(session, StoreServer)
                                 else session.run(msg))
                    finally:
                        session.close()
                        session = None
                    reply["pid"] = os.getpid()
                else:
                    raise RuntimeError(f"unknown command {msg.get('cmd')!r}")
            except Exception as exc:  # noqa: BLE001 - every failure goes back as one line
                reply = _failure(exc)
                if session is not None:
                    session.close()
                    session = None
            channel.send(reply)
    finally:
        if session is not None:
            session.close()
