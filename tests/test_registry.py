"""The transport registry: names, lazy imports, unknown names, import failures as capabilities."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from pytest_kvfabric.errors import UnknownIdError
from pytest_kvfabric.transports import registry
from pytest_kvfabric.transports.base import Capability, Transport

BUILTINS = ["tcp", "zerocopy", "iouring", "devmem", "rdma"]


def test_builtin_names_come_first():
    names = registry.available_names()
    assert names[: len(BUILTINS)] == BUILTINS
    assert len(names) == len(set(names))


def test_get_transport_by_name():
    tcp = registry.get_transport("tcp")
    zc = registry.get_transport("zerocopy")
    assert issubclass(tcp, Transport) and tcp.name == "tcp"
    assert issubclass(zc, Transport) and zc.name == "zerocopy"


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownIdError) as info:
        registry.get_transport("carrier-pigeon")
    msg = str(info.value)
    assert "unknown transport 'carrier-pigeon'" in msg
    for name in BUILTINS:
        assert name in msg
    assert info.value.valid == sorted(registry.available_names())


def test_importing_the_registry_imports_no_transport():
    code = textwrap.dedent(
        """
        import json, sys
        import pytest_kvfabric.transports.registry as r
        r.available_names()
        heavy = ("liburing", "pyroute2", "pyverbs", "pytest_kvfabric.transports.tcp",
                 "pytest_kvfabric.transports.zerocopy", "pytest_kvfabric.transports.iouring",
                 "pytest_kvfabric.transports.devmem", "pytest_kvfabric.transports.rdma")
        before = sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy
                        or any(m.startswith(h + ".") for h in heavy))
        r.get_transport("tcp")
        after = "pytest_kvfabric.transports.tcp" in sys.modules
        print(json.dumps({"before": before, "tcp_after": after}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["before"] == []
    assert res["tcp_after"] is True  # and the lookup really imports it


def test_probe_of_unimportable_transport_is_missing(monkeypatch, tmp_path):
    (tmp_path / "kvf_broken_transport.py").write_text(
        "import liburing_that_does_not_exist\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.BUILTIN, "broken", "kvf_broken_transport:BrokenTransport")
    cap = registry.probe("broken")
    assert isinstance(cap, Capability) and not cap.available
    assert "transport 'broken' could not be imported" in cap.reason
    assert "liburing_that_does_not_exist" in cap.reason
    assert "broken" in registry.available_names()


def test_probe_of_missing_module_is_missing(monkeypatch):
    monkeypatch.setitem(registry.BUILTIN, "ghost", "kvf_no_such_module_at_all:Ghost")
    cap = registry.probe("ghost")
    assert not cap.available and "kvf_no_such_module_at_all" in cap.reason


def test_probe_unknown_name_raises():
    with pytest.raises(UnknownIdError):
        registry.probe("nope")


@pytest.mark.parametrize("name", ["tcp", "zerocopy"])
def test_probe_available_here(name):
    cap = registry.probe(name, {})
    assert cap.available and cap.reason == "" and cap.data_path
