"""fabric/mailbox.py over real execnet gateways (popen child processes)."""
from __future__ import annotations

import queue
import time

import execnet
import pytest

from pytest_kvfabric.fabric.mailbox import Closed, Mailbox, Timeout


@pytest.fixture
def group():
    g = execnet.Group()
    yield g
    g.terminate(timeout=2.0)


def _attach(group, box: Mailbox, name: str, code: str):
    ch = group.makegateway("popen").remote_exec(code)
    box.attach(name, ch)
    return ch


def test_messages_arrive_in_order_per_channel_whoever_sends_first(group):
    box = Mailbox()
    a = _attach(group, box, "a", "for i in range(3): channel.send(('a', i))\nchannel.receive()")
    b = _attach(group, box, "b", "import time; time.sleep(0.2); channel.send(('b', 0)); channel.receive()")
    deadline = time.monotonic() + 10
    assert box.wait_any(("a", "b"), deadline)
    assert [box.take("a", deadline) for _ in range(3)] == [("a", 0), ("a", 1), ("a", 2)]
    assert box.take("b", deadline) == ("b", 0)  # waiting on b does not lose a's later messages
    with pytest.raises(Timeout):
        box.take("a", time.monotonic() + 0.1)
    a.send("stop")
    b.send("stop")


def test_one_blocking_wait_per_message_not_polling(group):
    # The point of the mailbox: the controller sleeps in one queue wait until an answer
    # comes, instead of waking every few ms (which preempts the agents it measures).
    box = Mailbox()
    gets = []

    class Counting(queue.Queue):
        def get(self, block=True, timeout=None):
            gets.append(timeout)
            return super().get(block, timeout)

    box._q = Counting()
    _attach(group, box, "late", "import time; time.sleep(0.5); channel.send('done')")
    assert box.take("late", time.monotonic() + 30) == "done"
    assert len(gets) == 1 and gets[0] > 20  # one wait, with the whole remaining deadline


@pytest.mark.parametrize("code, how, detail", [
    ("channel.send(1); raise ValueError('bad plan row 7')", "crashed", "ValueError: bad plan row 7"),
    ("import os; channel.send(1); os._exit(3)", "died", ""),
    ("channel.send(1)", "exited", ""),
])
def test_a_closed_channel_says_how_and_keeps_saying_it(group, code, how, detail):
    box = Mailbox()
    _attach(group, box, "agent", code)
    deadline = time.monotonic() + 10
    assert box.take("agent", deadline) == 1  # what was sent before the close is delivered first
    for _ in range(2):
        with pytest.raises(Closed) as info:
            box.take("agent", deadline)
        assert (info.value.name, info.value.how, info.value.detail) == ("agent", how, detail)
    assert box.has("agent") and box.wait_any(("agent",), deadline)


def test_timeout_at_the_deadline_when_nothing_comes(group):
    box = Mailbox()
    ch = _attach(group, box, "quiet", "channel.receive()")
    with pytest.raises(Timeout):
        box.take("quiet", time.monotonic() + 0.2)
    assert not box.wait_any(("quiet",), time.monotonic() - 1)  # a passed deadline does not wait
    ch.send("stop")
