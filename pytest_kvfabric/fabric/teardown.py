"""A fabric's closer that also runs at exit and on SIGTERM/SIGHUP.

Teardown happens on every way out we can catch: the closer itself (fixture finalizer, also
after failing tests and on Ctrl-C, which pytest turns into a normal session end), an atexit
hook, and a SIGTERM/SIGHUP handler that tears down and then re-delivers the signal. SIGKILL
cannot be caught: the namespaces stay behind with a dead creator pid, and the next start's
cleanup_stale() removes them (only names with our prefix whose creator is gone).
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def guarded(close: Callable[[], None]) -> Callable[[], None]:
    """Make `close` idempotent and run it at exit and on SIGTERM/SIGHUP as well."""
    state = {"done": False}
    previous: dict[int, Any] = {}
    owner = os.getpid()  # forked children (pyroute2 forks helpers) inherit handlers: they must not tear down

    def closer() -> None:
        if state["done"] or os.getpid() != owner:
            return
        state["done"] = True  # first: a signal arriving during teardown must not re-enter
        try:
            atexit.unregister(closer)
            if threading.current_thread() is threading.main_thread():
                for sig, old in previous.items():
                    if signal.getsignal(sig) is on_signal:
                        signal.signal(sig, old)
        finally:
            close()

    def on_signal(signum: int, frame: object) -> None:
        try:
            closer()  # no-op in a forked child: it just dies the default way
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # die the way the sender asked

    atexit.register(closer)
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):  # never override someone else's handler
                previous[sig] = signal.getsignal(sig)
                signal.signal(sig, on_signal)
    return closer
