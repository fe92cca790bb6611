"""The rdma capability probe: every reason, over real sysfs-shaped trees and real imports."""
from __future__ import annotations

import os
import sys
import textwrap

import pytest

from pytest_kvfabric.transports import registry
from pytest_kvfabric.transports.rdma import probe
from pytest_kvfabric.transports.rdma.sysfs_tree import write_port

V4 = "0000:0000:0000:0000:0000:ffff:0a00:0001"  # ::ffff:10.0.0.1
LL = "fe80:0000:0000:0000:0a5e:45ff:fe12:3456"
VERSION_ERR = ("ImportError: /lib/x86_64-linux-gnu/libibverbs.so.1: version `IBVERBS_PRIVATE_59' "
               "not found (required by /venv/lib/python3.11/site-packages/pyverbs/"
               "device.cpython-311-x86_64-linux-gnu.so)")


def ok_import():
    return None


def gather(root, **options):
    return probe.gather(options, root=str(root), import_pyverbs=ok_import)


def test_no_sysfs_dir(tmp_path):
    cap = probe.decide(gather(tmp_path / "absent"))
    assert not cap.available
    assert cap.reason.startswith(f"no RDMA devices: {tmp_path / 'absent'} does not exist "
                                 "(the kernel has no InfiniBand/RDMA support")
    assert "rdma link add rxe0 type rxe netdev IFACE" in cap.reason
    assert "pyverbs" not in cap.reason  # it imported fine


def test_empty_sysfs_dir(tmp_path):
    (tmp_path / "ib").mkdir()
    cap = probe.decide(gather(tmp_path / "ib"))
    assert cap.reason.startswith(f"no RDMA devices: {tmp_path / 'ib'} is empty")
    assert "soft-RoCE" in cap.reason


def test_no_devices_also_names_missing_pyverbs(tmp_path):
    inputs = probe.gather({}, root=str(tmp_path / "absent"),
                          import_pyverbs=lambda: "ModuleNotFoundError: No module named 'pyverbs'")
    reason = probe.decide(inputs).reason
    assert reason.startswith("no RDMA devices:")
    assert "also, pyverbs is not installed (ModuleNotFoundError: No module named 'pyverbs')" in reason


@pytest.mark.parametrize("error, expected", [
    ("ModuleNotFoundError: No module named 'pyverbs'",
     "pyverbs is not installed (ModuleNotFoundError: No module named 'pyverbs')"),
    (VERSION_ERR, "pyverbs needs rdma-core 59 (symbol version IBVERBS_PRIVATE_59) but the "
                  "system's rdma-core libraries are older"),
    ("ImportError: libibverbs.so.1: cannot open shared object file: No such file or directory",
     "pyverbs is installed but rdma-core's libibverbs.so.1 is missing"),
    ("ImportError: something else", "pyverbs could not be imported (ImportError: something else)"),
])
def test_pyverbs_import_reasons(tmp_path, error, expected):
    root = tmp_path / "ib"
    write_port(str(root), "mlx5_0", gids=[(3, V4, "RoCE v2", "eth0")])
    cap = probe.decide(probe.gather({}, root=str(root), import_pyverbs=lambda: error))
    assert cap.reason.startswith(expected)
    # Both documented ways out are named.
    assert "pip install pytest-kvfabric[rdma]` over rdma-core of the same version" in cap.reason
    assert "python3-pyverbs used from a virtualenv created with --system-site-packages" in cap.reason


