"""The hosts fabric through the plugin: inventory errors, worker counts, unreachable hosts."""
from __future__ import annotations

import pytest

HOST = """
        ssh: kv@127.0.0.1
        port: {port}
        data_addr: 127.0.0.1
        interface: lo"""


def _inventory(pairs: int, port: int = 1) -> str:
    body = "pairs:\n"
    for i in range(pairs):
        body += f"  - name: pair{i}\n    prefill:{HOST.format(port=port)}\n    decode:{HOST.format(port=port)}\n"
    return body


USES = """
def test_x(kv_run):
    kv_run()
"""


def test_auto_starts_one_worker_per_inventory_pair(pytester):
    pytester.makefile(".yaml", lab=_inventory(2))
    pytester.makepyfile(USES)
    # Nothing listens on the inventory's SSH port, so the case fails fast; what matters is the count.
    result = pytester.runpytest("-n", "auto", "--kv-fabric=hosts", "--kv-hosts=lab.yaml")
    assert "created: 2/2 workers" in result.stdout.str()


def test_more_workers_than_pairs_is_a_usage_error(pytester):
    pytester.makefile(".yaml", lab=_inventory(2))
    pytester.makepyfile(USES)
    result = pytester.runpytest("-n", "3", "--kv-fabric=hosts", "--kv-hosts=lab.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "3 workers but only 2 host pairs in lab.yaml" in result.stderr.str()


def test_bad_inventory_is_a_usage_error_naming_file_and_field(pytester):
    pytester.makefile(".yaml", lab="pairs:\n  - name: a\n    prefill: {ssh: x, data_addr: 10.0.0.1}\n")
    pytester.makepyfile(USES)
    result = pytester.runpytest("--kv-fabric=hosts", "--kv-hosts=lab.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "lab.yaml" in err and "decode" in err


def test_unreachable_host_fails_the_case_naming_host_and_cause(pytester):
    # Port 1 on loopback: nothing listens, the connect is refused at once.
    pytester.makefile(".yaml", lab=_inventory(1, port=1))
    pytester.makepyfile(USES)
    result = pytester.runpytest("--kv-fabric=hosts", "--kv-hosts=lab.yaml", "--kv-json=r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fabric hosts: HostUnreachable: host pair0/prefill (127.0.0.1:1): cannot reach SSH*"])
