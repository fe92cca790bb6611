"""A target whose places for unauthenticated connections are all young refuses a newcomer with
a BUSY ERROR instead of a CHALLENGE; our initiators retry that, and only that, until their
connect deadline. Driven over real loopback sockets against a scripted listener."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from pytest_kvfabric.errors import TransportError
from pytest_kvfabric.transports import framing, handshake
from pytest_kvfabric.transports.stream_common import connect_with_hello

TOKEN = "run-token"


def _listener(replies: list[bytes]):
    """Accepts len(replies) connections, answering each with its scripted first frame; for a
    CHALLENGE it then reads the HELLO and proves it. Returns (port, thread, results)."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(3)
    results: list[str] = []

    def serve():
        try:
            for reply in replies:
                conn, _ = lsock.accept()
                with conn:
                    conn.settimeout(10)
                    if reply == b"challenge":
                        hs = handshake.TargetHandshake(TOKEN)
                        conn.sendall(hs.challenge())
                        for _ in range(100):
                            want = hs.want()
                            if not want or hs.hello is not None or hs.kind:
                                break
                            data = conn.recv(want)
                            if not data:
                                hs.closed()
                                break
                            hs.feed(data)
                        results.append("proven" if hs.hello is not None else f"not proven: {hs.reason}")
                    else:
                        conn.sendall(reply)
                        results.append("refused")
        except OSError:  # accept timed out: the initiator stopped trying (bounded wait)
            pass
        finally:
            lsock.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock.getsockname()[1], t, results


def _connect(port: int, timeout_s: float) -> socket.socket:
    return connect_with_hello("127.0.0.1", port, lambda s: None, TOKEN, "ini", 0, 1,
                              time.monotonic() + timeout_s, "HELLO", "connect")


def test_a_busy_refusal_is_retried_until_a_challenge_comes():
    busy = framing.encode_error(handshake.BUSY)
    port, t, results = _listener([busy, busy, b"challenge"])
    sock = _connect(port, 10)
    sock.close()
    t.join(10)
    assert results == ["refused", "refused", "proven"]


def test_any_other_refusal_is_not_retried():
    port, t, results = _listener([framing.encode_error("rejected: go away"), b"challenge"])
    with pytest.raises(TransportError, match="go away"):
        _connect(port, 10)
    # The listener records its refusal after sending it: the initiator may read it first.
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert results == ["refused"]  # one try only: the listener still waits for a second


def test_a_target_busy_until_the_deadline_is_named():
    busy = framing.encode_error(handshake.BUSY)
    port, t, results = _listener([busy] * 200)
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="stayed busy"):
        _connect(port, 1.0)
    assert time.monotonic() - t0 < 5
    assert 2 <= len(results) < 200


def test_the_initiator_handshake_flags_busy_only_for_the_busy_text():
    for text, busy in ((handshake.BUSY, True), ("rejected: " + handshake.BUSY, False), ("busy", False)):
        ini = handshake.InitiatorHandshake(TOKEN, "i", 0, 1)
        ini.feed(framing.encode_error(text))
        assert ini.busy is busy and ini.error
