"""A third-party transport installed for real (a dist-info with an entry point) and run."""
from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pytest_kvfabric.errors import TransportError
from pytest_kvfabric.transports import registry

from stream_harness import round_trip

HERE = Path(__file__).parent
NAME = "tcp-loopback-only"


def install(site: Path) -> Path:
    """What `pip install kvf-example` would leave in site-packages: the module and a dist-info."""
    shutil.copy(HERE / "example_transport" / "kvf_example_transport.py", site)
    dist = site / "kvf_example-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kvf-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[pytest_kvfabric.transports]\n"
        f"{NAME} = kvf_example_transport:LoopbackOnlyTransport\n"
    )
    return site


@pytest.fixture
def installed(tmp_path, monkeypatch):
    site = install(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("kvf_example_transport", None)


def test_not_known_before_install():
    from importlib.metadata import entry_points

    owner = [ep for ep in entry_points(group=registry.ENTRY_POINT_GROUP) if ep.name == NAME]
    if owner:  # `pip install tests/example_transport` was run in this environment
        pytest.skip(f"{NAME} is installed here (entry point {owner[0].value}); "
                    f"this test needs an environment without it")
    assert NAME not in registry.available_names()


def test_packaging_file_declares_the_same_entry_point():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

    meta = tomllib.loads((HERE / "example_transport" / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"][registry.ENTRY_POINT_GROUP]
    assert eps == {NAME: "kvf_example_transport:LoopbackOnlyTransport"}
    assert meta["tool"]["setuptools"]["py-modules"] == ["kvf_example_transport"]


def test_registry_finds_it(installed):
    names = registry.available_names()
    assert NAME in names and names.index(NAME) >= 5  # after the built-ins
    cls = registry.get_transport(NAME)
    assert cls.name == NAME and cls.__module__ == "kvf_example_transport"
    cap = registry.probe(NAME)
    assert cap.available and cap.data_path == "kernel TCP over the loopback device only"


def test_it_moves_bytes(installed):
    cls = registry.get_transport(NAME)
    served, src, comps, dp, _ = round_trip(cls, [100_000, 5], [0, 100_000], [3, 200_000], 300_000)
    assert sorted(comps["xfer"].tolist()) == [0, 1]
    assert np.array_equal(served.arr[3:100_003], src[:100_000])
    assert np.array_equal(served.arr[200_000:200_005], src[100_000:100_005])
    assert dp["transport"] == NAME and dp["description"] == "kernel TCP over the loopback device only"
    served.close()


def test_its_own_rules_apply(installed):
    cls = registry.get_transport(NAME)
    with pytest.raises(TransportError, match="refusing to connect to 10.0.0.1"):
        cls.initiator(cls.allocate(10, {}), {}).connect({"host": "10.0.0.1", "port": 1}, 1)


def test_installed_in_a_fresh_interpreter(tmp_path):
    """As a user's process sees it: only PYTHONPATH points at the 'installed' package."""
    site = install(tmp_path)
    code = textwrap.dedent(
        f"""
        import json
        from pytest_kvfabric.transports import registry
        cap = registry.probe({NAME!r})
        print(json.dumps({{"names": registry.available_names(), "available": cap.available,
                           "cls": registry.get_transport({NAME!r}).__name__}}))
        """
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert NAME in res["names"] and res["available"] and res["cls"] == "LoopbackOnlyTransport"
