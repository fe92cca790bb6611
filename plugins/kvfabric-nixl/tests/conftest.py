"""Shared by the plug-in's tests: real runs need NIXL; without it they skip with the probe's reason."""
from __future__ import annotations

import pytest

from kvfabric_nixl.transport import NixlTransport

SUITE = """
suite: nixl-plugin
defaults: {gpu: h100, models: [llama3.1-8b], pool_mib: 16, seed: 7, pacing: none}
scenarios:
  - {id: size-64k, synthetic: {nbytes: 65536, transfers: 128, batch: 16}}
  - {id: odd-size-unaligned, synthetic: {nbytes: 4099, transfers: 256, batch: 32, offset_skew: 7}}
  - id: small-pool-slot-reuse
    pool_mib: 4
    workload: {isl: 2048, osl: 16, requests: 1}
"""


@pytest.fixture
def engine() -> None:
    cap = NixlTransport.probe({})
    if not cap.available:
        pytest.skip(cap.reason)
