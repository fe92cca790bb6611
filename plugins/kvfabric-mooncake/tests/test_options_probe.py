"""Parameters, probe reasons and registration (no engine calls)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.transports import registry

import kvfabric_mooncake.transport as mt
from kvfabric_mooncake.options import PROTOCOLS, MooncakeOptions


def test_entry_point_registers_mooncake():
    assert "mooncake" in registry.available_names()
    assert registry.get_transport("mooncake") is mt.MooncakeTransport


def test_defaults_are_tcp_with_two_workers():
    assert MooncakeOptions.from_options({"token": "x"}) == MooncakeOptions("tcp", "", 2)


@given(st.text(max_size=12))
def test_unknown_protocol_names_field_and_valid_values(p):
    if p.lower() in PROTOCOLS:
        assert MooncakeOptions.from_options({"protocol": p}).protocol == p.lower()
        return
    with pytest.raises(ProfileError) as exc:
        MooncakeOptions.from_options({"protocol": p})
    assert "protocol" in str(exc.value) and "tcp, rdma" in str(exc.value)


@pytest.mark.parametrize("bad", ["0", "17", "two", None])
def test_workers_out_of_range_is_one_clear_error(bad):
    with pytest.raises(ProfileError, match="workers"):
        MooncakeOptions.from_options({"workers": bad})


def test_missing_engine_skips_with_the_install_hint(monkeypatch):
    def broken():
        raise ImportError("libibverbs.so.1: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(mt, "import_engine", broken)
    monkeypatch.setattr(mt, "_PROBE", {})
    cap = mt.MooncakeTransport.probe({})
    assert not cap.available
    assert "libibverbs.so.1" in cap.reason
    assert "pip install mooncake-transfer-engine-non-cuda" in cap.reason and "librdmacm1" in cap.reason


def test_rdma_without_a_device_is_missing_with_the_reason(monkeypatch):
    monkeypatch.setattr(mt, "import_engine", lambda: None)
    monkeypatch.setattr(mt, "_PROBE", {})
    monkeypatch.setattr(mt, "rdma_devices", lambda root="": [])
    cap = mt.MooncakeTransport.probe({"protocol": "rdma"})
    assert not cap.available and "needs an RDMA device" in cap.reason
    monkeypatch.setattr(mt, "rdma_devices", lambda root="": ["rxe0"])
    cap = mt.MooncakeTransport.probe({"protocol": "rdma", "device": "mlx5_0"})
    assert not cap.available and "mlx5_0 not present" in cap.reason and "rxe0" in cap.reason
    assert mt.MooncakeTransport.probe({"protocol": "rdma", "device": "rxe0"}).available


def test_bad_parameter_is_a_missing_capability_not_a_crash():
    cap = mt.MooncakeTransport.probe({"protocol": "nvlink"})
    assert not cap.available and "protocol" in cap.reason


def test_session_names():
    assert mt.session_name("10.0.0.1", 123) == "10.0.0.1:123"
    assert mt.session_name("fd00::1", 5) == "[fd00::1]:5"


def test_topology_devices_reads_mooncakes_topology_shape():
    from kvfabric_mooncake.transport import topology_devices
    assert topology_devices({"cpu:0": [[], ["rxe0"]], "cpu:1": [["mlx5_0"], ["mlx5_1", "rxe0"]]}) == {"rxe0", "mlx5_0", "mlx5_1"}
    assert topology_devices("unavailable: x") == set() and topology_devices({"cpu:0": "odd"}) == set()
