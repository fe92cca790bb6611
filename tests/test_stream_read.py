"""One-sided READ over the stream transports (tcp, zerocopy, iouring) on real loopback
sockets: the target is served from a thread of this process, the initiator pulls ranges of
its pattern-filled region, mixed with writes on the same connections."""
from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.errors import TransportError
from pytest_kvfabric.transports import framing, registry
from pytest_kvfabric.transports.base import READ_DTYPE
from pytest_kvfabric.transports.iouring import IoUringTransport
from pytest_kvfabric.transports.tcp import TcpTransport
from pytest_kvfabric.transports.zerocopy import ZeroCopyTransport

from stream_harness import ServedTarget, batch, connected, pattern, wait_all

KIB, MIB = 1 << 10, 1 << 20
STREAMS = [TcpTransport, ZeroCopyTransport, IoUringTransport]


def usable(transport):
    cap = transport.probe()
    if not cap.available:
        pytest.skip(f"{transport.name}: {cap.reason}")
    return transport


def conns(transport, n: int) -> int:
    """The iouring target takes one connection per initiator."""
    return 1 if transport is IoUringTransport else n


def reads(local, remote, nbytes, first_xfer: int = 0) -> np.ndarray:
    b = np.zeros(len(nbytes), READ_DTYPE)
    b["xfer"] = np.arange(first_xfer, first_xfer + len(nbytes))
    b["local_off"], b["remote_off"], b["nbytes"] = local, remote, nbytes
    return b


def served_store(transport, region_len: int, seed: int = 7, **opts) -> ServedTarget:
    """A target whose region holds a seeded pattern (a store holding pages), serving reads."""
    served = ServedTarget(transport, region_len, **opts)
    served.arr[:] = pattern(region_len, seed)
    return served.start()


def local_region(transport, n: int, fill: int = 0x5A):
    reg = transport.allocate(n, {})
    arr = np.frombuffer(reg, np.uint8)
    arr[:] = fill
    return reg, arr


@pytest.mark.parametrize("transport", STREAMS, ids=lambda t: t.name)
def test_probe_read_says_reads_are_served(transport):
    cap = transport.probe_read()
    assert cap.available and "READ" in cap.data_path


