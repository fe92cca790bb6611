"""The store's file tier: a real file, O_DIRECT where the filesystem takes it, bytes round trip."""
from __future__ import annotations

import os

import numpy as np

from pytest_kvfabric.endpoint.store_file import FileTier


def test_objects_round_trip_through_an_unlinked_file(tmp_path):
    tier = FileTier(str(tmp_path), slots=3, obj_bytes=10_000, slot_bytes=12_288)
    try:
        data = [np.random.default_rng(i).integers(0, 256, 10_000, dtype=np.uint8) for i in range(3)]
        for slot, d in zip((2, 0, 1), data):
            tier.write(slot, d)
        out = np.zeros(10_000, np.uint8)
        for slot, d in zip((2, 0, 1), data):
            tier.read(slot, out)
            assert np.array_equal(out, d)
        s = tier.stats()
        assert s["read_bytes"] == s["write_bytes"] == 3 * 12_288
        assert os.fstat(tier.fd).st_size == 3 * 12_288
        assert not os.path.exists(tier.path)  # unlinked while open: a killed store leaves no file
        # ext4/xfs take O_DIRECT; tmpfs refuses it and the tier says so
        assert s["direct"] or s["path_kind"].startswith("buffered (O_DIRECT refused")
    finally:
        tier.close()
    assert list(tmp_path.iterdir()) == []


def test_buffered_on_request_says_so(tmp_path):
    tier = FileTier(str(tmp_path), slots=1, obj_bytes=4096, slot_bytes=4096, direct=False)
    try:
        assert not tier.direct and tier.stats()["path_kind"] == "buffered (O_DIRECT not asked for)"
    finally:
        tier.close()
