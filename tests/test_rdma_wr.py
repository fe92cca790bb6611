"""Work-request lists from XFER_DTYPE batches, and what completions/immediates prove."""
from __future__ import annotations

import numpy as np
import pytest

from pytest_kvfabric.errors import ProtocolError
from pytest_kvfabric.transports.base import XFER_DTYPE
from pytest_kvfabric.transports.rdma.placement import (
    PlacementTracker, SendTracker, records_for)
from pytest_kvfabric.transports.rdma.wr import WrState, build_wrs

BASE = 0x7F00_0000_0000
RKEY = 0x1234


def batch(nbytes, notify, src0=0, dst0=1 << 20):
    b = np.zeros(len(nbytes), XFER_DTYPE)
    b["xfer"] = np.arange(len(nbytes)) + 100
    b["nbytes"] = nbytes
    b["src_off"] = src0 + np.r_[0, np.cumsum(nbytes)[:-1]]
    b["dst_off"] = dst0 + np.r_[0, np.cumsum(nbytes)[:-1]]
    b["notify"] = notify
    return b


def test_one_write_per_transfer_with_offsets_and_rkey():
    b = batch([4096, 8192, 100], [-1, -1, 7])
    w = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState())
    d = w.descs
    assert list(d["xfer"]) == [100, 101, 102]
    assert list(d["local_off"]) == list(b["src_off"])
    assert list(d["remote_addr"]) == [BASE + int(x) for x in b["dst_off"]]
    assert list(d["nbytes"]) == [4096, 8192, 100]
    assert set(d["rkey"]) == {RKEY}
    assert list(d["wr_id"]) == [1, 2, 3]


def test_immediate_only_on_the_last_write_of_each_request():
    b = batch([10] * 6, [-1, 3, -1, -1, 9, -1])
    d = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState()).descs
    assert list(d["with_imm"]) == [False, True, False, False, True, False]
    assert list(d["imm_data"]) == [0, 3, 0, 0, 9, 0]
    assert list(d["notify"]) == [-1, 3, -1, -1, 9, -1]


def test_request_ids_above_32_bits_travel_as_low_bits():
    b = batch([10], [(1 << 32) + 5])
    d = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState()).descs
    assert int(d["imm_data"][0]) == 5 and int(d["notify"][0]) == (1 << 32) + 5


def test_split_at_max_message_size_and_imm_on_last_fragment():
    b = batch([250, 100], [4, -1])
    d = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState(), max_msg_nbytes=100).descs
    assert list(d["xfer"]) == [100, 100, 100, 101]
    assert list(d["nbytes"]) == [100, 100, 50, 100]
    assert list(d["local_off"]) == [0, 100, 200, 250]
    assert list(d["remote_addr"] - BASE) == [(1 << 20) + x for x in (0, 100, 200, 250)]
    assert list(d["with_imm"]) == [False, False, True, False]
    assert list(d["last_fragment"]) == [False, False, True, True]


def test_signal_every_n_and_always_the_last():
    b = batch([8] * 10, [-1] * 9 + [1])
    d = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState(), signal_every=4).descs
    assert list(np.flatnonzero(d["signaled"])) == [3, 7, 9]


def test_chains_at_most_max_chain_per_qp():
    b = batch([8] * 10, [-1] * 9 + [1])
    w = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState(), max_chain=4)
    assert list(w.chain_starts) == [0, 4, 8]
    assert [len(c) for c in w.chains()] == [4, 4, 2]
    assert list(w.chain_qp) == [0, 0, 0]


def test_segments_rotate_over_qps_and_open_segment_sticks():
    state = WrState()
    # segments: [0,1] ends with notify, [2] ends with notify, [3,4] left open
    b = batch([8] * 5, [-1, 1, 2, -1, -1])
    w = build_wrs(b, remote_base=BASE, rkey=RKEY, state=state, qps=3, max_chain=8)
    qp_of = dict(zip(w.descs["xfer"].tolist(), w.descs["qp"].tolist()))
    assert [qp_of[x] for x in range(100, 105)] == [0, 0, 1, 2, 2]
    assert state.open_qp == 2
    assert list(w.chain_qp) == [0, 1, 2]
    # every QP's last WR in the batch is signalled, so nothing waits for a later batch
    for q in range(3):
        assert w.descs["signaled"][w.descs["qp"] == q][-1]
    # the open segment continues on QP 2, then rotation resumes
    w2 = build_wrs(batch([8, 8], [3, 4]), remote_base=BASE, rkey=RKEY, state=state, qps=3)
    by_xfer = {int(d["xfer"]): (int(d["qp"]), int(d["wr_id"])) for d in w2.descs}
    assert by_xfer == {100: (2, 6), 101: (0, 7)}  # wr_id keeps batch order across QPs
    assert state.open_qp is None and state.next_qp == 1


def test_empty_batch_and_bad_dtype():
    w = build_wrs(np.zeros(0, XFER_DTYPE), remote_base=BASE, rkey=RKEY, state=WrState())
    assert len(w.descs) == 0 and w.chains() == []
    with pytest.raises(TypeError):
        build_wrs(np.zeros(1, np.uint64), remote_base=BASE, rkey=RKEY, state=WrState())


