"""`kvfabric run --transport-param` reaches the transport, like pytest's --kv-transport-param."""
from __future__ import annotations

import json

from pytest_kvfabric.cli import main


def test_transport_param_selects_the_iouring_mode(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["run", "--model", "llama3.1-8b", "--transport", "iouring", "--transport-param", "mode=send_zc",
                 "--isl", "64", "--requests", "1", "--pace", "none", "--json", str(out)])
    if code == 1 and "not available" in capsys.readouterr().err:
        import pytest

        pytest.skip("iouring unavailable on this host")
    assert code == 0
    sender = json.loads(out.read_text())["data_path"]["sender"]
    assert sender["mode"] == "send_zc"


def test_bad_transport_param_is_a_one_line_usage_error(capsys):
    assert main(["run", "--model", "llama3.1-8b", "--transport", "tcp", "--transport-param", "x"]) == 2
    err = capsys.readouterr().err
    assert "--transport-param: expected KEY=VALUE, got 'x'" in err and err.count("\n") == 1
