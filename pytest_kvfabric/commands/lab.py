"""`kvfabric lab run|check|setup`: the soft-RoCE lab VM (see pytest_kvfabric/lab/)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Sequence

from ..lab import check as lab_check
from ..lab import vm
from ..lab.env import TCG_NOTE


def _project_root() -> str:
    """The checkout this package runs from (the lab exposes it to the guest)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="run a command in a VM with soft-RoCE (rdma_rxe) devices")
    lsub = p.add_subparsers(dest="lab_command", metavar="{run,check,setup}")
    lsub.required = True
    r = lsub.add_parser("run", help="boot the lab VM, run CMD in it, return its exit status and output",
                        usage="kvfabric lab run [options] -- CMD...")
    r.add_argument("--kernel", help="kernel image (default: the newest /boot/vmlinuz-* with rdma_rxe)")
    r.add_argument("--memory", default="3G", help="guest memory (default 3G)")
    r.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    r.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"),
                   help="auto: KVM when it boots, else TCG (default)")
    r.add_argument("--timeout", type=float, default=1800.0, help="kill the VM after this many seconds (default 1800)")
    r.add_argument("--venv", help=f"venv used inside (default: <project>/{lab_check.LAB_VENV})")
    r.add_argument("--rxe", action="append", metavar="NETDEV",
                   help="create a soft-RoCE device on NETDEV (repeatable; default lo)")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD...")
    r.set_defaults(func=run_cmd)
    c = lsub.add_parser("check", help="say what the lab needs, what is installed and how to install the rest")
    c.set_defaults(func=check_cmd)
    s = lsub.add_parser("setup", help="install the lab (Debian packages, the lab venv); needs root")
    s.add_argument("--matrix", action="store_true", help="also install a second kernel for the kernel matrix")
    s.add_argument("--dry-run", action="store_true", help="print the commands only")
    s.set_defaults(func=setup_cmd)


def build_config(args: argparse.Namespace, project: str) -> vm.LabConfig:
    kernel = args.kernel or vm.pick_kernel()
    vm.check_kernel(kernel)
    venv = os.path.abspath(args.venv) if args.venv else os.path.join(project, lab_check.LAB_VENV)
    if not os.access(os.path.join(venv, "bin", "python"), os.X_OK):
        raise vm.LabError(f"--venv {venv}: no python there; run `kvfabric lab setup` (or `kvfabric lab check`)")
    return vm.LabConfig(kernel=kernel, project=project, venv=venv, memory=args.memory, cpus=args.cpus,
                        accel=args.accel, timeout_s=args.timeout, rxe_netdevs=tuple(args.rxe or ("lo",)))


def strip_dashes(cmd: Sequence[str]) -> list[str]:
    cmd = list(cmd)
    return cmd[1:] if cmd and cmd[0] == "--" else cmd


def run_cmd(args: argparse.Namespace) -> int:
    project = _project_root()
    try:
        cfg = build_config(args, project)
        cmd = strip_dashes(args.cmd)
        vm.guest_script(cfg, "tcg", cmd)  # validates cmd before anything boots
        vng = lab_check.which("vng", (os.path.join(cfg.venv, "bin"), os.path.dirname(sys.executable)))
        if vng is None:
            raise vm.LabError("virtme-ng (vng) not found; run `kvfabric lab check`")
        # vng runs its helpers (virtme-run) from PATH
        os.environ["PATH"] = os.path.dirname(vng) + os.pathsep + os.environ.get("PATH", "")
        res = vm.run(cfg, cmd, vng=vng)
    except vm.LabError as exc:
        sys.stderr.write(f"kvfabric lab: error: {exc}\n")
        return 2
    for note in res.notes:
        sys.stderr.write(f"kvfabric lab: {note}\n")
    sys.stderr.write(f"kvfabric lab: {os.path.basename(cfg.kernel)} under {res.accel.upper()}, "
                     f"exit status {res.returncode}, {res.wall_s:.0f} s"
                     + (f"; {TCG_NOTE}" if res.accel == "tcg" else "") + "\n")
    return 128 - res.returncode if res.returncode < 0 else res.returncode  # killed by a signal: 128+N


def check_cmd(args: argparse.Namespace) -> int:
    project = _project_root()
    items = lab_check.evaluate(lab_check.gather(project))
    for it in items:
        print(f"{'ok' if it.ok else 'MISSING':8} {it.name}: {it.detail}")
        if it.fix:
            print(f"{'':8}   install: {it.fix}")
    if lab_check.ready(items):
        print("lab ready: kvfabric lab run -- CMD...")
        return 0
    print("install everything at once (as root): kvfabric lab setup")
    return 1


def setup_cmd(args: argparse.Namespace) -> int:
    cmds = lab_check.setup_commands(_project_root(), matrix=args.matrix)
    for c in cmds:
        print(f"+ {c}", flush=True)
        if not args.dry_run and subprocess.run(["bash", "-c", c]).returncode != 0:
            sys.stderr.write(f"kvfabric lab setup: failed: {c}\n")
            return 1
    return 0
