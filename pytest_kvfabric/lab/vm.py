"""Boot the lab VM and run one command in it (virtme-ng over QEMU).

The guest sees this machine's root filesystem copy-on-write (virtme-ng), with the project
directory writable through to the host (results and baselines written inside persist).
Before CMD the guest loads rdma_rxe and creates a soft-RoCE device on lo, so `rdma`
runs on a real verbs provider; KVFABRIC_LAB tells the code inside which accelerator runs it.

Accelerator: KVM when /dev/kvm is usable and a KVM boot reaches the guest; otherwise TCG
(software emulation), and the caller is told why. The pure parts (kernel choice, guest
script, vng command line, the KVM verdict) take their inputs as arguments.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .env import LAB_ENV

GUEST_UP = "kvfabric-lab: guest up"
RXE_MODULE = "kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko"
_MEMORY = re.compile(r"^[1-9][0-9]*[MG]$")
# What QEMU prints when nested KVM cannot run the guest (seen here: an MSR assertion; elsewhere
# "KVM internal error ... emulation failure").
_KVM_FAILED = re.compile(r"KVM internal error|emulation failure|kvm_buf_set_msrs|failed to set MSR|"
                         r"Could not access KVM kernel module|failed to initialize kvm", re.I)


class LabError(Exception):
    """The lab cannot run (bad option, missing piece): one line, the fix named."""


@dataclass(frozen=True)
class LabConfig:
    kernel: str
    project: str
    venv: str
    memory: str = "3G"
    cpus: int = 2
    accel: str = "auto"  # auto | kvm | tcg
    timeout_s: float = 1800.0
    rxe_netdevs: tuple[str, ...] = ("lo",)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _MEMORY.match(self.memory):
            raise LabError(f"--memory {self.memory!r}: expected a size like 3G or 2048M")
        if not 1 <= self.cpus <= 64:
            raise LabError(f"--cpus {self.cpus}: expected 1..64")
        if self.accel not in ("auto", "kvm", "tcg"):
            raise LabError(f"--accel {self.accel!r}: expected auto, kvm or tcg")
        if not self.timeout_s > 0:
            raise LabError(f"--timeout {self.timeout_s}: expected a positive number of seconds")


def kernel_release(kernel: str) -> str:
    """'6.12.118+deb12-amd64' from '/boot/vmlinuz-6.12.118+deb12-amd64'."""
    base = os.path.basename(kernel)
    if not base.startswith("vmlinuz-"):
        raise LabError(f"--kernel {kernel}: expected a /boot/vmlinuz-<release> image")
    return base[len("vmlinuz-"):]


def has_rxe(release: str, modules_root: str = "/lib/modules") -> bool:
    return bool(glob.glob(os.path.join(modules_root, release, RXE_MODULE) + "*"))


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", release)[:4])


def pick_kernel(boot_dir: str = "/boot", modules_root: str = "/lib/modules") -> str:
    """The newest /boot/vmlinuz-* whose modules include rdma_rxe."""
    found = [k for k in glob.glob(os.path.join(boot_dir, "vmlinuz-*"))
             if has_rxe(kernel_release(k), modules_root)]
    if not found:
        raise LabError(f"no kernel in {boot_dir} with the rdma_rxe module; run `kvfabric lab check` "
                       "for the install command")
    return max(found, key=lambda k: _release_key(kernel_release(k)))


def check_kernel(kernel: str, modules_root: str = "/lib/modules") -> str:
    if not os.path.isfile(kernel):
        raise LabError(f"--kernel {kernel}: no such file")
    release = kernel_release(kernel)
    if not os.path.isdir(os.path.join(modules_root, release)):
        raise LabError(f"--kernel {kernel}: no modules in {modules_root}/{release} (install the "
                       f"linux-image-{release}-unsigned package, not only the image)")
    if not has_rxe(release, modules_root):
        raise LabError(f"--kernel {kernel}: its modules have no rdma_rxe (soft-RoCE); pick a "
                       "distribution kernel built with CONFIG_RDMA_RXE=m")
    return release


def guest_script(cfg: LabConfig, accel: str, cmd: Sequence[str]) -> str:
    """The shell script the guest runs: soft-RoCE up, venv first on PATH, then CMD."""
    if not cmd:
        raise LabError("kvfabric lab run: no command given (usage: kvfabric lab run [options] -- CMD...)")
    lines = [
        "set -u",
        "ip link set lo up",
        "modprobe rdma_rxe || { echo 'kvfabric-lab: modprobe rdma_rxe failed' >&2; exit 97; }",
    ]
    for i, dev in enumerate(cfg.rxe_netdevs):
        name = f"rxe{i}"
        lines.append(f"rdma link add {name} type rxe netdev {shlex.quote(dev)} || "
                     f"{{ echo 'kvfabric-lab: rdma link add {name} on {dev} failed' >&2; exit 97; }}")
    env = {LAB_ENV: accel, "VIRTUAL_ENV": cfg.venv, **cfg.env}
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines += [
        f'export PATH={shlex.quote(os.path.join(cfg.venv, "bin"))}:"$PATH"',
        f"cd {shlex.quote(cfg.project)}",
        f'echo "{GUEST_UP} (kernel $(uname -r), {accel})"',
        shlex.join(cmd),
    ]
    return "\n".join(lines)


def vng_argv(cfg: LabConfig, accel: str, script: str, vng: str = "vng") -> list[str]:
    argv = [vng, "--run", cfg.kernel, "--memory", cfg.memory, "--cpus", str(cfg.cpus),
            "--rwdir", cfg.project]
    if accel == "tcg":
        argv.append("--disable-kvm")
    # bash -c keeps the script one argument whatever vng does with --exec's string
    return argv + ["--exec", f"bash -c {shlex.quote(script)}"]


def kvm_unusable_reason(dev: str = "/dev/kvm") -> str | None:
    """Why KVM cannot even be tried (None: try it)."""
    if not os.path.exists(dev):
        return f"{dev} does not exist"
    if not os.access(dev, os.R_OK | os.W_OK):
        return f"{dev} is not readable and writable by this user"
    return None


def kvm_failed(output: str) -> str | None:
    """The QEMU line that shows a KVM boot failed before the guest ran, else None."""
    if GUEST_UP in output:
        return None
    for line in output.splitlines():
        if _KVM_FAILED.search(line):
            return line.strip()
    return None


@dataclass
class LabRun:
    accel: str
    returncode: int
    output: str
    notes: list[str]
    wall_s: float


Runner = Callable[[list[str], float], "tuple[int, str]"]


def _subprocess_runner(argv: list[str], timeout_s: float, echo: bool = True) -> tuple[int, str]:
    """Run argv, echoing its output while collecting it; kill it at the timeout."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    import selectors

    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    sel.register(proc.stdout, selectors.EVENT_READ)
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        if not sel.select(min(left, 1.0)):
            continue
        data = os.read(proc.stdout.fileno(), 65536)
        if not data:
            break
        chunks.append(data)
        if echo:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    sel.close()
    if timed_out:
        try:
            os.killpg(proc.pid, 9)  # QEMU and vng run in their own session: end all of it
        except ProcessLookupError:
            pass
    rc = proc.wait(timeout=30)
    proc.stdout.close()
    out = b"".join(chunks).decode(errors="replace")
    if timed_out:
        return 124, out + f"\nkvfabric-lab: the VM ran past --timeout {timeout_s:.0f} s and was killed\n"
    return rc, out