def test_real_import_of_a_pyverbs_whose_library_is_missing(tmp_path, monkeypatch):
    # A package named pyverbs whose extension needs a library this host lacks: the real
    # import machinery raises, and the probe names the missing library.
    pkg = tmp_path / "site" / "pyverbs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "device.py").write_text(textwrap.dedent("""
        import ctypes
        ctypes.CDLL("libkvfabric-test-ibverbs.so.59")
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "pyverbs" or m.startswith("pyverbs.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        err = probe.try_import_pyverbs()
    finally:  # drop the stand-in package so later imports see the real state of this host
        for name in [m for m in sys.modules if m == "pyverbs" or m.startswith("pyverbs.")]:
            del sys.modules[name]
    assert err is not None and err.startswith("OSError: libkvfabric-test-ibverbs.so.59")
    assert probe.explain_import_error(err).startswith(
        "pyverbs is installed but rdma-core's libkvfabric-test-ibverbs.so.59 is missing")


def test_requested_device_missing(tmp_path):
    write_port(str(tmp_path), "mlx5_0", gids=[(3, V4, "RoCE v2", "eth0")])
    cap = probe.decide(gather(tmp_path, device="mlx5_9"))
    assert cap.reason == "RDMA device 'mlx5_9' not found; devices: mlx5_0"


def test_no_active_port(tmp_path):
    write_port(str(tmp_path), "mlx5_0", 1, state="1: DOWN", phys_state="3: Disabled")
    write_port(str(tmp_path), "mlx5_1", 1, state="2: INIT", phys_state="5: LinkUp")
    cap = probe.decide(gather(tmp_path))
    assert cap.reason == ("no active RDMA port: mlx5_0 port 1 DOWN (Disabled), "
                          "mlx5_1 port 1 INIT (LinkUp)")


def test_no_roce_v2_gid_on_the_data_address(tmp_path):
    write_port(str(tmp_path), "mlx5_0", gids=[(0, LL, "IB/RoCE v1", "eth0"),
                                               (1, V4, "IB/RoCE v1", "eth0")])
    cap = probe.decide(gather(tmp_path, data_addr="10.0.0.1"))
    assert cap.reason.startswith("mlx5_0 port 1 has no RoCE v2 GID for 10.0.0.1 (::ffff:a00:1)")
    assert "1=::ffff:a00:1 (IB/RoCE v1)" in cap.reason


def test_requested_gid_index_must_be_roce_v2(tmp_path):
    write_port(str(tmp_path), "mlx5_0", gids=[(0, LL, "IB/RoCE v1", "eth0"),
                                               (3, V4, "RoCE v2", "eth0")])
    assert probe.decide(gather(tmp_path, gid_index=0)).reason == \
        "mlx5_0 port 1 GID index 0 is IB/RoCE v1, not RoCE v2"
    assert probe.decide(gather(tmp_path, gid_index=9)).reason == \
        "mlx5_0 port 1 has no GID at index 9"
    assert probe.decide(gather(tmp_path, gid_index=3)).details["gid_index"] == 3


def test_available_picks_the_port_carrying_the_address(tmp_path):
    # mlx5_0 is active but carries another address; mlx5_1 carries ours.
    write_port(str(tmp_path), "mlx5_0", gids=[(3, "0000:0000:0000:0000:0000:ffff:0a00:0063",
                                                "RoCE v2", "eth0")])
    write_port(str(tmp_path), "mlx5_1", gids=[(0, LL, "IB/RoCE v1", "eth1"),
                                               (3, V4, "RoCE v2", "eth1")],
               rate="200 Gb/sec (4X HDR)", active_mtu="4096", fw_ver="20.40.1000")
    cap = probe.decide(gather(tmp_path, data_addr="10.0.0.1"))
    assert cap.available and cap.reason == ""
    assert cap.details["device"] == "mlx5_1" and cap.details["gid_index"] == 3
    assert cap.details["gid_type"] == "RoCE v2" and cap.details["fw_ver"] == "20.40.1000"
    assert cap.data_path == ("RoCE v2 one-sided RDMA WRITE on mlx5_1 port 1 (GID index 3 RoCE v2, "
                             "200 Gb/sec (4X HDR), active MTU 4096, fw 20.40.1000)")


def test_infiniband_link_layer_uses_gid_0(tmp_path):
    write_port(str(tmp_path), "mlx5_0", link_layer="InfiniBand",
               gids=[(0, LL, "IB/RoCE v1", None)])
    cap = probe.decide(gather(tmp_path, data_addr="10.0.0.1"))
    assert cap.available and cap.details["gid_index"] == 0
    assert cap.data_path.startswith("InfiniBand one-sided RDMA WRITE on mlx5_0")


def test_this_machine_gets_its_real_reason():
    cap = registry.probe("rdma")
    root = "/sys/class/infiniband"
    pyverbs_err = probe.try_import_pyverbs()
    if not os.path.isdir(root):
        assert cap.reason.startswith("no RDMA devices: /sys/class/infiniband does not exist")
    elif not os.listdir(root):
        assert cap.reason.startswith("no RDMA devices: /sys/class/infiniband is empty")
    elif pyverbs_err is not None:
        assert cap.reason.startswith(probe.explain_import_error(pyverbs_err)[:20])
    else:
        assert cap.available or cap.reason  # a device host: available or a precise reason
    if pyverbs_err is not None:
        assert not cap.available and "pyverbs" in cap.reason


def test_transport_module_does_not_import_pyverbs():
    import importlib

    had = "pyverbs" in sys.modules
    mod = importlib.import_module("pytest_kvfabric.transports.rdma.transport")
    assert mod.RdmaTransport.name == "rdma"
    assert ("pyverbs" in sys.modules) == had


def test_allocate_reports_its_pages():
    from pytest_kvfabric.transports.rdma.transport import RdmaTransport, allocation_kind

    region = RdmaTransport.allocate(3 << 20, {})
    try:
        assert len(region) == 3 << 20 and not region.readonly
        region[-1] = 7
        kind = allocation_kind(region)
        assert kind.startswith(("hugetlb", "transparent huge pages", "4 KiB pages"))
    finally:
        RdmaTransport.release(region)


def test_bad_option_values_name_the_key(tmp_path):
    from pytest_kvfabric.errors import ProfileError

    with pytest.raises(ProfileError, match=r"gid_index: 'three' is not an integer"):
        probe.probe({"gid_index": "three", "sysfs_root": str(tmp_path)})
    with pytest.raises(ProfileError, match=r"traffic_class: 300 outside \[0, 255\]"):
        probe.probe({"traffic_class": 300, "sysfs_root": str(tmp_path)})


def test_options_reach_the_decision(tmp_path):
    write_port(str(tmp_path), "mlx5_0", 1, gids=[(3, V4, "RoCE v2", "eth0")])
    write_port(str(tmp_path), "mlx5_0", 2, gids=[(1, V4, "RoCE v2", "eth1")])
    cap = probe.decide(gather(tmp_path, device="mlx5_0", port="2", data_addr="10.0.0.1"))
    assert cap.available and (cap.details["port"], cap.details["gid_index"]) == (2, 1)


def _soft(tmp_path, udp):
    import dataclasses

    root = tmp_path / "ib"
    write_port(str(root), "rxe_v0", gids=[(1, V4, "RoCE v2", "v0")])
    inputs = gather(root, data_addr="10.0.0.1")
    return dataclasses.replace(inputs, soft_devices=frozenset({"rxe_v0"}), roce_udp_socket=udp)


def test_soft_roce_in_a_namespace_without_its_udp_socket_is_refused(tmp_path):
    cap = probe.decide(_soft(tmp_path, udp=False))
    assert not cap.available
    assert cap.reason.startswith("soft-RoCE device rxe_v0 cannot receive in this network namespace: "
                                 "no UDP socket on port 4791 here")
    assert "10.0.0.1" in cap.reason


@pytest.mark.parametrize("udp", [True, None])
def test_soft_roce_with_its_socket_or_unknown_is_fine(tmp_path, udp):
    assert probe.decide(_soft(tmp_path, udp=udp)).available


def test_udp_port_bound_reads_proc_net_udp_tables(tmp_path):
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    v4 = tmp_path / "udp"
    v4.write_text(head + "   1: 00000000:12B7 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2\n")
    v6 = tmp_path / "udp6"
    v6.write_text(head + "   2: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 0 0 0 0 0\n")
    assert probe.udp_port_bound(4791, (str(v4), str(v6))) is True
    assert probe.udp_port_bound(4791, (str(v6),)) is False
    assert probe.udp_port_bound(4791, (str(tmp_path / "none"),)) is None
    empty = tmp_path / "empty"
    empty.write_text(head)
    assert probe.udp_port_bound(4791, (str(empty),)) is False  # a new namespace: no UDP socket at all
