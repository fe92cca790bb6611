"""devmem control messages, token batching and RX reassembly (pure parts, no NIC needed)."""
from __future__ import annotations

import random
import socket
import struct

import pytest

from pytest_kvfabric.errors import ProtocolError
from pytest_kvfabric.transports import framing, handshake
from pytest_kvfabric.transports.devmem import cmsg, rx


# ---- pinned UAPI numbers -----------------------------------------------------------------

def test_uapi_numbers_pinned():
    # include/uapi/asm-generic/socket.h (Linux 6.12+): SO_DEVMEM_LINEAR 78, SO_DEVMEM_DMABUF 79,
    # SO_DEVMEM_DONTNEED 80, SCM_DEVMEM_* = SO_DEVMEM_*; include/linux/socket.h:
    # MSG_SOCK_DEVMEM 0x2000000.
    assert (cmsg.SCM_DEVMEM_LINEAR, cmsg.SCM_DEVMEM_DMABUF, cmsg.SO_DEVMEM_DONTNEED) == (78, 79, 80)
    assert cmsg.MSG_SOCK_DEVMEM == 0x2000000
    # include/uapi/linux/uio.h: struct dmabuf_cmsg {u64 frag_offset; u32 frag_size, frag_token,
    # dmabuf_id, flags;} = 24 bytes; struct dmabuf_token {u32 token_start, token_count;} = 8.
    assert cmsg.DMABUF_CMSG.size == 24 and cmsg.DMABUF_TOKEN.size == 8
    # Documentation/networking/devmem.rst: at most 128 tokens, 1024 frags per DONTNEED call.
    assert (cmsg.MAX_DONTNEED_TOKENS, cmsg.MAX_DONTNEED_FRAGS) == (128, 1024)


def test_cmsg_lengths_match_the_libc_macros():
    for n in (0, 4, 16, 24, 25):
        assert cmsg.cmsg_len(n) == socket.CMSG_LEN(n)
        assert cmsg.cmsg_space(n) == socket.CMSG_SPACE(n)


# ---- parsing -----------------------------------------------------------------------------

def _dmabuf(off: int, size: int, token: int, dmabuf_id: int = 7) -> bytes:
    return cmsg.encode_cmsg(socket.SOL_SOCKET, cmsg.SCM_DEVMEM_DMABUF,
                            cmsg.encode_dmabuf_cmsg(off, size, token, dmabuf_id))


def _linear(size: int) -> bytes:
    return cmsg.encode_cmsg(socket.SOL_SOCKET, cmsg.SCM_DEVMEM_LINEAR,
                            cmsg.encode_dmabuf_cmsg(0, size, 0, 0))


def test_parse_control_in_stream_order_skipping_other_cmsgs():
    other = cmsg.encode_cmsg(socket.SOL_SOCKET, 35, b"\x01" * 16)  # SCM_TIMESTAMPNS-like
    buf = _linear(66) + _dmabuf(4096, 4030, 11) + other + _dmabuf(8192, 4096, 12)
    frags = cmsg.parse_control(buf)
    assert frags == [
        cmsg.Frag(False, 0, 66),
        cmsg.Frag(True, 4096, 4030, 11, 7),
        cmsg.Frag(True, 8192, 4096, 12, 7),
    ]


def test_parse_control_large_offsets_and_ids():
    f = cmsg.parse_control(_dmabuf(2**40 + 5, 2**31, 2**32 - 1, 2**32 - 2))[0]
    assert (f.offset, f.size, f.token, f.dmabuf_id) == (2**40 + 5, 2**31, 2**32 - 1, 2**32 - 2)


@pytest.mark.parametrize(
    "buf, match",
    [
        (b"\x00" * 10, "truncated cmsg header at offset 0"),
        (struct.pack("=Qii", 8, socket.SOL_SOCKET, 79), "cmsg_len 8 < header size"),
        (struct.pack("=Qii", 64, socket.SOL_SOCKET, 79) + b"\0" * 24, "cmsg_len 64 but only 40"),
        (cmsg.encode_cmsg(socket.SOL_SOCKET, 79, b"\0" * 20), "truncated SCM_DEVMEM_DMABUF cmsg: 20 of 24"),
        (cmsg.encode_cmsg(socket.SOL_SOCKET, 78, b"\0" * 8), "truncated SCM_DEVMEM_LINEAR cmsg: 8 of 24"),
        (_dmabuf(0, 0, 1), "frag_size 0"),
    ],
)
def test_parse_control_malformed(buf, match):
    with pytest.raises(ProtocolError, match=match):
        cmsg.parse_control(buf)


def test_parse_control_second_cmsg_truncated_names_its_offset():
    good = _dmabuf(0, 100, 1)
    with pytest.raises(ProtocolError, match=f"offset {len(good)}"):
        cmsg.parse_control(good + _dmabuf(0, 100, 2)[:30])


