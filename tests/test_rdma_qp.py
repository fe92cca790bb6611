"""QP attribute building (pure; transport.py turns these dicts into pyverbs QPAttr)."""
from __future__ import annotations

import pytest

from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.transports.rdma import qp
from pytest_kvfabric.transports.rdma.options import RdmaOptions

DGID = "0000:0000:0000:0000:0000:ffff:0a00:0002"


def test_defaults_are_documented_values():
    o = qp.QpOptions.from_options({})
    assert o.as_dict() == {
        "port": 1, "pkey_index": 0, "path_mtu": None, "timeout": 14, "retry_cnt": 7,
        "rnr_retry": 7, "min_rnr_timer": 12, "max_rd_atomic": 1, "max_dest_rd_atomic": 1,
        "hop_limit": 64, "traffic_class": 0, "sl": 0,
    }


def test_init_remote_write_only_on_decode_side():
    o = qp.QpOptions.from_options({"port": 2, "pkey_index": 3})
    attrs, mask = qp.init_attrs(o, remote_write=True)
    assert attrs == {"qp_state": "IBV_QPS_INIT", "pkey_index": 3, "port_num": 2,
                     "qp_access_flags": ["IBV_ACCESS_LOCAL_WRITE", "IBV_ACCESS_REMOTE_WRITE",
                                         "IBV_ACCESS_REMOTE_READ"]}
    assert mask == ["IBV_QP_STATE", "IBV_QP_PKEY_INDEX", "IBV_QP_PORT", "IBV_QP_ACCESS_FLAGS"]
    attrs, _ = qp.init_attrs(o, remote_write=False)
    assert attrs["qp_access_flags"] == ["IBV_ACCESS_LOCAL_WRITE"]


def test_rtr_carries_grh_and_peer():
    o = qp.QpOptions.from_options({"traffic_class": 106, "hop_limit": 8, "min_rnr_timer": 14,
                                   "max_dest_rd_atomic": 4})
    attrs, mask = qp.rtr_attrs(o, dest_qpn=0x1234, rq_psn=0xABCDE, dgid=DGID, sgid_index=3,
                               path_mtu=4096)
    assert attrs["qp_state"] == "IBV_QPS_RTR"
    assert attrs["path_mtu"] == "IBV_MTU_4096"
    assert (attrs["dest_qp_num"], attrs["rq_psn"]) == (0x1234, 0xABCDE)
    assert (attrs["max_dest_rd_atomic"], attrs["min_rnr_timer"]) == (4, 14)
    grh = attrs["ah_attr"]["grh"]
    assert grh == {"dgid": DGID, "sgid_index": 3, "hop_limit": 8, "traffic_class": 106,
                   "flow_label": 0}
    assert attrs["ah_attr"]["is_global"] == 1 and attrs["ah_attr"]["port_num"] == 1
    assert set(mask) == {"IBV_QP_STATE", "IBV_QP_AV", "IBV_QP_PATH_MTU", "IBV_QP_DEST_QPN",
                         "IBV_QP_RQ_PSN", "IBV_QP_MAX_DEST_RD_ATOMIC", "IBV_QP_MIN_RNR_TIMER"}


def test_rts_send_side_attributes():
    o = qp.QpOptions.from_options({"timeout": 18, "retry_cnt": 3, "rnr_retry": 6,
                                   "max_rd_atomic": 2})
    attrs, mask = qp.rts_attrs(o, sq_psn=77)
    assert attrs == {"qp_state": "IBV_QPS_RTS", "sq_psn": 77, "timeout": 18, "retry_cnt": 3,
                     "rnr_retry": 6, "max_rd_atomic": 2}
    assert set(mask) == {"IBV_QP_STATE", "IBV_QP_SQ_PSN", "IBV_QP_TIMEOUT", "IBV_QP_RETRY_CNT",
                         "IBV_QP_RNR_RETRY", "IBV_QP_MAX_QP_RD_ATOMIC"}
    assert qp.ack_timeout_us(14) == pytest.approx(67108.864)