@pytest.mark.parametrize("transport, connections",
                         [(t, c) for t in STREAMS for c in ([1] if t is IoUringTransport else [1, 3])],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_random_reads_land_exactly(transport, connections):
    usable(transport)
    n = 6 * MIB
    served = served_store(transport, n, connections=connections)
    reg, loc = local_region(transport, n)
    rng = np.random.default_rng(connections)
    k = 60
    lens = rng.integers(0, 40 * KIB, k)
    lens[::7] = 0
    lens[0] = framing.MAX_READ_CHUNK + 12345  # split into two READ_DATA pieces
    remote = np.array([rng.integers(0, n - ln + 1) for ln in lens])
    # disjoint local slots, so every read can be checked after all completed
    local = np.concatenate([[0], np.cumsum(lens)[:-1]]) if lens.sum() <= n else None
    assert local is not None and local[-1] + lens[-1] <= n
    with connected(transport, served, reg, {"connections": connections}) as ini:
        ini.post_read(reads(local, remote, lens), 10.0)
        comps = wait_all(ini, k)
        assert ini.outstanding() == 0
        dp = ini.data_path()
    assert sorted(comps["xfer"].tolist()) == list(range(k))
    src = served.arr
    for lo, ro, ln in zip(local, remote, lens):
        assert np.array_equal(loc[lo : lo + ln], src[ro : ro + ln]), (lo, ro, ln)
    assert (loc[local[-1] + lens[-1] :] == 0x5A).all()  # nothing past the last slot touched
    assert dp["reads_posted"] == k and dp["bytes_read"] == int(lens.sum())
    tdp = served.target.data_path()
    assert tdp["reads_served"] == k and tdp["bytes_served"] == int(lens.sum())
    assert len(served.all_placed()) == 0  # reads place nothing on the target
    assert served.target.peers_closed()  # a read-only peer's BYE ends the run as a writer's does
    served.close()


@pytest.mark.parametrize("transport", STREAMS, ids=lambda t: t.name)
def test_reads_and_writes_mixed_on_one_connection_are_served_in_order(transport):
    usable(transport)
    """A READ sees every earlier WRITE of its connection and none of the later ones."""
    n = 256 * KIB
    served = served_store(transport, n)
    reg, loc = local_region(transport, n)
    loc[: 64 * KIB] = pattern(64 * KIB, 99)  # what we write
    before = served.arr.copy()
    with connected(transport, served, reg) as ini:
        # read [0, 4K) -> local 64K; write local [0,4K) -> remote [0,4K); read it back -> local 80K;
        # write local [4K, 8K) over remote [0, 4K); read again -> local 96K
        ini.post_read(reads([64 * KIB], [0], [4 * KIB], first_xfer=0), 5.0)
        ini.post(batch([0], [0], [4 * KIB], first_xfer=1), 5.0)
        ini.post_read(reads([80 * KIB], [0], [4 * KIB], first_xfer=2), 5.0)
        ini.post(batch([4 * KIB], [0], [4 * KIB], first_xfer=3), 5.0)
        ini.post_read(reads([96 * KIB], [0], [4 * KIB], first_xfer=4), 5.0)
        comps = wait_all(ini, 5)
    assert sorted(comps["xfer"].tolist()) == [0, 1, 2, 3, 4]
    assert np.array_equal(loc[64 * KIB : 68 * KIB], before[: 4 * KIB])
    assert np.array_equal(loc[80 * KIB : 84 * KIB], loc[: 4 * KIB])
    assert np.array_equal(loc[96 * KIB : 100 * KIB], loc[4 * KIB : 8 * KIB])
    placed = served.all_placed()
    assert placed["nbytes"].tolist() == [4 * KIB, 4 * KIB]
    served.close()


@pytest.mark.parametrize("transport", STREAMS, ids=lambda t: t.name)
def test_many_pipelined_reads_with_writes_in_between(transport):
    usable(transport)
    n = 8 * MIB
    served = served_store(transport, n, connections=conns(transport, 2))
    reg, loc = local_region(transport, n)
    rng = np.random.default_rng(3)
    with connected(transport, served, reg, {"connections": conns(transport, 2)}) as ini:
        xfer = 0
        expect = []
        for rnd in range(6):
            k = 40
            lens = rng.integers(1, 64 * KIB, k)
            local = (np.arange(k) * 64 * KIB) + rnd * k * 64 * KIB % (n // 2)
            remote = rng.integers(0, n // 2 - 64 * KIB, k)
            ini.post_read(reads(local, remote, lens, xfer), 10.0)
            expect += list(zip(local, remote, lens))
            xfer += k
            # writes into the remote's upper half (never read): no effect on the reads
            ini.post(batch([n - 4 * KIB], [n // 2 + rnd * 4 * KIB], [4 * KIB], first_xfer=xfer), 5.0)
            xfer += 1
            got = wait_all(ini, k + 1)
            assert len(got) == k + 1
            for lo, ro, ln in expect[-k:]:
                assert np.array_equal(loc[lo : lo + ln], served.arr[ro : ro + ln])
    served.close()


@pytest.mark.parametrize("transport", STREAMS, ids=lambda t: t.name)
def test_read_outside_the_target_region_is_a_clear_error_no_hang(transport):
    usable(transport)
    n = 64 * KIB
    served = served_store(transport, n)
    reg, _loc = local_region(transport, n)
    with pytest.raises(TransportError, match=rf"read \[{n - 10}, {n + 90}\) outside registered region of {n} bytes"):
        with connected(transport, served, reg, stop_wait_s=1.0) as ini:
            ini.post_read(reads([0], [n - 10], [100]), 5.0)
            wait_all(ini, 1, timeout_s=10.0)
    err = served.error
    assert err is not None and "outside registered region" in str(err)
    served.close()


@pytest.mark.parametrize("transport", STREAMS, ids=lambda t: t.name)
def test_read_into_outside_the_local_region_is_refused_before_posting(transport):
    usable(transport)
    n = 64 * KIB
    served = served_store(transport, n)
    reg, _loc = local_region(transport, n)
    with connected(transport, served, reg) as ini:
        with pytest.raises(TransportError, match=rf"read xfer 0 into \[{n - 1}, {n + 1}\) outside the local region"):
            ini.post_read(reads([n - 1], [0], [2]), 5.0)
        assert ini.outstanding() == 0
    served.close()


def test_registry_probe_read_of_every_transport_has_a_reason_or_a_path():
    for name in registry.available_names():
        cap = registry.get_transport(name).probe_read()
        assert (cap.available and cap.data_path) or (not cap.available and cap.reason), name


@pytest.mark.parametrize("ini_t, tgt_t", [(TcpTransport, IoUringTransport), (IoUringTransport, TcpTransport)],
                         ids=["tcp->iouring", "iouring->tcp"])
def test_reads_interoperate_between_tcp_and_iouring(ini_t, tgt_t):
    """One wire: a tcp initiator reads from an iouring target and the other way round."""
    usable(IoUringTransport)
    n = 1 * MIB
    served = served_store(tgt_t, n, seed=11)
    reg, loc = local_region(ini_t, n)
    lens = [1, 4096, 70000, 0, 300000]
    local = [0, 10, 5000, 80000, 90000]
    remote = [n - 1, 123, 7, 0, n - 300000]
    with connected(ini_t, served, reg) as ini:
        ini.post_read(reads(local, remote, lens), 5.0)
        assert sorted(wait_all(ini, len(lens))["xfer"].tolist()) == list(range(len(lens)))
    for lo, ro, ln in zip(local, remote, lens):
        assert np.array_equal(loc[lo : lo + ln], served.arr[ro : ro + ln])
    served.close()


@pytest.mark.parametrize("transport", STREAMS, ids=lambda t: t.name)
def test_reads_from_a_store_in_another_process(transport):
    """Two processes: a read-only target (tests/read_store_peer.py) holds pattern-filled pages;
    this process pulls random ranges and checks every byte against the same pattern."""
    import json
    import os
    import subprocess
    import sys

    usable(transport)
    n, seed, token = 4 * MIB, 21, "store-token"
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "read_store_peer.py"), transport.name,
                             str(n), str(seed), token, "--timeout", "60"],
                            stdout=subprocess.PIPE, text=True)
    try:
        desc = json.loads(proc.stdout.readline())
        expect = pattern(n, seed)
        reg, loc = local_region(transport, n)
        ini = transport.initiator(reg, {"token": token})
        rng = np.random.default_rng(seed)
        lens = rng.integers(1, 64 * KIB, 40)
        local = np.arange(40) * 64 * KIB
        remote = np.array([rng.integers(0, n - ln) for ln in lens])
        try:
            ini.connect(desc, 10.0)
            ini.post_read(reads(local, remote, lens), 10.0)
            assert len(wait_all(ini, 40)) == 40
        finally:
            ini.close()
        for lo, ro, ln in zip(local, remote, lens):
            assert np.array_equal(loc[lo : lo + ln], expect[ro : ro + ln]), (lo, ro, ln)
        out, _ = proc.communicate(timeout=30)
        report = json.loads(out.strip().splitlines()[-1])
        assert report["closed"] and proc.returncode == 0
        assert report["data_path"]["reads_served"] == 40
        assert report["data_path"]["bytes_served"] == int(lens.sum())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_devmem_says_exactly_why_it_serves_no_reads():
    from pytest_kvfabric.transports.devmem.transport import DevmemTarget, DevmemTransport

    cap = DevmemTransport.probe_read()
    assert not cap.available
    assert "devmem TCP receives into device memory" in cap.reason and "devmem TX" in cap.reason
    assert DevmemTarget.supports_reads is False  # its descriptor offers no reads; a READ frame is refused


@pytest.mark.parametrize("transport", STREAMS, ids=lambda t: t.name)
def test_a_big_read_then_a_write_over_the_same_range_sees_the_old_bytes(transport):
    """Back-pressure: a 24 MiB read fills the socket, so the target holds the connection's next
    frames (a 24 MiB WRITE over the very range being read) until the response is out: the
    read gets the old bytes, the write lands after, and neither side deadlocks."""
    usable(transport)
    big = 24 * MIB
    served = served_store(transport, big, seed=4)
    old = served.arr.copy()
    reg, loc = local_region(transport, 2 * big)
    loc[big:] = pattern(big, 5)
    with connected(transport, served, reg) as ini:
        ini.post_read(reads([0], [0], [big], first_xfer=0), 10.0)
        ini.post(batch([big], [0], [big], first_xfer=1), 30.0)
        assert sorted(wait_all(ini, 2)["xfer"].tolist()) == [0, 1]
    assert np.array_equal(loc[:big], old)
    assert np.array_equal(served.arr, loc[big:])
    served.close()


@pytest.mark.parametrize("transport", [TcpTransport, ZeroCopyTransport], ids=lambda t: t.name)
def test_notifies_still_released_when_reads_take_sequence_numbers(transport):
    """Reads share the write sequence: with 3 connections the target's notify ordering (a
    request is announced once every earlier write of its initiator is placed) must count the
    reads' positions as done, or a request behind a read would never be announced."""
    n = 1 * MIB
    served = served_store(transport, n, connections=3)
    reg, _loc = local_region(transport, n)
    with connected(transport, served, reg, {"connections": 3}) as ini:
        xfer = 0
        for r in range(5):
            ini.post_read(reads([r * 8192], [r * 4096], [4096], first_xfer=xfer), 5.0)
            xfer += 1
            ini.post(batch([n // 2 + r * 4096], [n // 2 + r * 4096], [4096], notify=[r], first_xfer=xfer), 5.0)
            xfer += 1
        assert len(wait_all(ini, xfer)) == xfer
    served.stop()
    assert sorted(served.all_notifies()["request"].tolist()) == [0, 1, 2, 3, 4]
    served.close()
