"""The rdma side connection's acceptor over real sockets (strangers first, floods, oversized
and deeply nested HELLOs, silence), and parse_hello against generated input."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric.errors import ProtocolError
from pytest_kvfabric.transports.rdma import side

GID = "0000:0000:0000:0000:0000:ffff:7f00:0001"


def hello(token="t0k", **kw):
    return {"token": token, "qpns": [17, 18], "psns": [1, 2], "gid": GID, "lid": 0, "active_mtu": 4096, **kw}


@pytest.fixture
def listener():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    yield ls
    ls.close()


def start(listener, **kw):
    stop = threading.Event()
    deadline_s = kw.pop("deadline_s", 10.0)
    acc = side.Acceptor(listener, "t0k", 2, stop, **kw)
    out = {}

    def go():
        try:
            out["won"] = acc.accept(time.monotonic() + deadline_s)
        except Exception as exc:  # the test inspects it
            out["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return acc, out, t, stop


def connect(listener, payload=None, kind=b"J"):
    s = socket.create_connection(listener.getsockname(), timeout=5)
    if payload is not None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        s.sendall(side.FRAME.pack(kind, len(body)) + body)
    return s


def answer(s):
    kind, body = side.recv_frame(s)
    return json.loads(body)


def test_strangers_first_do_not_lock_out_the_token_holder(listener):
    acc, out, t, stop = start(listener)
    strangers = [connect(listener, hello(token=f"guess{i}")) for i in range(5)]
    silent = [connect(listener) for _ in range(3)]  # connected, never speak
    deep = connect(listener, b'{"a":' * 10000 + b"1" + b"}" * 10000)  # killed the old side thread
    replies = [answer(s) for s in strangers]
    assert all(r == {"error": "bad token"} for r in replies)
    assert "nests deeper" in answer(deep)["error"]
    real = connect(listener, hello())
    t.join(5)
    conn, h = out["won"]
    try:
        assert h["qpns"] == [17, 18] and h["gid"] == GID and acc.refused == 6
        assert conn.getpeername() == real.getsockname()
    finally:
        conn.close()
        for s in strangers + silent + [deep, real]:
            s.close()


def test_oversized_hello_is_refused_without_reading_it(listener):
    acc, out, t, stop = start(listener)
    s = socket.create_connection(listener.getsockname(), timeout=5)
    s.sendall(side.FRAME.pack(b"J", 1 << 30))
    assert "exceeds 65536" in answer(s)["error"]
    s.close()
    c = connect(listener, hello())
    t.join(5)
    out["won"][0].close()
    c.close()


def test_deadline_names_every_refusal(listener):
    acc, out, t, stop = start(listener, hello_timeout_s=0.3, deadline_s=1.5)
    a = connect(listener, hello(token="nope"))
    b = connect(listener, {"token": "t0k", "qpns": [1], "psns": [1], "gid": GID})
    c = connect(listener, b"x", kind=b"R")
    d = connect(listener)  # silent
    t.join(5)
    err = str(out["error"])
    assert "no initiator with the run's token" in err and "4 refused" in err
    assert "bad token" in err and "qpns: expected a list of 2" in err and "not a JSON HELLO" in err
    assert "no HELLO within" in err
    for s in (a, b, c, d):
        s.close()


def test_stop_ends_the_acceptor(listener):
    acc, out, t, stop = start(listener)
    stop.set()
    t.join(5)
    assert not t.is_alive() and out == {"won": None}


def test_flood_beyond_max_pending_evicts_the_oldest_silent(listener, monkeypatch):
    monkeypatch.setattr(side, "MAX_PENDING", 4)
    acc, out, t, stop = start(listener)
    silent = [connect(listener) for _ in range(8)]
    real = connect(listener, hello())
    t.join(5)
    conn, _ = out["won"]
    assert acc.refused >= 4 and any("more than 4 connections" in r for r in acc.refusals)
    conn.close()
    for s in silent + [real]:
        s.close()


@pytest.mark.parametrize("payload, msg", [
    (b"\xff", "not UTF-8"), (b"[1]", "not a JSON object"), (b"{", "not JSON"),
    (json.dumps(hello(qpns=[0, 1])).encode(), "qpns: expected an integer in \\[1,"),
    (json.dumps(hello(psns=[1, 1 << 24])).encode(), "psns"),
    (json.dumps(hello(psns=[True, 1])).encode(), "psns"),
    (json.dumps(hello(gid="nope")).encode(), "gid: not a GID"),
    (json.dumps(hello(active_mtu=9000)).encode(), "active_mtu"),
    (json.dumps(hello(lid=-1)).encode(), "lid"),
    (json.dumps({k: v for k, v in hello().items() if k != "token"}).encode(), "no token"),
])
def test_parse_hello_names_the_field(payload, msg):
    with pytest.raises(ProtocolError, match=msg):
        side.parse_hello(payload, 2)


def test_parse_hello_normalises_the_gid():
    assert side.parse_hello(json.dumps(hello(gid="::ffff:127.0.0.1")).encode(), 2)["gid"] == GID


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"token": st.text(max_size=8), "qpns": json_values, "psns": json_values,
                                        "gid": json_values, "lid": json_values, "active_mtu": json_values})
                 .map(lambda v: json.dumps(v).encode())))
def test_parse_hello_accepts_or_raises_protocol_error_only(payload):
    try:
        h = side.parse_hello(payload, 2)
    except ProtocolError:
        return
    assert isinstance(h["token"], str) and len(h["qpns"]) == 2 and len(h["psns"]) == 2


@given(json_values)
def test_json_depth_matches_the_structure(v):
    def depth(x):
        if isinstance(x, list):
            return 1 + max(map(depth, x), default=0)
        if isinstance(x, dict):
            return 1 + max(map(depth, x.values()), default=0)
        return 0

    # the side connection uses the stream HELLO's depth scan (framing.json_depth_exceeds)
    from pytest_kvfabric.transports.framing import json_depth_exceeds

    text = json.dumps(v)
    assert not json_depth_exceeds(text, depth(v)) and (depth(v) == 0 or json_depth_exceeds(text, depth(v) - 1))
