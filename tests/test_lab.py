"""The lab's pure parts (kernel choice, guest script, vng command line, KVM-or-TCG decision,
check verdicts, the in-VM environment) without booting anything."""
from __future__ import annotations

import os
import shlex

import pytest

from pytest_kvfabric.cli import main
from pytest_kvfabric.lab import check, env, vm


def cfg(**kw):
    base = dict(kernel="/boot/vmlinuz-6.12.118+deb12-amd64", project="/src/proj", venv="/src/proj/.venv-lab")
    return vm.LabConfig(**{**base, **kw})


def test_guest_script_brings_up_soft_roce_then_runs_the_command_in_the_venv():
    s = vm.guest_script(cfg(rxe_netdevs=("lo", "eth0")), "tcg", ["kvfabric", "run", "--isl", "1 024"])
    lines = s.splitlines()
    assert lines.index("ip link set lo up") < [i for i, l in enumerate(lines) if "modprobe rdma_rxe" in l][0]
    assert any(l.startswith("rdma link add rxe0 type rxe netdev lo ") for l in lines)
    assert any(l.startswith("rdma link add rxe1 type rxe netdev eth0 ") for l in lines)
    assert "export KVFABRIC_LAB=tcg" in lines and "export VIRTUAL_ENV=/src/proj/.venv-lab" in lines
    assert 'export PATH=/src/proj/.venv-lab/bin:"$PATH"' in lines and "cd /src/proj" in lines
    assert lines[-1] == "kvfabric run --isl '1 024'" and vm.GUEST_UP in lines[-2]


def test_guest_script_needs_a_command():
    with pytest.raises(vm.LabError, match="no command given"):
        vm.guest_script(cfg(), "tcg", [])


@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_vng_argv(accel):
    argv = vm.vng_argv(cfg(memory="2G", cpus=1), accel, "echo 'hi'", vng="/v/vng")
    assert argv[:8] == ["/v/vng", "--run", "/boot/vmlinuz-6.12.118+deb12-amd64", "--memory", "2G",
                        "--cpus", "1", "--rwdir"] and argv[8] == "/src/proj"
    assert ("--disable-kvm" in argv) == (accel == "tcg")
    assert argv[-2] == "--exec" and shlex.split(argv[-1]) == ["bash", "-c", "echo 'hi'"]


@pytest.mark.parametrize("kw, msg", [({"memory": "3X"}, "--memory '3X'"), ({"cpus": 0}, "--cpus 0"),
                                     ({"accel": "hvf"}, "--accel 'hvf'"), ({"timeout_s": 0}, "--timeout 0")])
def test_config_rejects_bad_options(kw, msg):
    with pytest.raises(vm.LabError, match=msg):
        cfg(**kw)


def _tree(tmp_path, releases_with_rxe, releases_without=()):
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for rel in (*releases_with_rxe, *releases_without):
        (boot / f"vmlinuz-{rel}").write_bytes(b"k")
        d = mods / rel / os.path.dirname(vm.RXE_MODULE)
        d.mkdir(parents=True)
        if rel in releases_with_rxe:
            (mods / rel / (vm.RXE_MODULE + ".xz")).write_bytes(b"m")
    return str(boot), str(mods)


def test_pick_kernel_takes_the_newest_with_rxe(tmp_path):
    boot, mods = _tree(tmp_path, ["6.1.0-50-amd64", "6.12.118+deb12-amd64", "6.12.9+deb12-amd64"],
                       ["6.18.0-custom"])
    assert vm.pick_kernel(boot, mods) == os.path.join(boot, "vmlinuz-6.12.118+deb12-amd64")
    assert vm.check_kernel(os.path.join(boot, "vmlinuz-6.1.0-50-amd64"), mods) == "6.1.0-50-amd64"
    with pytest.raises(vm.LabError, match="no rdma_rxe"):
        vm.check_kernel(os.path.join(boot, "vmlinuz-6.18.0-custom"), mods)
    with pytest.raises(vm.LabError, match="no such file"):
        vm.check_kernel(os.path.join(boot, "vmlinuz-9"), mods)
    with pytest.raises(vm.LabError, match="expected a /boot/vmlinuz-<release>"):
        vm.kernel_release("/boot/bzImage")


