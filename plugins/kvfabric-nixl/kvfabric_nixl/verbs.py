"""Let the NIXL wheel's bundled libibverbs see the system's verbs providers (rxe, ...).

nixl-cu12 bundles its own libibverbs (rdma-core 48, built on RHEL 8): it looks for providers
only in the directory compiled into it (`/usr/lib64/libibverbs/lib<name>-rdmav<PABI>.so`),
while Debian installs them in `/usr/lib/<triplet>/libibverbs/`. With an RDMA device present
(soft-RoCE `rxe0`), UCX inside NIXL then finds no device at all ("no userspace
device-specific driver found"), and a scenario restricted to RDMA fails with NIXL_ERR_BACKEND.

Two steps fix it without touching the system, both only where a device exists:
- RDMAV_DRIVERS lists each system provider of the same private ABI by absolute path (rdma-core
  loads `<path>-rdmav<PABI>.so` for such an entry);
- the bundled libibverbs is made RTLD_GLOBAL first: a provider registers itself by calling
  `verbs_register_driver_<PABI>`, which the dynamic linker binds in the global scope before
  the provider's own dependency (the system libibverbs); without it the provider would
  register with the system library, and the bundled one would still see no driver.

`plan` is pure (inputs as arguments); `apply` does the I/O, once per process.
"""
from __future__ import annotations

import ctypes
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

# What rdma-core compiles into libibverbs: "<provider dir>/lib%s-rdmav<PABI>.so".
_PROVIDER_FMT = re.compile(rb"(/[A-Za-z0-9_./+-]+)/lib%s-rdmav(\d+)\.so")
SYSTEM_PROVIDER_GLOBS = ("/usr/lib/*/libibverbs/lib*-rdmav*.so", "/usr/lib64/libibverbs/lib*-rdmav*.so")
_DONE: dict[str, "Fix"] = {}


@dataclass(frozen=True)
class Fix:
    """What apply() did (or why not): reported in the data path."""
    bundled: str          # the bundled libibverbs ("" when the engine uses the system one)
    provider_dir: str     # where the bundled library looks for providers
    pabi: str             # its provider ABI version
    drivers: tuple[str, ...]  # system providers added by absolute path
    note: str

    def to_dict(self) -> dict[str, object]:
        return {"bundled_libibverbs": self.bundled, "bundled_provider_dir": self.provider_dir,
                "provider_abi": self.pabi, "added_providers": list(self.drivers), "note": self.note}


def provider_dir_of(lib_bytes: bytes) -> tuple[str, str] | None:
    """(provider dir, PABI) compiled into a libibverbs binary, None if not found."""
    m = _PROVIDER_FMT.search(lib_bytes)
    return (m.group(1).decode(), m.group(2).decode()) if m else None


def plan(provider_dir: str, pabi: str, system_providers: Iterable[str], bundled_dir_files: Iterable[str],
         env_drivers: str = "", wheel_libs: Iterable[str] = ()) -> tuple[tuple[str, ...], str]:
    """(absolute driver stems to add, note). Pure.

    system_providers: paths like /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so;
    bundled_dir_files: file names already in provider_dir (those load without help);
    wheel_libs: file names next to the bundled libibverbs: a provider the wheel carries itself
    (libmlx5-<hash>.so, which UCX's mlx5 module loads) is not loaded a second time."""
    suffix = f"-rdmav{pabi}.so"
    present = set(bundled_dir_files)
    carried = {n.split("-", 1)[0] for n in wheel_libs}
    stems, other_abi = [], []
    for path in sorted(system_providers):
        name = os.path.basename(path)
        if os.path.dirname(path) == provider_dir or name in present or name.split("-", 1)[0] in carried:
            continue
        if not name.endswith(suffix):
            other_abi.append(name)
            continue
        stems.append(path[: -len(suffix)])
    already = set(filter(None, re.split(r"[:;]", env_drivers)))
    stems = [s for s in stems if s not in already]
    if stems:
        note = f"system verbs providers added for the bundled libibverbs (ABI {pabi})"
    elif other_abi:
        note = (f"the system's verbs providers ({', '.join(other_abi[:4])}) are not of the bundled "
                f"libibverbs' provider ABI {pabi}: it cannot load them")
    else:
        note = "no system verbs provider outside the bundled libibverbs' own directory"
    return tuple(stems), note


def bundled_libibverbs(module_file: str) -> str:
    """The libibverbs the wheel bundles (auditwheel's <module>.libs/libibverbs-<hash>.so.*), or ''."""
    base = Path(module_file).resolve().parent
    found = sorted(glob.glob(str(base.parent / f"{base.name}.libs" / "libibverbs-*.so*")))
    return found[0] if found else ""


def apply(module_file: str, environ: Mapping[str, str] | None = None,
          devices_dir: str = "/sys/class/infiniband") -> Fix:
    """Do it for this process, once, before the first agent starts UCX. Only where an RDMA
    device exists: elsewhere nothing is loaded and nothing changes."""
    if "fix" in _DONE:
        return _DONE["fix"]
    env = os.environ if environ is None else environ
    lib = bundled_libibverbs(module_file)
    if not lib:
        fix = Fix("", "", "", (), "the engine uses the system libibverbs")
    elif not (os.path.isdir(devices_dir) and os.listdir(devices_dir)):
        fix = Fix(lib, "", "", (), f"no RDMA device in {devices_dir}: providers left alone")
    else:
        found = provider_dir_of(Path(lib).read_bytes())
        if found is None:
            fix = Fix(lib, "", "", (), "provider directory not found in the bundled libibverbs")
        else:
            pdir, pabi = found
            system = [p for g in SYSTEM_PROVIDER_GLOBS for p in glob.glob(g)]
            own = os.listdir(pdir) if os.path.isdir(pdir) else []
            current = env.get("RDMAV_DRIVERS", "")
            stems, note = plan(pdir, pabi, system, own, current, os.listdir(os.path.dirname(lib)))
            if stems:
                ctypes.CDLL(lib, mode=os.RTLD_GLOBAL)
                os.environ["RDMAV_DRIVERS"] = ":".join(filter(None, [current, *stems]))
            fix = Fix(lib, pdir, pabi, stems, note)
    _DONE["fix"] = fix
    return fix