def test_parse_ancdata_python_recvmsg_shape():
    anc = [
        (socket.SOL_SOCKET, cmsg.SCM_DEVMEM_DMABUF, cmsg.encode_dmabuf_cmsg(0, 10, 3, 1)),
        (socket.IPPROTO_IP, 1, b"x"),
        (socket.SOL_SOCKET, cmsg.SCM_DEVMEM_LINEAR, cmsg.encode_dmabuf_cmsg(0, 5, 0, 0)),
    ]
    assert [(f.device, f.size) for f in cmsg.parse_ancdata(anc)] == [(True, 10), (False, 5)]
    with pytest.raises(ProtocolError, match="MSG_CTRUNC"):
        cmsg.parse_ancdata(anc, socket.MSG_CTRUNC)
    with pytest.raises(ProtocolError, match="truncated SCM_DEVMEM_DMABUF"):
        cmsg.parse_ancdata([(socket.SOL_SOCKET, cmsg.SCM_DEVMEM_DMABUF, b"\0" * 23)])


# ---- tokens ------------------------------------------------------------------------------

def test_coalesce_tokens():
    assert cmsg.coalesce_tokens([5, 6, 7, 9, 10, 3]) == [(5, 3), (9, 2), (3, 1)]
    assert cmsg.coalesce_tokens([]) == []


def test_batch_tokens_caps_runs_and_entries():
    calls = cmsg.batch_tokens(list(range(2000)))
    assert calls == [[(0, 1024)], [(1024, 976)]]
    scattered = list(range(0, 400, 2))  # 200 runs of 1
    calls = cmsg.batch_tokens(scattered)
    assert [len(c) for c in calls] == [128, 72]


def test_batch_tokens_random_inputs_respect_limits_and_cover_every_token():
    rng = random.Random(7)
    for _ in range(200):
        tokens = []
        t = rng.randrange(1000)
        for _ in range(rng.randrange(1, 400)):
            t += 1 if rng.random() < 0.7 else rng.randrange(2, 50)
            tokens.append(t)
        max_tokens, max_frags = rng.choice([(128, 1024), (3, 10), (1, 1), (16, 64)])
        calls = cmsg.batch_tokens(tokens, max_tokens, max_frags)
        for call in calls:
            assert 1 <= len(call) <= max_tokens
            assert sum(n for _, n in call) <= max_frags
        flat = [s + i for call in calls for s, n in call for i in range(n)]
        assert flat == tokens


def test_encode_tokens_is_struct_dmabuf_token_array():
    raw = cmsg.encode_tokens([(5, 3), (100, 1)])
    assert raw == struct.pack("=IIII", 5, 3, 100, 1)
    assert cmsg.decode_tokens(raw) == [(5, 3), (100, 1)]
    with pytest.raises(ProtocolError, match="not a multiple of 8"):
        cmsg.decode_tokens(raw[:-1])
    with pytest.raises(ValueError):
        cmsg.batch_tokens([1], max_tokens=0)


# ---- TX ----------------------------------------------------------------------------------

def test_tx_cmsg_carries_binding_id_as_u32():
    assert cmsg.encode_tx_cmsg(9) == (socket.SOL_SOCKET, 79, struct.pack("=I", 9))
    raw = cmsg.encode_cmsg(*cmsg.encode_tx_cmsg(9))
    assert len(raw) == socket.CMSG_SPACE(4)


def test_zerocopy_completion():
    data = cmsg.SOCK_EXTENDED_ERR.pack(0, 5, 0, 1, 0, 3, 9)
    assert cmsg.parse_zerocopy_completion(data) == cmsg.ZcCompletion(3, 9, True)
    assert cmsg.parse_zerocopy_completion(cmsg.SOCK_EXTENDED_ERR.pack(0, 2, 0, 0, 0, 0, 0)) is None
    with pytest.raises(ProtocolError, match="truncated sock_extended_err"):
        cmsg.parse_zerocopy_completion(b"\0" * 8)


# ---- RX reassembly -----------------------------------------------------------------------

NONCE = bytes(range(framing.NONCE_BYTES))
HELLO = handshake.encode_hello("t", NONCE, "ini", 0, 1)


def _asm(region_nbytes: int) -> rx.StreamAssembler:
    return rx.StreamAssembler(region_nbytes, handshake.TargetHandshake("t", NONCE))


def _stream(writes):
    out = HELLO
    for seq, (dst, payload, notify) in enumerate(writes, 1):
        out += framing.encode_write(dst, len(payload), seq, notify) + payload
    return out + framing.encode_bye()


