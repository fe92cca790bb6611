"""What a process learns about running inside the lab VM (pure: reads the environment only).

The lab exports KVFABRIC_LAB=<tcg|kvm> inside the VM. Everything that depends on it reads
it here: the report's fingerprint ("virtualized"), the summary's warning, and the runner's
setup/run margins (QEMU's TCG emulates every instruction, 10-50x slower than the host)."""
from __future__ import annotations

import os
from typing import Mapping

LAB_ENV = "KVFABRIC_LAB"
ACCELERATORS = ("tcg", "kvm")
# TCG: agent start (python + numpy imports) alone takes ~20-40 s on a busy 2-core host.
TIME_SCALE = {"tcg": 20.0, "kvm": 1.0}
TCG_NOTE = ("virtualized: tcg (QEMU software emulation): timings and timing SLOs are not "
            "meaningful here; only the data path and page integrity are")


def virtualized(environ: Mapping[str, str] | None = None) -> str | None:
    """'tcg' or 'kvm' inside the lab VM, else None."""
    value = (os.environ if environ is None else environ).get(LAB_ENV, "").strip().lower()
    return value if value in ACCELERATORS else None


def time_scale(environ: Mapping[str, str] | None = None) -> float:
    """How much longer than on a host every setup/run margin must be."""
    return TIME_SCALE.get(virtualized(environ) or "", 1.0)
