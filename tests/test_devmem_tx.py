"""devmem TX bookkeeping without a devmem NIC.

DevmemInitiator._send_some sends frame headers from host memory and each payload by its
offset in the bound TX dma-buf, one MSG_ZEROCOPY call per payload, and books a call id per
write so a write completes only when the kernel released it. That loop runs here for real,
over loopback TCP to a tcp target, with one substitution: sendmsg(SCM_DEVMEM_DMABUF), which
needs a NIC with a TX binding, becomes the MSG_ZEROCOPY send of the same bytes from the pool
mapping (what the NIC would read from the dma-buf). The probe and the binding themselves are
covered in test_devmem_probe.py / test_devmem_netlink.py; a real devmem run needs the NIC.
"""
from __future__ import annotations

import socket

import numpy as np
import pytest

from pytest_kvfabric.transports import zerocopy
from pytest_kvfabric.transports.base import anonymous_region
from pytest_kvfabric.transports.devmem import sockio
from pytest_kvfabric.transports.devmem.transport import DevmemTransport
from pytest_kvfabric.transports.tcp import TcpTransport

from stream_harness import SENTINEL, ServedTarget, batch, connected, pattern, wait_all

BINDING = 7
MIB = 1 << 20


@pytest.fixture
def devmem_sends(monkeypatch):
    """Replace the dma-buf send; returns the list of (offset, asked, accepted) per call."""
    calls: list[tuple[int, int, int]] = []
    state: dict[str, memoryview] = {}

    def fake_devmem_sendmsg(fd: int, offset: int, nbytes: int, binding_id: int,
                            flags: int = zerocopy.MSG_ZEROCOPY | 0x40) -> int:
        assert binding_id == BINDING
        region = state["region"]
        assert 0 <= offset and offset + nbytes <= len(region), "payload outside the TX dma-buf"
        sock = socket.socket(fileno=fd)
        try:
            sent = sock.sendmsg([region[offset:offset + nbytes]], [], flags)  # EAGAIN: BlockingIOError
        finally:
            sock.detach()
        calls.append((offset, nbytes, sent))
        return sent

    monkeypatch.setattr(sockio, "devmem_sendmsg", fake_devmem_sendmsg)
    return calls, state


def _bind_tx(ini, state) -> None:
    """What a successful bind-tx leaves behind (DevmemInitiator._bind_tx with a NIC)."""
    ini.tx_binding_id = BINDING
    ini.tx_reason = ""
    ini._base_addr = sockio.buffer_address(ini._mv)
    state["region"] = ini._mv


@pytest.mark.parametrize("writev", [False, True])
def test_devmem_tx_places_every_write_and_completes_it_once_released(devmem_sends, writev):
    calls, state = devmem_sends
    region_len = 8 * MIB
    # a small send buffer: large payloads go out in several partial calls, some hit EAGAIN
    served = ServedTarget(TcpTransport, region_len).start()
    src_region = anonymous_region(region_len)[0]
    src = np.frombuffer(src_region, np.uint8)
    src[:] = pattern(region_len, 3)
    sizes = [1 * MIB, 0, 4096, 65536, 0, 3 * MIB - 1, 100, 2 * MIB]
    src_offs = np.cumsum([0] + sizes[:-1]).tolist()
    dst_offs = [region_len - o - n for o, n in zip(src_offs, sizes)]  # reversed placement
    opts = {"sndbuf": 32768, "writev": writev}
    with connected(DevmemTransport, served, src_region, opts, close_target=True) as ini:
        _bind_tx(ini, state)
        ini.post(batch(src_offs, dst_offs, sizes, notify=[-1] * 7 + [4]), 30.0)
        comps = wait_all(ini, len(sizes))
        dp = ini.data_path()
        assert ini.outstanding() == 0
    assert sorted(comps["xfer"].tolist()) == list(range(len(sizes)))
    dst = served.arr
    for s, d, n in zip(src_offs, dst_offs, sizes):
        assert np.array_equal(dst[d:d + n], src[s:s + n]), f"write [{s}, +{n}) -> {d} differs"
    untouched = np.ones(region_len, bool)
    for d, n in zip(dst_offs, sizes):
        untouched[d:d + n] = False
    assert (dst[untouched] == SENTINEL).all()
    assert served.all_notifies()["request"].tolist() == [4]
    # every payload byte went through the dma-buf send, none from host memory, none twice
    assert sum(sent for _, _, sent in calls) == sum(sizes) == dp["devmem_tx_bytes"]
    assert len(calls) > len([n for n in sizes if n])  # partial sends happened
    assert dp["devmem_tx"] is True and dp["tx_binding_id"] == BINDING
    assert "devmem TCP TX from the pool dma-buf" in dp["description"]
    assert dp["send_calls"] == len(calls)  # one MSG_ZEROCOPY call id per payload send, headers none


def test_without_a_binding_the_initiator_sends_from_host_memory_and_says_why(devmem_sends):
    calls, _ = devmem_sends
    served = ServedTarget(TcpTransport, MIB).start()
    src_region = anonymous_region(MIB)[0]
    np.frombuffer(src_region, np.uint8)[:] = pattern(MIB, 4)
    with connected(DevmemTransport, served, src_region, {}, close_target=True) as ini:
        ini.post(batch([0], [0], [65536]), 30.0)
        wait_all(ini, 1)
        dp = ini.data_path()
    assert calls == [] and dp["devmem_tx"] is False and dp["devmem_tx_bytes"] == 0
    assert dp["description"].startswith("devmem RX only: TX from host memory")
    assert "not a dma-buf" in dp["tx_reason"]
