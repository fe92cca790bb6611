"""`kvfabric run --store ...`: the store's rows, TTFT with vs without the store, and bad flags."""
from __future__ import annotations

import json

import pytest

from pytest_kvfabric.cli import main
from pytest_kvfabric.run.store_runner import read_reason
from pytest_kvfabric.transports.base import Capability
from pytest_kvfabric.transports.tcp import TcpTransport

SMALL = ["--model", "llama3.1-8b", "--kv-dtype", "fp8", "--isl", "160", "--osl", "4", "--requests", "2",
         "--pool-mib", "16", "--transport", "tcp"]


@pytest.mark.skipif(read_reason("tcp") is not None, reason=str(read_reason("tcp")))
def test_a_prefix_hit_run_shows_ttft_with_and_without_the_store(tmp_path, capsys):
    out = tmp_path / "run.json"
    rc = main(["run", *SMALL, "--store", "prefix", "--store-hit-ratio", "0.8", "--store-dram-mib", "16",
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    for row in ("store hit ratio", "store fetch ms", "exposed to decode ms", "TTFT without store ms",
                "TTFT with store ms", "TTFT saved by hits ms"):
        assert row in text
    s = json.loads(out.read_text())["store"]
    assert s["integrity"] == {"pages_checked": 16, "errors": 0, "first_error": None}  # 2 requests x 8 pages of 16 tokens
    assert s["tokens_fetched"] == 256 and s["tokens_computed"] == 64
    # without = whole prefill + the exposed time of a run without the store, made first on the same agents
    assert s["without_store_run"]["integrity"]["errors"] == 0 and s["exposed_without_store_ms"]["p50"] is not None
    assert s["ttft_without_store_ms"]["p50"] > s["exposed_without_store_ms"]["p50"]


def test_store_flags_without_store_and_a_transport_without_reads_are_refused(capsys, monkeypatch):
    assert main(["run", *SMALL, "--store-file-mib", "64"]) == 2
    assert "--store-file-mib: given without --store" in capsys.readouterr().err
    monkeypatch.setattr(TcpTransport, "probe_read", classmethod(lambda cls, o=None: Capability.missing("no reads here")))
    assert main(["run", *SMALL, "--store", "prefix"]) == 1
    assert "kvfabric run: --store needs one-sided READ: tcp: no reads here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        main(["run", *SMALL, "--store", "prefix", "--store-hit-ratio", "1.5"])
    assert ei.value.code == 2 and "argument --store-hit-ratio: must be <= 1, got 1.5" in capsys.readouterr().err
