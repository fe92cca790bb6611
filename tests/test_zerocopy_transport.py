"""zerocopy transport: the pure error-queue parser, and real MSG_ZEROCOPY sends on 127.0.0.1."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from pytest_kvfabric.errors import ProtocolError
from pytest_kvfabric.transports import framing, registry
from pytest_kvfabric.transports.zerocopy import (
    IP_RECVERR, IPV6_RECVERR, SO_EE_ORIGIN_ZEROCOPY, SOL_IP, SOL_IPV6, ZcNotification,
    ZeroCopyTransport, _data_path, _ZcState, parse_errqueue, parse_zerocopy_cmsg,
)

from stream_harness import SENTINEL, RawPeer, listening_target, progress_until_error, round_trip

T = ZeroCopyTransport
MIB = 1 << 20


def ee(errno_=0, origin=SO_EE_ORIGIN_ZEROCOPY, code=0, info=0, data=0, tail=b"") -> bytes:
    return struct.pack("=IBBBBII", errno_, origin, 0, code, 0, info, data) + tail


# --- pure parsing -----------------------------------------------------------------------------


def test_parse_zerocopy_range_and_copied_flag():
    assert parse_zerocopy_cmsg(SOL_IP, IP_RECVERR, ee(info=3, data=9)) == ZcNotification(3, 9, False)
    n = parse_zerocopy_cmsg(SOL_IPV6, IPV6_RECVERR, ee(code=1, info=0, data=0, tail=b"\0" * 28))
    assert n == ZcNotification(0, 0, True) and n.calls == 1
    assert ZcNotification(3, 9, False).calls == 7
    assert ZcNotification(0xFFFFFFFE, 1, False).calls == 4  # the u32 counter wrapped


def test_parse_ignores_other_cmsgs():
    assert parse_zerocopy_cmsg(1, 29, b"\0" * 16) is None  # SOL_SOCKET / SO_TIMESTAMPING
    assert parse_errqueue([]) == []
    assert parse_errqueue([(1, 29, b"x"), (SOL_IP, IP_RECVERR, ee(info=1, data=2))]) == [
        ZcNotification(1, 2, False)
    ]


@pytest.mark.parametrize("n", range(0, 16))
def test_parse_truncated(n: int):
    with pytest.raises(ValueError, match=f"truncated sock_extended_err: {n} of 16 bytes"):
        parse_zerocopy_cmsg(SOL_IP, IP_RECVERR, ee(info=1, data=2)[:n])


def test_parse_rejects_real_errors():
    with pytest.raises(ValueError, match="non-zerocopy error: ee_origin 2, ee_errno 111"):
        parse_zerocopy_cmsg(SOL_IP, IP_RECVERR, ee(errno_=111, origin=2))  # ICMP origin
    with pytest.raises(ValueError, match="ee_errno 5"):
        parse_zerocopy_cmsg(SOL_IP, IP_RECVERR, ee(errno_=5))


def test_parse_garbage_never_crashes_otherwise():
    rng = np.random.default_rng(0)
    for _ in range(500):
        data = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        try:
            out = parse_zerocopy_cmsg(SOL_IP, IP_RECVERR, data)
        except ValueError:
            continue
        assert isinstance(out, ZcNotification) and 0 <= out.first < 2**32


def test_release_tracks_contiguous_prefix():
    st = _ZcState()
    st.release(2, 3)  # out of order: nothing below 2 released yet
    assert st.done == 0
    st.release(0, 0)
    assert st.done == 1
    st.release(1, 1)
    assert st.done == 4  # 1 joins 2..3
    st.release(4, 10)
    assert st.done == 11


def test_data_path_description():
    d = _data_path(zc=1, copied=3)
    assert d["copied_fraction"] == 0.75 and d["zero_copy"] is False
    assert "kernel copied 75% of MSG_ZEROCOPY sends (loopback and veth always copy)" in d["description"]
    d = _data_path(zc=5, copied=0)
    assert d["zero_copy"] is True and d["copied_fraction"] == 0.0 and "copied" not in d["description"]
    assert _data_path(0, 0)["zero_copy"] is None


# --- the real thing on loopback ----------------------------------------------------------------


def test_probe():
    cap = registry.probe("zerocopy")
    assert cap.available, cap.reason
    assert cap.details["optmem_max"] == int(open("/proc/sys/net/core/optmem_max").read())
    assert "loopback and veth" in cap.data_path


def test_probe_requiring_zero_copy_on_loopback_is_missing():
    cap = registry.probe("zerocopy", {"require_zero_copy": True, "host": "127.0.0.1"})
    assert not cap.available
    assert "kernel copies every MSG_ZEROCOPY send on loopback and veth" in cap.reason
    assert registry.probe("zerocopy", {"require_zero_copy": True, "host": "10.1.2.3"}).available
    assert registry.probe("zerocopy", {"host": "127.0.0.1"}).available


@pytest.mark.parametrize("nbytes", [1, 4096 + 3, MIB, 64 * MIB])
def test_round_trip_sizes_and_loopback_copies(nbytes: int):
    served, src, comps, dp, _ = round_trip(T, [nbytes], [7], [1], nbytes + 8)
    assert comps["xfer"].tolist() == [0]
    assert np.array_equal(served.arr[1 : 1 + nbytes], src[7 : 7 + nbytes])
    assert served.arr[0] == SENTINEL and (served.arr[1 + nbytes :] == SENTINEL).all()
    # every MSG_ZEROCOPY send call was accounted for before the write completed
    assert dp["send_calls"] >= 1
    assert dp["zc_completions"] + dp["copied_completions"] == dp["send_calls"]
    # the kernel always copies on loopback; the transport must say so
    assert dp["zero_copy"] is False and dp["copied_fraction"] == 1.0
    assert "kernel copied 100% of MSG_ZEROCOPY sends (loopback and veth always copy)" in dp["description"]
    served.close()


@pytest.mark.parametrize("connections", [1, 3])
def test_batch_of_1024_with_notifies(connections: int):
    n = 1024
    rng = np.random.default_rng(connections)
    lens = rng.integers(1, 5000, n)
    dst = np.concatenate([[0], np.cumsum(lens[:-1])]) + 3
    region_len = int(dst[-1] + lens[-1] + 3)
    src = rng.permutation(region_len - 5000)[:n]
    notify = np.full(n, -1)
    notify[127::128] = np.arange(8)
    served, srcarr, comps, dp, _ = round_trip(
        T, lens, src, dst, region_len, connections=connections, notify=notify
    )
    assert sorted(comps["xfer"].tolist()) == list(range(n))
    expect = np.full(region_len, SENTINEL, np.uint8)
    for s, d, ln in zip(src.tolist(), dst.tolist(), lens.tolist()):
        expect[d : d + ln] = srcarr[s : s + ln]
    assert np.array_equal(served.arr, expect)
    assert served.all_notifies()["request"].tolist() == list(range(8))
    assert dp["connections"] == connections
    assert dp["zc_completions"] + dp["copied_completions"] == dp["send_calls"]
    served.close()


def test_completion_waits_for_kernel_release():
    """A completion must imply the notification covering its last send call arrived."""
    from stream_harness import ServedTarget, batch, connected, wait_all

    served = ServedTarget(T, 8 * MIB).start()
    region = T.allocate(8 * MIB, {})
    with connected(T, served, region, close_target=True) as ini:
        for k in range(20):
            ini.post(batch([k * 4096], [k * 4096], [MIB // 2], first_xfer=k), 5)
            wait_all(ini, 1, 10)
            for c in ini._conns:  # white box: released prefix covers every completed write
                st = ini._state(c)
                assert st.done >= c.calls[c.done - c.xbase - 1] + 1


def test_malformed_frame_rejected():
    with listening_target(T, 1024) as (tgt, desc, arr):
        peer = RawPeer(desc).hello()
        try:
            peer.send(framing.encode_write(1000, 100, 1) + b"x" * 100)
            exc, _ = progress_until_error(tgt)
            assert isinstance(exc, ProtocolError) and "outside registered region of 1024" in str(exc)
            assert (arr == SENTINEL).all()
        finally:
            peer.close()