def run(cfg: LabConfig, cmd: Sequence[str], runner: Runner | None = None,
        kvm_dev: str = "/dev/kvm", vng: str = "vng") -> LabRun:
    """Boot, run cmd, return its exit status and output. Auto: KVM first, TCG if it fails."""
    run_argv = runner or (lambda argv, t: _subprocess_runner(argv, t))
    notes: list[str] = []
    t0 = time.monotonic()
    accel = cfg.accel
    if accel in ("auto", "kvm"):
        why = kvm_unusable_reason(kvm_dev)
        if why is None:
            rc, out = run_argv(vng_argv(cfg, "kvm", guest_script(cfg, "kvm", cmd), vng),
                               min(cfg.timeout_s, 120.0) if accel == "auto" else cfg.timeout_s)
            failed = kvm_failed(out) or (f"the KVM boot ended (status {rc}) before the guest ran"
                                         if GUEST_UP not in out else None)
            if failed is None or accel == "kvm":
                if failed is not None:
                    notes.append(f"KVM failed: {failed}")
                return LabRun("kvm", rc, out, notes, time.monotonic() - t0)
            notes.append(f"KVM failed ({failed}); falling back to TCG (software emulation)")
        elif accel == "kvm":
            raise LabError(f"--accel kvm: {why}")
        else:
            notes.append(f"KVM not used ({why}); using TCG (software emulation)")
    rc, out = run_argv(vng_argv(cfg, "tcg", guest_script(cfg, "tcg", cmd), vng), cfg.timeout_s)
    return LabRun("tcg", rc, out, notes, time.monotonic() - t0)