def test_records_cover_whole_transfers():
    b = batch([250, 100], [4, -1])
    w = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState(), max_msg_nbytes=100)
    rec = records_for(w.descs, BASE)
    assert list(rec["xfer"]) == [100, 101]
    assert list(rec["dst_off"]) == list(b["dst_off"]) and list(rec["nbytes"]) == [250, 100]
    assert list(rec["wr_id"]) == [3, 4] and list(rec["notify"]) == [4, -1]


def test_send_tracker_selective_signalling():
    b = batch([8] * 5, [-1] * 4 + [1])
    w = build_wrs(b, remote_base=BASE, rkey=RKEY, state=WrState(), signal_every=2)
    t = SendTracker(1)
    t.posted(w.descs)
    assert t.outstanding() == 5 and t.outstanding_wrs(0) == 5
    done = t.completed(0, 2, 123)  # the signalled WR 2 completes WRs 1 and 2
    assert list(done["xfer"]) == [100, 101] and set(done["t_ns"]) == {123}
    assert t.outstanding() == 3
    assert list(t.completed(0, 5, 124)["xfer"]) == [102, 103, 104]
    assert t.outstanding() == 0 and t.outstanding_wrs(0) == 0


def test_placement_needs_the_immediate_and_waits_for_other_qps():
    state = WrState()
    b = batch([8] * 5, [-1, 1, 2, -1, -1])
    w = build_wrs(b, remote_base=BASE, rkey=RKEY, state=state, qps=3)
    t = PlacementTracker(3, region_nbytes=2 << 20)
    t.add_records(records_for(w.descs, BASE))
    placed, notes = t.drain(1)
    assert len(placed) == 0 and len(notes) == 0  # no immediate yet: nothing is proven
    t.add_immediate(1, 2, t_ns=50)  # request 2 (QP 1) lands before request 1 (QP 0)
    placed, notes = t.drain(60)
    assert list(placed["xfer"]) == [102] and list(placed["t_ns"]) == [50]
    assert len(notes) == 0  # WRs 1, 2 on QP 0 were posted earlier and are not proven yet
    t.add_immediate(0, 1, t_ns=70)
    placed, notes = t.drain(80)
    assert list(placed["xfer"]) == [100, 101]
    assert list(notes["request"]) == [1, 2] and set(notes["t_ns"]) == {80}
    assert t.unplaced() == 2  # the open segment on QP 2


def test_immediate_before_its_record_is_kept():
    w = build_wrs(batch([8], [(1 << 32) + 9]), remote_base=BASE, rkey=RKEY, state=WrState())
    t = PlacementTracker(1, region_nbytes=2 << 20)
    t.add_immediate(0, 9, t_ns=5)
    assert len(t.drain(6)[0]) == 0
    t.add_records(records_for(w.descs, BASE))
    placed, notes = t.drain(7)
    assert list(placed["xfer"]) == [100] and list(notes["request"]) == [(1 << 32) + 9]


def test_placement_rejects_mismatch_and_out_of_region():
    w = build_wrs(batch([8], [9]), remote_base=BASE, rkey=RKEY, state=WrState())
    t = PlacementTracker(1, region_nbytes=2 << 20)
    t.add_records(records_for(w.descs, BASE))
    t.add_immediate(0, 8, t_ns=5)
    with pytest.raises(ProtocolError, match="immediate 0x8 on QP index 0 does not match request 9"):
        t.drain(6)
    small = PlacementTracker(1, region_nbytes=16)
    with pytest.raises(ProtocolError, match="outside registered region of 16 bytes"):
        small.add_records(records_for(w.descs, BASE))


def test_written_ranges_exact_overlap():
    from pytest_kvfabric.transports.rdma.placement import WrittenRanges

    w = WrittenRanges()
    assert w.add(0, 100) is False
    assert w.add(100, 200) is False  # touching is not overlapping
    assert len(w) == 1  # ...but merges
    assert w.add(300, 400) is False and len(w) == 2
    assert w.add(199, 201) is True
    assert w.add(250, 300) is False and len(w) == 2  # touches [300, 400) only
    assert w.add(201, 250) is False and len(w) == 1  # bridges both
    assert w.add(50, 60) is True
    assert w.add(5, 5) is False


def test_confirm_retires_completed_writes_and_skips_their_immediates():
    w = build_wrs(batch([8, 8, 8], [-1, 4, 6]), remote_base=BASE, rkey=RKEY, state=WrState())
    t = PlacementTracker(1, region_nbytes=2 << 20)
    t.add_records(records_for(w.descs, BASE))
    # The initiator completed WRs 1 and 2 (request 4) before any immediate was seen.
    placed = t.confirm([2], t_ns=10)
    assert list(placed["xfer"]) == [100, 101] and set(placed["t_ns"]) == {10}
    t.add_immediate(0, 4, t_ns=11)  # request 4's immediate: already accounted for
    t.add_immediate(0, 6, t_ns=12)
    placed, notes = t.drain(13)
    assert list(placed["xfer"]) == [102]
    assert list(notes["request"]) == [4, 6]
    assert t.unplaced() == 0
