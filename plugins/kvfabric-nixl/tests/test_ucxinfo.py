"""The UCX protocol-selection parser, on a log UCX wrote (NIXL agents on one host) and on made-up tables."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvfabric_nixl import ucxinfo

SAMPLE = (Path(__file__).parent / "ucx_proto_info_sample.log").read_text()

RC = """[1.0] [h:1:0]   +-----------+-------------+------------------------------------------------+
[1.0] [h:1:0]   | ini inter-node cfg#2                                                     |
[1.0] [h:1:0]   | remote memory write by ucp_put* from host memory to host               |
[1.0] [h:1:0]   +-----------+-------------+------------------------------------------------+
[1.0] [h:1:0]   |   0..2047 | short       | rc_mlx5/mlx5_0:1                               |
[1.0] [h:1:0]   | 2048..inf | zero-copy   | 50% on rc_mlx5/mlx5_0:1 and 50% on rc_mlx5/mlx5_1:1 |
[1.0] [h:1:0]   +-----------+-------------+------------------------------------------------+
"""


def test_sample_log_from_a_real_run_names_cma_for_writes_and_tcp_for_notifications():
    tables = ucxinfo.parse(SAMPLE)
    assert len(tables) > 10
    writes = ucxinfo.remote_writes(tables)
    assert writes and all(t.scope == "intra-node" for t in writes)  # the loopback "self" ep is excluded
    assert ucxinfo.lanes_of(writes) == ["cma/memory"]
    assert ucxinfo.lanes_of(ucxinfo.notifications(tables)) == ["tcp/lo"]
    assert ucxinfo.zero_copy(ucxinfo.lanes_of(writes)) is False


def test_split_rc_lanes_are_all_found_and_satisfy_rc():
    (t,) = ucxinfo.parse(RC)
    assert (t.worker, t.scope, t.cfg) == ("ini", "inter-node", 2)
    assert t.rows[0] == ("0..2047", "short", "rc_mlx5/mlx5_0:1")
    assert t.lanes == ["rc_mlx5/mlx5_0:1", "rc_mlx5/mlx5_1:1"]
    assert ucxinfo.requirement_failure(t.lanes, "rc") is None
    assert ucxinfo.zero_copy(t.lanes) is True


@pytest.mark.parametrize("lanes, wanted, bad", [
    (["tcp/lo"], "rc", "tcp/lo"),
    (["rc_verbs/rxe0:1", "tcp/eth0"], "rc", "tcp/eth0"),
    (["cma/memory"], "tcp", "cma/memory"),
])
def test_fallback_is_named_in_the_failure(lanes, wanted, bad):
    why = ucxinfo.requirement_failure(lanes, wanted)
    assert why is not None and bad in why and f"require_ucx_transport={wanted}" in why


def test_no_evidence_is_a_failure_not_a_pass():
    assert "cannot be proven" in ucxinfo.requirement_failure([], "rc")


def test_transport_names_match_by_family_not_substring():
    assert ucxinfo.transport_matches("rc_mlx5/mlx5_0:1", "rc")
    assert ucxinfo.transport_matches("rc_verbs/rxe0:1", "rc")
    assert not ucxinfo.transport_matches("srd/efa0", "rc")
    assert not ucxinfo.transport_matches("tcp/lo", "tc")


@given(st.text(max_size=400))
def test_parse_never_raises(text):
    for t in ucxinfo.parse(text):
        assert isinstance(t.lanes, list)


@given(st.lists(st.sampled_from(["tcp/lo", "tcp/eth0", "cma/memory", "rc_mlx5/mlx5_0:1", "dc_mlx5/mlx5_0:1"]),
                min_size=1, max_size=5), st.sampled_from(["rc", "tcp", "cma", "dc"]))
def test_requirement_holds_exactly_when_every_lane_matches(lanes, wanted):
    ok = all(lane.split("/")[0].split("_")[0] == wanted for lane in lanes)
    assert (ucxinfo.requirement_failure(lanes, wanted) is None) == ok
