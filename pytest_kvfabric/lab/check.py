"""`kvfabric lab check`: what the lab needs, what is installed, and the commands that install
the rest. gather() reads the machine; evaluate() is pure (facts in, verdicts out).

Everything comes from registries this project already uses: Debian packages (the 6.12
kernel from bookworm-backports) and PyPI (virtme-ng into the lab venv). The lab venv is made
from Debian's /usr/bin/python3 with --system-site-packages because Debian's python3-pyverbs
is the only pyverbs that matches Debian's libibverbs (PyPI's pyverbs 59 needs rdma-core 59).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Mapping

from . import vm

KERNEL_PACKAGE = "linux-image-6.12.118+deb12-amd64-unsigned"  # bookworm-backports
# A second kernel for the kernel matrix (functional only under TCG).
MATRIX_KERNEL_PACKAGE = "linux-image-6.1.0-50-amd64-unsigned"  # bookworm
APT_PACKAGES = ("qemu-system-x86", "busybox-static", "rdma-core", "ibverbs-providers", "ibverbs-utils",
                "python3-pyverbs", "python3-venv", "iproute2", KERNEL_PACKAGE)
BACKPORTS_LIST = "/etc/apt/sources.list.d/kvfabric-backports.list"
BACKPORTS_LINE = "deb http://deb.debian.org/debian bookworm-backports main"
LAB_VENV = ".venv-lab"
SYSTEM_PYTHON = "/usr/bin/python3"


def setup_commands(project: str, matrix: bool = False) -> list[str]:
    """The shell commands that install the lab (what `kvfabric lab setup` runs)."""
    venv = os.path.join(project, LAB_VENV)
    pkgs = " ".join(APT_PACKAGES + ((MATRIX_KERNEL_PACKAGE,) if matrix else ()))
    return [
        f"grep -qs bookworm-backports {BACKPORTS_LIST} || echo '{BACKPORTS_LINE}' > {BACKPORTS_LIST}",
        "apt-get update -qq",
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {pkgs}",
        f"{SYSTEM_PYTHON} -m venv --system-site-packages {venv}",
        f"{venv}/bin/pip install -q -e '{project}[dev,lab]'",
    ]


@dataclass(frozen=True)
class Item:
    name: str
    ok: bool
    detail: str
    fix: str | None = None  # the command (or step) that installs it; None when ok


def evaluate(facts: Mapping[str, Any]) -> list[Item]:
    """Verdicts from facts (keys as gather() returns them)."""
    items: list[Item] = []

    def add(name: str, ok: bool, detail: str, fix: str) -> None:
        items.append(Item(name, ok, detail, None if ok else fix))

    add("qemu", bool(facts.get("qemu")), facts.get("qemu") or "qemu-system-x86_64 not found",
        "apt-get install qemu-system-x86")
    add("busybox", bool(facts.get("busybox")), facts.get("busybox") or "busybox not found (virtme-ng's initramfs needs it)",
        "apt-get install busybox-static")
    add("virtme-ng", bool(facts.get("vng")), facts.get("vng") or "vng not found in the lab venv nor on PATH",
        f"{LAB_VENV}/bin/pip install virtme-ng")
    kernels = facts.get("kernels") or []
    add("kernel with rdma_rxe", bool(kernels),
        ", ".join(kernels) if kernels else "no /boot/vmlinuz-* with the rdma_rxe module",
        f"apt-get install {KERNEL_PACKAGE} (from bookworm-backports)")
    add("rdma tool", bool(facts.get("rdma")), facts.get("rdma") or "`rdma` (iproute2) not found",
        "apt-get install iproute2")
    add("rxe verbs provider", bool(facts.get("rxe_provider")),
        facts.get("rxe_provider") or "librxe provider of libibverbs not found",
        "apt-get install rdma-core ibverbs-providers")
    py = facts.get("venv_python")
    pyv = facts.get("pyverbs")
    add("lab venv with pyverbs", bool(py) and pyv is True,
        f"{py}: imports pyverbs" if py and pyv is True else
        f"{py}: {pyv}" if py else f"no {LAB_VENV} venv",
        f"apt-get install python3-pyverbs && {SYSTEM_PYTHON} -m venv --system-site-packages {LAB_VENV} "
        f"&& {LAB_VENV}/bin/pip install -e '.[dev,lab]'")
    kvm = facts.get("kvm")
    items.append(Item("accelerator", True, "KVM will be tried first, TCG if it fails" if kvm is None
                      else f"TCG (software emulation): {kvm}; timings under TCG are not meaningful"))
    return items


def ready(items: list[Item]) -> bool:
    return all(i.ok for i in items)


def which(name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    for d in extra_dirs:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return shutil.which(name)


def venv_python(project: str) -> str | None:
    p = os.path.join(project, LAB_VENV, "bin", "python")
    return p if os.access(p, os.X_OK) else None


def gather(project: str, boot_dir: str = "/boot", modules_root: str = "/lib/modules") -> dict[str, Any]:
    """Read this machine (files, PATH, one python subprocess)."""
    venv_bin = os.path.join(project, LAB_VENV, "bin")
    kernels = [k for k in sorted(glob.glob(os.path.join(boot_dir, "vmlinuz-*")))
               if vm.has_rxe(vm.kernel_release(k), modules_root)]
    py = venv_python(project)
    pyverbs: Any = None
    if py:
        try:
            r = subprocess.run([py, "-c", "import pyverbs.device"], capture_output=True, text=True, timeout=60)
            pyverbs = True if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import failed"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            pyverbs = f"import pyverbs: {exc}"
    providers = glob.glob("/usr/lib/*/libibverbs/librxe-rdmav*.so") + glob.glob("/usr/lib64/libibverbs/librxe-rdmav*.so")
    return {
        "qemu": which("qemu-system-x86_64"),
        "busybox": which("busybox"),
        "vng": which("vng", (venv_bin,)),
        "kernels": kernels,
        "rdma": which("rdma"),
        "rxe_provider": providers[0] if providers else None,
        "venv_python": py,
        "pyverbs": pyverbs,
        "kvm": vm.kvm_unusable_reason(),
    }