def test_pick_kernel_without_any_names_the_check(tmp_path):
    boot, mods = _tree(tmp_path, [], ["6.18.0-custom"])
    with pytest.raises(vm.LabError, match="kvfabric lab check"):
        vm.pick_kernel(boot, mods)


def test_kvm_failure_is_recognised_only_before_the_guest_ran():
    assert vm.kvm_failed("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n")
    assert vm.kvm_failed("KVM internal error. Suberror: 1\nemulation failure\n")
    assert vm.kvm_failed(f"{vm.GUEST_UP} (kernel x, kvm)\nemulation failure in the test\n") is None
    assert vm.kvm_failed("all fine\n") is None


class Recorder:
    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, argv, timeout_s):
        self.calls.append((argv, timeout_s))
        return self.answers.pop(0)


def test_auto_falls_back_to_tcg_when_kvm_dies(tmp_path):
    kvm = tmp_path / "kvm"
    kvm.write_bytes(b"")
    rec = Recorder([(255, "failed to set MSR 0x10a\n"), (3, f"{vm.GUEST_UP} (kernel k, tcg)\nout\n")])
    res = vm.run(cfg(), ["false"], runner=rec, kvm_dev=str(kvm))
    assert res.accel == "tcg" and res.returncode == 3 and "out" in res.output
    assert "--disable-kvm" not in rec.calls[0][0] and "--disable-kvm" in rec.calls[1][0]
    assert "KVFABRIC_LAB=tcg" in rec.calls[1][0][-1] and "falling back to TCG" in res.notes[0]


def test_auto_keeps_kvm_when_the_guest_runs(tmp_path):
    kvm = tmp_path / "kvm"
    kvm.write_bytes(b"")
    rec = Recorder([(0, f"{vm.GUEST_UP} (kernel k, kvm)\n")])
    res = vm.run(cfg(), ["true"], runner=rec, kvm_dev=str(kvm))
    assert res.accel == "kvm" and res.returncode == 0 and len(rec.calls) == 1 and not res.notes


def test_without_dev_kvm_auto_says_why_and_kvm_refuses(tmp_path):
    rec = Recorder([(0, f"{vm.GUEST_UP}\n")])
    res = vm.run(cfg(), ["true"], runner=rec, kvm_dev=str(tmp_path / "nokvm"))
    assert res.accel == "tcg" and "does not exist" in res.notes[0]
    with pytest.raises(vm.LabError, match="--accel kvm: .*does not exist"):
        vm.run(cfg(accel="kvm"), ["true"], runner=rec, kvm_dev=str(tmp_path / "nokvm"))


FACTS = {"qemu": "/usr/bin/qemu-system-x86_64", "busybox": "/bin/busybox", "vng": "/v/vng",
         "kernels": ["/boot/vmlinuz-6.12.118+deb12-amd64"], "rdma": "/usr/bin/rdma",
         "rxe_provider": "/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so",
         "venv_python": "/p/.venv-lab/bin/python", "pyverbs": True, "kvm": None}


def test_check_all_present_is_ready():
    items = check.evaluate(FACTS)
    assert check.ready(items) and all(i.fix is None for i in items)


@pytest.mark.parametrize("key, value, name, fix", [
    ("qemu", None, "qemu", "qemu-system-x86"),
    ("busybox", None, "busybox", "busybox-static"),
    ("kernels", [], "kernel with rdma_rxe", check.KERNEL_PACKAGE),
    ("rxe_provider", None, "rxe verbs provider", "ibverbs-providers"),
    ("pyverbs", "ModuleNotFoundError: No module named 'pyverbs'", "lab venv with pyverbs", "--system-site-packages"),
    ("venv_python", None, "lab venv with pyverbs", "python3-pyverbs"),
])
def test_check_names_what_is_missing_and_its_install_command(key, value, name, fix):
    items = check.evaluate({**FACTS, key: value})
    bad = [i for i in items if not i.ok]
    assert not check.ready(items) and [i.name for i in bad] == [name] and fix in bad[0].fix


