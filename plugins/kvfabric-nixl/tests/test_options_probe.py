"""Parameters, probe reasons and registration (no NIXL calls)."""
from __future__ import annotations

import types

import pytest

from pytest_kvfabric.errors import ProfileError
from pytest_kvfabric.transports import registry

import kvfabric_nixl.transport as nt
from kvfabric_nixl.options import NixlOptions


def test_entry_point_registers_nixl():
    assert "nixl" in registry.available_names()
    assert registry.get_transport("nixl") is nt.NixlTransport


def test_defaults_leave_ucx_its_choice():
    o = NixlOptions.from_options({"token": "x"})
    assert o == NixlOptions("UCX", "", "", "", False) and o.ucx_env() == {}
    assert NixlOptions.from_options({"progress_thread": "yes"}).progress_thread is True
    o = NixlOptions.from_options({"ucx_tls": "tcp", "ucx_net_devices": "lo", "require_ucx_transport": "TCP"})
    assert o.ucx_env() == {"UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"} and o.require_ucx_transport == "tcp"


@pytest.mark.parametrize("params, field", [
    ({"backend": "UC X"}, "backend"),
    ({"ucx_tls": "tcp;rm -rf"}, "ucx_tls"),
    ({"require_ucx_transport": "rc/mlx5"}, "require_ucx_transport"),
    ({"backend": "LIBFABRIC", "require_ucx_transport": "rc"}, "require_ucx_transport"),
    ({"progress_thread": "maybe"}, "progress_thread"),
])
def test_bad_parameters_are_one_clear_error(params, field):
    with pytest.raises(ProfileError) as exc:
        NixlOptions.from_options(params)
    assert field in str(exc.value)


def test_missing_nixl_skips_with_the_smallest_install(monkeypatch):
    def broken():
        raise ImportError("No module named 'nixl_cu12'")

    monkeypatch.setattr(nt, "import_nixl", broken)
    monkeypatch.setattr(nt, "_STATE", {})
    cap = nt.NixlTransport.probe({})
    assert not cap.available
    assert "No module named 'nixl_cu12'" in cap.reason and "pip install --no-deps nixl-cu12" in cap.reason


def test_backend_not_shipped_is_missing_with_the_list(monkeypatch, tmp_path):
    pkg = tmp_path / "fake_nixl"
    (tmp_path / "fake_nixl.libs" / "nixl").mkdir(parents=True)
    (tmp_path / "fake_nixl.libs" / "nixl" / "libplugin_UCX.so").write_bytes(b"")
    pkg.mkdir()
    mod = types.SimpleNamespace(__file__=str(pkg / "__init__.py"))
    monkeypatch.setattr(nt, "_STATE", {"mod": mod, "err": ""})
    assert nt.NixlTransport.probe({}).available
    cap = nt.NixlTransport.probe({"backend": "GPUNETIO"})
    assert not cap.available and "GPUNETIO is not shipped" in cap.reason and "UCX" in cap.reason
