"""One wait for the answers of several agents (execnet channels).

The controller waits for two agents at once, with a deadline, and must name the one that
fails first. Polling each channel in turn with a short timeout does that, but wakes the
controller tens of times a second; on a small host each wake-up preempts an agent that is
spinning towards its next ready time (a traced 2-vCPU run: 282 preemptions of the prefill
agent over 100 µs in 18 s, 44 ms in all; BENCHMARKS.md). Here every channel's messages go,
through execnet's receive callback, into one queue, and the controller sleeps in a single
`get()` until something arrives or the deadline passes.
"""
from __future__ import annotations

import collections
import queue
import time
from typing import Any

_CLOSED = object()  # endmarker: the channel closed (kept at the head of its box for good)


class Timeout(Exception):
    """No message from the asked channel before the deadline."""


class Closed(Exception):
    """The channel closed. `how` is "crashed" (the remote code raised; `detail` is its last
    line), "died" (the process or connection went away) or "exited" (it closed the channel
    without answering)."""

    def __init__(self, name: str, how: str, detail: str) -> None:
        super().__init__(f"{name} {how}" + (f": {detail}" if detail else ""))
        self.name, self.how, self.detail = name, how, detail


class Mailbox:
    """Messages from named execnet channels, kept in order per channel."""

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._held: dict[str, collections.deque[Any]] = {}
        self._chans: dict[str, Any] = {}
        self._why: dict[str, Closed] = {}  # execnet hands a channel's remote error out only once

    def attach(self, name: str, channel: Any) -> None:
        """Route `channel`'s messages here (execnet: receive() on it is no longer allowed)."""
        self._held[name] = collections.deque()
        self._chans[name] = channel
        channel.setcallback(lambda obj, name=name: self._q.put((name, obj)), endmarker=_CLOSED)

    def has(self, name: str) -> bool:
        """A message (or the close) from `name` is waiting."""
        return bool(self._held[name])

    def wait_any(self, names: tuple[str, ...], deadline: float) -> bool:
        """Block until one of `names` has something waiting; False at the deadline."""
        while not any(self._held[n] for n in names):
            if not self._pull(deadline):
                return False
        return True

    def take(self, name: str, deadline: float) -> Any:
        """The next message from `name`. Raises Timeout at the deadline, Closed once the
        channel closed (and again on every later call)."""
        if not self.wait_any((name,), deadline):
            raise Timeout(name)
        held = self._held[name]
        if held[0] is _CLOSED:
            raise self._closed(name)
        return held.popleft()

    def _pull(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            name, obj = self._q.get(timeout=remaining)
        except queue.Empty:
            return False
        self._held[name].append(obj)
        return True

    def _closed(self, name: str) -> Closed:
        if name not in self._why:
            try:
                self._chans[name].waitclose(timeout=1.0)
                why = Closed(name, "exited", "")
            except EOFError:
                why = Closed(name, "died", "")
            except Exception as exc:  # noqa: BLE001 - execnet's RemoteError carries the remote traceback
                text = str(exc).strip()
                why = Closed(name, "crashed", text.splitlines()[-1] if text else repr(exc))
            self._why[name] = why
        why = self._why[name]
        return Closed(name, why.how, why.detail)  # a fresh exception each time it is raised
