"""Fixtures shared by several test files."""
from __future__ import annotations

import subprocess
import uuid
from typing import Iterator, NamedTuple

import pytest


class VethNetns(NamedTuple):
    name: str
    ifname: str
    ifindex: int


@pytest.fixture
def veth_netns() -> Iterator[VethNetns]:
    """A network namespace of our own ("kvft7-" prefix) holding an up veth pair; deleted in teardown."""
    name = f"kvft7-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
    if r.returncode:
        pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "kvdm0", "type", "veth", "peer", "name", "kvdm1"],
                       check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "-n", name, "link", "set", "kvdm0", "up"], check=True, timeout=10)
        out = subprocess.run(["ip", "-n", name, "-o", "link", "show", "kvdm0"], capture_output=True,
                             text=True, check=True, timeout=10).stdout
        yield VethNetns(name, "kvdm0", int(out.split(":", 1)[0]))
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
