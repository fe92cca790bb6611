"""The agent bootstrap keeps OpenBLAS to one thread: agents do no BLAS work, and idle BLAS
workers spin for a tenth of a CPU second after numpy loads, on hosts with two cores."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pytest_kvfabric.fabric.bootstrap import AGENT_BOOTSTRAP
from pytest_kvfabric.fabric.transport_probe import PROBE_SOURCE

_THREADS_AFTER_NUMPY = """
import os
import numpy  # noqa: F401
print(len(os.listdir("/proc/self/task")))
"""


def _threads(prelude: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", prelude + _THREADS_AFTER_NUMPY], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: OpenBLAS starts no worker threads anyway")
def test_bootstrap_prelude_keeps_openblas_single_threaded():
    if _threads("") == 1:
        pytest.skip("this numpy build starts no BLAS worker threads")
    for source in (AGENT_BOOTSTRAP, PROBE_SOURCE):  # agents, and probes sent to a host's gateway
        prelude = source.split("try:")[0]  # what runs before pytest_kvfabric (and numpy) loads
        assert _threads(prelude) == 1
