"""The native hot path under AddressSanitizer: every read and write of _fast.c stays inside
its buffers while the differential tests drive it.

The differential tests compare answers and state with the Python twins; an out-of-bounds
read that happens not to change an answer (a header read past the end of the region, say)
passes them. Here _fast.c is compiled with -fsanitize=address and the same tests run in a
child process with libasan preloaded, so any such access aborts the child with a report.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "pytest_kvfabric" / "endpoint" / "_fast.c"
TESTS = ["tests/test_slotbook.py", "tests/test_pattern.py", "tests/test_pacing_vclock.py"]

# Load the instrumented module under the package's name before anything imports _fast.
RUNNER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("pytest_kvfabric.endpoint._fast", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import pytest_kvfabric.endpoint as ep
    sys.modules["pytest_kvfabric.endpoint._fast"] = ep._fast = mod
    from pytest_kvfabric.endpoint import pattern, slotbook
    assert slotbook.NativeSlotBook is mod.SlotBook and pattern._NativeLedgerFast is mod.LedgerFast
    import pytest
    sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[2:]]))
""")


def _compiler_and_asan() -> tuple[str, str]:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}): the native extension is not built here")
    lib = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True, timeout=30).stdout.strip()
    if not lib or not os.path.isabs(lib) or not os.path.exists(lib):
        pytest.skip(f"{cc} has no AddressSanitizer runtime (libasan.so not found)")
    return cc, lib


def test_native_hot_path_has_no_out_of_bounds_access_under_the_differential_tests(tmp_path):
    cc, libasan = _compiler_and_asan()
    so = tmp_path / ("_fast" + sysconfig.get_config_var("EXT_SUFFIX"))
    build = subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-g", "-std=c11", "-fsanitize=address", "-fno-omit-frame-pointer",
         f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(so)],
        capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    (tmp_path / "run.py").write_text(RUNNER)
    log = tmp_path / "asan"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    env = {**env, "LD_PRELOAD": libasan,
           # Python itself leaks by design at exit; out-of-bounds access is what we look for.
           "ASAN_OPTIONS": f"detect_leaks=0:log_path={log}"}
    res = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(so), *TESTS], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    reports = "\n".join(p.read_text() for p in tmp_path.glob("asan*"))
    assert res.returncode == 0 and not reports, (reports or res.stdout[-3000:]) + res.stderr[-2000:]
    assert " passed" in res.stdout  # the tests really ran under the instrumented module