def test_check_reports_tcg_when_kvm_cannot_be_tried():
    acc = [i for i in check.evaluate({**FACTS, "kvm": "/dev/kvm does not exist"}) if i.name == "accelerator"][0]
    assert acc.ok and "TCG" in acc.detail and "not meaningful" in acc.detail


def test_setup_commands_install_every_package_and_the_venv():
    cmds = check.setup_commands("/p", matrix=True)
    joined = "\n".join(cmds)
    for pkg in (*check.APT_PACKAGES, check.MATRIX_KERNEL_PACKAGE):
        assert pkg in joined
    assert "/usr/bin/python3 -m venv --system-site-packages /p/.venv-lab" in joined
    assert "bookworm-backports" in cmds[0] and cmds[1] == "apt-get update -qq"


def test_env_outside_and_inside_the_lab():
    assert env.virtualized({}) is None and env.time_scale({}) == 1.0
    assert env.virtualized({env.LAB_ENV: "TCG"}) == "tcg" and env.time_scale({env.LAB_ENV: "tcg"}) > 1
    assert env.virtualized({env.LAB_ENV: "xen"}) is None


@pytest.mark.parametrize("argv, msg", [
    (["lab", "run", "--kernel", "/nonexistent/vmlinuz-1", "--", "true"], "--kernel /nonexistent/vmlinuz-1: no such file"),
    (["lab", "run", "--memory", "lots", "--kernel", "/nonexistent/vmlinuz-1", "--", "true"], "no such file"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_under_tcg_timing_slos_are_shown_but_not_judged_integrity_still_is():
    from pytest_kvfabric.measure import slo

    metrics = {"latency_us": {"p99": 5e6}, "retransmits": 3,
               "data_path": {"sender": {"zero_copy": False, "description": "copied"}}}
    spec = {"p99_latency_us": 1000, "max_retransmits": 0, "require_zero_copy": True}
    host = {v.key: v for v in slo.check(spec, metrics)}
    tcg = {v.key: v for v in slo.check(spec, metrics, virtualized="tcg")}
    assert not host["p99_latency_us"].passed and host["p99_latency_us"].row[-1] == "FAIL"
    assert tcg["p99_latency_us"].passed and not tcg["p99_latency_us"].judged
    assert tcg["p99_latency_us"].row == ("latency p99", "5e+06", "<= 1000 µs", "not judged")
    assert not tcg["max_retransmits"].passed and not tcg["require_zero_copy"].passed
    assert {v.key: v.passed for v in slo.check(spec, metrics, virtualized="kvm")} == {
        k: v.passed for k, v in host.items()}


def test_fingerprint_records_virtualized_only_inside_the_lab(monkeypatch):
    from pytest_kvfabric.report import fingerprint

    monkeypatch.delenv(env.LAB_ENV, raising=False)
    assert "virtualized" not in fingerprint.fingerprint()
    monkeypatch.setenv(env.LAB_ENV, "tcg")
    assert fingerprint.fingerprint()["virtualized"] == "tcg"


def test_fingerprint_diff_names_the_kernel_change_and_tcg():
    from pytest_kvfabric.report import fpdiff

    old = {"environment": {"kernel": "6.1.0-50-amd64", "virtualized": "tcg", "cpus": 2}}
    new = {"environment": {"kernel": "6.12.118+deb12-amd64", "virtualized": "tcg", "cpus": 2}}
    diffs = fpdiff.diff(old, new)
    assert [d.line() for d in diffs] == ["kernel: 6.1.0-50-amd64 -> 6.12.118+deb12-amd64"]
    assert "TCG" in fpdiff.render(diffs, tcg=fpdiff.ran_under_tcg(old, new)).splitlines()[-1]
    assert fpdiff.diff({"environment": {"kernel": "a"}}, {"environment": {"kernel": "a"}}) == []
    moved = fpdiff.diff({"environment": {}}, {"environment": {"virtualized": "kvm"}})
    assert [(d.what, d.warning) for d in moved] == [("virtualized", True)]
