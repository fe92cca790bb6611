"""The iouring capability probe: one distinct reason per missing capability.

Sysctl and package cases replace the probe's inputs (never the data path); the SEND_ZC and
ZCRX answers on this host come from the real kernel."""
from __future__ import annotations

import errno

import pytest

from pytest_kvfabric.transports import iouring_probe as P
from pytest_kvfabric.transports import registry

OK = P.ProbeInputs(
    io_uring_disabled=0, io_uring_group=-1, privileged=False, groups=(1000,), import_error=None,
    send_zc=True, zcrx_ifname="lo", zcrx_rxq=0, zcrx_errno=errno.EOPNOTSUPP,
    zcrx_error="lo queue 0: IORING_REGISTER_ZCRX_IFQ(ifindex=1, rxq=0) returned EOPNOTSUPP "
               "(Operation not supported)",
)


def _with(**kw):
    return P.ProbeInputs(**{**OK.__dict__, **kw})


def test_all_present_is_available_and_reports_zcrx_answer():
    cap = P.decide(OK, {"mode": "send_zc"})
    assert cap.available and cap.reason == ""
    assert "SEND_ZC" in cap.data_path
    assert "EOPNOTSUPP" in cap.details["zcrx"]


def test_sysctl_2_disables_everyone():
    cap = P.decide(_with(io_uring_disabled=2, privileged=True), {})
    assert not cap.available
    assert "kernel.io_uring_disabled=2" in cap.reason


def test_sysctl_1_without_group():
    cap = P.decide(_with(io_uring_disabled=1, io_uring_group=4242), {})
    assert not cap.available
    assert "kernel.io_uring_disabled=1" in cap.reason and "io_uring_group (gid 4242)" in cap.reason


def test_sysctl_1_in_group_or_privileged_is_allowed():
    assert P.decide(_with(io_uring_disabled=1, io_uring_group=1000), {}).available
    assert P.decide(_with(io_uring_disabled=1, privileged=True), {}).available


def test_liburing_missing_reports_import_error_text():
    text = "ModuleNotFoundError: No module named 'liburing'"
    cap = P.decide(_with(import_error=text), {})
    assert cap.reason == f"liburing not installed: {text}"


def test_send_zc_unsupported_only_matters_in_send_zc_mode():
    inputs = _with(send_zc=False, send_zc_error="IORING_OP_SEND_ZC attempt returned EINVAL")
    cap = P.decide(inputs, {"mode": "send_zc"})
    assert not cap.available
    assert cap.reason == "IORING_OP_SEND_ZC unsupported: IORING_OP_SEND_ZC attempt returned EINVAL"
    assert P.decide(inputs, {"mode": "send"}).available


def test_zcrx_unsupported_carries_the_kernel_errno():
    cap = P.decide(OK, {"zcrx": True})
    assert not cap.available
    assert cap.reason.startswith("ZCRX unsupported: ") and "EOPNOTSUPP" in cap.reason


def test_ring_unusable_is_its_own_reason():
    cap = P.decide(_with(ring_error="self-test process killed by SIGILL inside the liburing package"), {})
    assert not cap.available and "SIGILL" in cap.reason


def test_bad_mode_option():
    cap = P.decide(OK, {"mode": "splice"})
    assert not cap.available and "mode='splice'" in cap.reason and "send_zc" in cap.reason


# -- the gatherer, with its inputs replaced -----------------------------------------------------
def test_gatherer_sysctl_input(monkeypatch):
    real = P._read_int
    monkeypatch.setattr(P, "_read_int", lambda path: 2 if path == P.SYSCTL_DISABLED else real(path))
    cap = registry.probe("iouring", {})
    assert not cap.available and "kernel.io_uring_disabled=2" in cap.reason


def test_gatherer_package_input(monkeypatch):
    monkeypatch.setattr(P, "_import_error", lambda: "ModuleNotFoundError: No module named 'liburing'")
    cap = registry.probe("iouring", {})
    assert cap.reason == "liburing not installed: ModuleNotFoundError: No module named 'liburing'"


def test_selftest_child_killed_by_signal_is_reported(monkeypatch):
    import subprocess

    class Done:
        returncode, stdout, stderr = -4, "", ""

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Done())
    st = P.run_selftest("lo", 0)
    assert st["ring_error"] == "self-test process killed by SIGILL inside the liburing package"


# -- the real host ----------------------------------------------------------------------------
def test_real_host_send_and_send_zc_available():
    for mode in ("send", "send_zc"):
        cap = registry.probe("iouring", {"mode": mode})
        assert cap.available, cap.reason


def test_real_host_zcrx_on_loopback_says_eopnotsupp():
    cap = registry.probe("iouring", {"zcrx": True, "address": "127.0.0.1"})
    assert not cap.available
    assert "ZCRX unsupported" in cap.reason
    assert "EOPNOTSUPP" in cap.reason and "lo queue 0" in cap.reason


def test_real_zcrx_registration_errno_on_loopback():
    from pytest_kvfabric.transports import _uring

    err, why = _uring.try_zcrx("lo", 0)
    assert err == errno.EOPNOTSUPP, why
    assert "IORING_REGISTER_ZCRX_IFQ" in why


def test_real_send_zc_opcode_probe():
    from pytest_kvfabric.transports import _uring

    assert _uring.send_zc_supported() == (True, "")


def test_zcrx_target_refuses_instead_of_falling_back():
    from pytest_kvfabric.errors import TransportError
    from pytest_kvfabric.transports.iouring import IoUringTransport

    region = IoUringTransport.allocate(4096, {})
    tgt = IoUringTransport.target(region, {"zcrx": True})
    with pytest.raises(TransportError, match="ZCRX unsupported.*EOPNOTSUPP"):
        tgt.listen("127.0.0.1", 5)
    tgt.close()


def test_direct_ring_access_refused_off_x86_64(monkeypatch):
    """Writing SQEs / reading CQEs straight from the rings assumes x86-64 (TSO, LP64 layout):
    elsewhere Ring() must refuse with that reason instead of racing the kernel."""
    from pytest_kvfabric.transports import _uring

    monkeypatch.setattr(_uring.platform, "machine", lambda: "aarch64")
    with pytest.raises(_uring.UringError, match="assumes x86-64.*aarch64"):
        _uring.Ring(8)


def test_ring_reads_cqes_and_writes_sqes_directly():
    """Our SQ/CQ ring access agrees with the kernel: NOPs with distinct user_data, more than
    the CQ slice fast path handles and wrapping around the rings, come back in order."""
    from pytest_kvfabric.transports import _uring

    ring = _uring.Ring(8)
    try:
        seen = []
        for round_ in range(5):  # 5 x 6 NOPs through an 8-entry SQ / 16-entry CQ: wraps
            for i in range(6):
                ring.put(0, -1, 0, 0, 1000 + 6 * round_ + i)
            ring.submit()
            for _ in range(100):
                ring.wait(0.05)
                seen += [c for c in ring.drain() if c[0]]
                if len(seen) == 6 * (round_ + 1):
                    break
        assert [c[0] for c in seen] == list(range(1000, 1030))
        assert all(res == 0 for _, res, _ in seen)
        assert ring.cq_ready() == 0
    finally:
        ring.close()