def _feed_fragmented(data: bytes, region_nbytes: int, rng: random.Random):
    asm = _asm(region_nbytes)
    region = bytearray(region_nbytes)
    events = []
    pos = 0
    while pos < len(data):
        n = rng.randrange(1, 200)
        for ev in asm.feed(memoryview(data)[pos : pos + n], rng.random() < 0.5):
            if isinstance(ev, rx.Place):
                region[ev.dst_off : ev.dst_off + len(ev.data)] = ev.data
            events.append(ev)
        pos += n
    return asm, region, events


def test_assembler_places_every_byte_whatever_the_fragmentation():
    rng = random.Random(1)
    writes = [(100, bytes(range(256)) * 3, -1), (2000, b"\xaa" * 1000, 4), (0, b"", 5), (50, b"z" * 40, -1)]
    data = _stream(writes)
    for _ in range(50):
        asm, region, events = _feed_fragmented(data, 4096, rng)
        for dst, payload, _ in writes:
            assert region[dst : dst + len(payload)] == payload
        done = [e.header for e in events if isinstance(e, rx.WriteDone)]
        assert [h.seq for h in done] == [1, 2, 3, 4]
        assert [h.notify_request for h in done] == [None, 4, 5, None]
        assert isinstance(events[0], rx.Hello) and events[0].hello.initiator == "ini"
        assert isinstance(events[-1], rx.Bye) and asm.closed and not asm.mid_frame
        firsts = [e for e in events if isinstance(e, rx.Place) and e.first]
        assert [(e.dst_off, e.write_nbytes) for e in firsts] == [(100, 768), (2000, 1000), (50, 40)]


@pytest.mark.parametrize(
    "data, match",
    [
        (framing.encode_write(0, 4, 1) + b"abcd", "expected HELLO, got WRITE"),
        (handshake.encode_hello("wrong", NONCE, "ini", 0, 1), "wrong proof"),
        (HELLO + framing.encode_write(4090, 10, 1), "outside registered region"),
        (HELLO + framing.encode_write(0, 1, 2), "out of sequence"),
        (HELLO + framing.encode_ack(1), "unexpected ACK"),
        (HELLO + handshake.encode_challenge(NONCE), "unexpected CHALLENGE"),
        (HELLO + framing.encode_writev(1, [0], [4], [0]) + b"abcd", "unexpected WRITEV"),
        (HELLO + HELLO, "second HELLO"),
        (HELLO + framing.encode_bye() + b"x", "after BYE"),
        (b"XX" + b"\0" * 30, "bad frame magic"),
    ],
)
def test_assembler_rejects_before_placing(data, match):
    asm = _asm(4096)
    with pytest.raises(ProtocolError, match=match):
        for ev in asm.feed(memoryview(data), True):
            assert not isinstance(ev, rx.Place) or match != "outside registered region"


def test_assembler_reports_peer_error_and_mid_frame():
    asm = _asm(4096)
    evs = list(asm.feed(memoryview(HELLO + framing.encode_error("boom")), False))
    assert evs[1:] == [rx.PeerError("boom")]
    asm = _asm(4096)
    list(asm.feed(memoryview(HELLO[:10]), True))
    assert asm.mid_frame  # inside the HELLO
    asm = _asm(4096)
    list(asm.feed(memoryview(HELLO + framing.encode_write(0, 10, 1) + b"abc"), True))
    assert asm.mid_frame


# ---- the real kernel: SO_DEVMEM_DONTNEED encoding and limits -----------------------------

def test_real_kernel_accepts_our_dontneed_encoding_and_enforces_the_token_cap():
    from pytest_kvfabric.transports.devmem import sockio

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    with ls, socket.create_connection(ls.getsockname(), timeout=5) as c:
        s, _ = ls.accept()
        with s:
            # no devmem frags on this socket: the kernel parses the tokens and frees none
            assert sockio.dontneed(s.fileno(), [(5, 3), (100, 1)]) == 0
            calls = cmsg.batch_tokens(list(range(0, 600, 2)))  # 300 runs -> 128 + 128 + 44
            assert [sockio.dontneed(s.fileno(), call) for call in calls] == [0, 0, 0]
            with pytest.raises(OSError) as info:
                sockio.dontneed(s.fileno(), [(i * 2, 1) for i in range(cmsg.MAX_DONTNEED_TOKENS + 1)])
            assert info.value.errno == 22  # EINVAL: more than 128 tokens in one call
            # recvmsg(MSG_SOCK_DEVMEM) of regular (host) skbs: data, no devmem cmsgs
            c.sendall(b"kv" * 10)
            s.settimeout(5)
            data, anc, flags, _ = s.recvmsg(100, 4096, cmsg.MSG_SOCK_DEVMEM)
            assert data == b"kv" * 10 and cmsg.parse_ancdata(anc, flags) == []