@pytest.mark.parametrize("field, value", [("dest_qpn", 1 << 24), ("rq_psn", -1)])
def test_24bit_fields_checked(field, value):
    kwargs = {"dest_qpn": 1, "rq_psn": 1, field: value}
    with pytest.raises(ValueError, match=field):
        qp.rtr_attrs(qp.QpOptions(), dgid=DGID, sgid_index=0, path_mtu=1024, **kwargs)


def test_dscp_becomes_traffic_class_and_conflicts_are_errors():
    assert qp.QpOptions.from_options({"dscp": 26}).traffic_class == 104
    assert qp.QpOptions.from_options({"dscp": 26, "traffic_class": 104}).traffic_class == 104
    with pytest.raises(ProfileError, match="dscp: dscp 26 conflicts with traffic_class 96"):
        qp.QpOptions.from_options({"dscp": 26, "traffic_class": 96})


@pytest.mark.parametrize("options, field, reason", [
    ({"retry_cnt": 8}, "retry_cnt", "8 outside [0, 7]"),
    ({"timeout": "soon"}, "timeout", "'soon' is not an integer"),
    ({"traffic_class": 256}, "traffic_class", "outside [0, 255]"),
    ({"path_mtu": 9000}, "path_mtu", "9000 is not one of 256, 512, 1024, 2048, 4096"),
    ({"dscp": 64}, "dscp", "outside [0, 63]"),
])
def test_bad_options_name_the_key(options, field, reason):
    with pytest.raises(ProfileError) as exc:
        qp.QpOptions.from_options(options)
    assert exc.value.field == field and reason in str(exc.value)


def test_path_mtu_negotiation():
    o = qp.QpOptions()
    assert qp.negotiated_mtu(o, 4096, 1024) == 1024
    assert qp.negotiated_mtu(o, None, None) == 1024
    assert qp.negotiated_mtu(o, 4096, 4096) == 4096
    assert qp.negotiated_mtu(qp.QpOptions(path_mtu=2048), 4096, 4096) == 2048
    with pytest.raises(ProfileError, match="4096 exceeds the active port MTU 1024"):
        qp.negotiated_mtu(qp.QpOptions(path_mtu=4096), 4096, 1024)


def test_wc_errors_are_named():
    msg = qp.describe_wc_error(10, what="RDMA WRITE wr_id 5")
    assert msg.startswith("work completion IBV_WC_REM_ACCESS_ERR (RDMA WRITE wr_id 5): ")
    assert "rkey" in msg
    assert "IBV_WC_RETRY_EXC_ERR" in qp.describe_wc_error(12, vendor_err=0x81)
    assert "vendor_err 0x81" in qp.describe_wc_error(12, vendor_err=0x81)
    assert "IBV_QPS_ERR" in qp.describe_wc_error(5)
    assert qp.wc_status_name(0) == "IBV_WC_SUCCESS"
    assert qp.wc_status_name(99) == "IBV_WC_STATUS_99"


def test_transport_options():
    o = RdmaOptions.from_options({"device": "mlx5_1", "gid_index": "3", "traffic_class": 106,
                                  "qps": 4, "poll": "channel", "token": "s3cret"})
    assert (o.device, o.gid_index, o.qps, o.poll, o.token) == ("mlx5_1", 3, 4, "channel", "s3cret")
    assert o.qp.traffic_class == 106
    d = RdmaOptions.from_options({})
    assert (d.device, d.port, d.gid_index, d.qps, d.signal_every, d.poll, d.max_send_wr) == \
        (None, None, None, 1, 16, "busy", 256)
    with pytest.raises(ProfileError, match="poll: 'spin' is not one of busy, channel"):
        RdmaOptions.from_options({"poll": "spin"})
    with pytest.raises(ProfileError, match="signal_every: 64 exceeds max_send_wr 32"):
        RdmaOptions.from_options({"signal_every": 64, "max_send_wr": 32})
