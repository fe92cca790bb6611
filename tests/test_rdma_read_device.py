"""RDMA READ on a real RDMA device (soft-RoCE rxe0 in the lab VM: `kvfabric lab run -- python
-m pytest -q tests/test_rdma_read_device.py`). Without a device it skips with the probe's
exact reason; the double in test_rdma_transport.py covers the logic everywhere."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pytest_kvfabric.transports.base import READ_DTYPE, XFER_DTYPE
from pytest_kvfabric.transports.rdma.transport import RdmaTransport

OPTS = {"token": "lab-read", "data_addr": "127.0.0.1"}


def _wait(init, n: int, timeout_s: float = 120.0) -> list[int]:
    done: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(done) < n:
        assert time.monotonic() < deadline, f"{len(done)} of {n} completions in {timeout_s} s"
        done += init.poll(0.5)["xfer"].tolist()
    return done


def test_rdma_reads_on_the_device_land_exactly():
    cap = RdmaTransport.probe_read(OPTS)
    if not cap.available:
        pytest.skip(cap.reason)
    n = 4 << 20
    src, dst = RdmaTransport.allocate(n, OPTS), RdmaTransport.allocate(n, OPTS)
    target = RdmaTransport.target(dst, OPTS)
    desc = target.listen("127.0.0.1", 60.0)
    init = RdmaTransport.initiator(src, OPTS)
    try:
        init.connect(desc, 60.0)
        remote = np.frombuffer(dst, np.uint8)
        remote[:] = np.random.default_rng(5).integers(0, 256, n, dtype=np.uint8)
        local = np.frombuffer(src, np.uint8)
        local[:] = 0x5A
        rng = np.random.default_rng(6)
        k = 32
        lens = rng.integers(1, 8 << 10, k)
        lens[0] = 3 << 20  # longer than one message on some devices (split into several WRs)
        loff = (3 << 20) + np.arange(k) * (8 << 10)  # disjoint local slots after the long one
        loff[0] = 0
        roff = np.array([rng.integers(0, n - ln) for ln in lens])
        b = np.zeros(k, READ_DTYPE)
        b["xfer"], b["local_off"], b["remote_off"], b["nbytes"] = np.arange(k), loff, roff, lens
        init.post_read(b, 30.0)
        # a write after the reads, into a range no read touches
        w = np.zeros(1, XFER_DTYPE)
        w[0] = (k, n - 4096, n - 4096, 4096, -1)
        init.post(w, 30.0)
        done = _wait(init, k + 1)
        assert sorted(done) == list(range(k + 1)) and init.outstanding() == 0
        for lo, ro, ln in zip(loff, roff, lens):
            assert np.array_equal(local[lo : lo + ln], remote[ro : ro + ln]), (lo, ro, ln)
        assert np.array_equal(remote[n - 4096 :], local[n - 4096 :])
        assert init.data_path()["reads_posted"] == k
    finally:
        init.close()
        target.close()
