"""Every built-in transport declares the parameters its code reads (transports/params.py), so an
unknown or bad rdma/devmem parameter is refused up front, on the CLI and under pytest, even where
the transport itself is unavailable (rdma and devmem are on this host)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_kvfabric import cli
from pytest_kvfabric.transports.params import (
    DEVMEM_PARAMS, FRAMEWORK_KEYS, IOURING_PARAMS, MAX_RX_QUEUE, RDMA_PARAMS, STREAM_PARAMS, check)
from pytest_kvfabric.transports.registry import check_params, get_transport

pytest_plugins = ["pytester"]

PKG = Path(__file__).resolve().parent.parent / "pytest_kvfabric" / "transports"
STREAM_SRC = ["stream_common.py", "stream_target.py", "stream_rx.py", "stream_initiator.py",
              "tcp.py", "zerocopy.py", "handshake.py"]
# module files whose option reads make up each transport's parameters (devmem inherits the stream code);
# "file::function" scans one function only (a shared helper the transport calls)
SOURCES = {
    "tcp": STREAM_SRC,
    "zerocopy": STREAM_SRC,
    "devmem": STREAM_SRC + [f"devmem/{p.name}" for p in sorted((PKG / "devmem").glob("*.py"))],
    "rdma": [f"rdma/{p.name}" for p in sorted((PKG / "rdma").glob("*.py"))],
    "iouring": ["iouring.py", "iouring_common.py", "iouring_initiator.py", "iouring_target.py", "_uring.py",
                "iouring_probe.py", "stream_common.py::set_tcp_options"],
}
TABLES = {"tcp": STREAM_PARAMS, "zerocopy": STREAM_PARAMS, "devmem": DEVMEM_PARAMS, "rdma": RDMA_PARAMS,
          "iouring": IOURING_PARAMS}
OPTION_NAMES = {"options", "opts"}  # how the transports name their option mapping


def _is_options(node: ast.AST) -> bool:
    return ((isinstance(node, ast.Name) and node.id in OPTION_NAMES)
            or (isinstance(node, ast.Attribute) and node.attr in OPTION_NAMES))


def keys_read(source: str) -> set[str]:
    """Literal keys read from an option mapping: options.get("k"), opts["k"], self.options.get("k"),
    _int_option(options, "k", ...) and the names of an `_INT_OPTIONS = ((name, ...), ...)` table."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "get" and _is_options(f.value):
                keys.add(node.args[0].value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith("_option")
                and len(node.args) > 1 and _is_options(node.args[0]) and isinstance(node.args[1], ast.Constant)):
            keys.add(node.args[1].value)
        if isinstance(node, ast.Subscript) and _is_options(node.value) and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_INT_OPTIONS" for t in node.targets)
                and isinstance(node.value, ast.Tuple)):
            keys.update(e.elts[0].value for e in node.value.elts if isinstance(e, ast.Tuple))
    return {k for k in keys if isinstance(k, str)}


def test_the_scanner_finds_option_reads():
    src = ('a = options.get("x"); b = self.options.get("y", 1); c = opts["z"]; d = _int_option(options, "w", 1, 0, 2)\n'
           '_INT_OPTIONS = (("v", 1, 0, 2),)\nhello.get("not_an_option")')
    assert keys_read(src) == {"x", "y", "z", "w", "v"}


def _source(rel: str) -> str:
    path, _, func = rel.partition("::")
    text = (PKG / path).read_text()
    if not func:
        return text
    node = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef) and n.name == func)
    return ast.get_source_segment(text, node) or ""


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_parameter_the_code_reads_is_declared(name):
    read: set[str] = set()
    for rel in SOURCES[name]:
        read |= keys_read(_source(rel))
    declared = {p.name for p in TABLES[name]}
    assert get_transport(name).params == TABLES[name]
    assert read - declared - FRAMEWORK_KEYS == set(), f"{name} reads undeclared parameters"
    if name in ("rdma", "devmem", "iouring"):  # and declares nothing it never reads
        assert declared - read == set(), f"{name} declares parameters it never reads"


@pytest.mark.parametrize("transport, params, expected", [
    ("rdma", {"bogus": 1}, "unknown parameter 'bogus' for transport rdma; valid: accept_timeout_s, device, dscp"),
    ("rdma", {"conections": 4}, "unknown parameter 'conections' for transport rdma"),
    ("rdma", {"qps": 0}, "transport rdma parameter qps: must be >= 1, got 0"),
    ("rdma", {"poll": "spin"}, "transport rdma parameter poll: must be one of busy, channel"),
    ("rdma", {"path_mtu": 1500}, "transport rdma parameter path_mtu: must be one of 256, 512, 1024, 2048, 4096"),
    ("rdma", {"port": 5201}, "transport rdma parameter port: must be <= 255"),
    ("rdma", {"traffic_class": -1}, "must be >= 0"),
    ("devmem", {"bogus": 1}, "unknown parameter 'bogus' for transport devmem; valid: busy_poll_us, close_timeout_s, "
                             "connections, dontneed_batch"),
    ("devmem", {"mode": "send_zc"}, "unknown parameter 'mode' for transport devmem"),
    ("devmem", {"connections": 0}, "transport devmem parameter connections: must be >= 1"),
    ("devmem", {"dontneed_batch": 129}, "transport devmem parameter dontneed_batch: must be <= 128"),
    ("devmem", {"rx_queues": "auto:x"}, "transport devmem parameter rx_queues: expected \"auto\""),
    ("devmem", {"rx_queues": [14, 14]}, "queue ids repeat"),
    ("devmem", {"rx_queues": [-1]}, "queue ids are integers 0..4095, got -1"),
    ("devmem", {"interface": "eth/1"}, "transport devmem parameter interface: expected a network interface name"),
    ("devmem", {"tx": "no"}, "transport devmem parameter tx: expected true or false"),
])
def test_unknown_and_bad_rdma_devmem_parameters_are_refused(transport, params, expected):
    assert expected in (check_params([transport], params) or "")


@pytest.mark.parametrize("transport, params", [
    # README usages (devmem across two hosts, rdma "any other transport option") and the tests' own
    ("devmem", {"interface": "eth1", "rx_queues": "auto", "port": 5201}),
    ("devmem", {"interface": "kvdm0", "rx_queues": [0], "port": 5201, "tx": False}),
    ("devmem", {"rx_queues": "auto:2", "dontneed_batch": 64, "landing_nbytes": 64 << 20,
                "require_device_placement": True, "connections": 2}),
    ("devmem", {"rx_queues": "14,15"}),
    ("devmem", {"rx_queues": 15}),
    ("rdma", {"qps": 4, "poll": "channel"}),
    ("rdma", {"device": "mlx5_0", "gid_index": 3, "traffic_class": 104, "path_mtu": 1024, "accept_timeout_s": 1.0}),
    ("rdma", {"dscp": 26, "token": "s3cret", "data_addr": "10.0.0.1", "sysfs_root": "/tmp", "_inject": "drop"}),
])
def test_shipped_usages_pass(transport, params):
    assert check_params([transport], params) is None


def _good(p, data):
    if p.choices:
        return data.draw(st.sampled_from(p.choices))
    if p.kind is bool:
        return data.draw(st.booleans())
    if p.kind is int:
        return data.draw(st.integers(int(p.minimum), int(p.maximum)))
    if p.kind is float:
        return data.draw(st.floats(p.minimum, p.maximum, allow_nan=False))
    return data.draw(st.text(alphabet="abcdefxyz0123_", min_size=1, max_size=15))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_rdma_options_accept_what_the_table_accepts(data):
    """The table is not looser than the code: a value it accepts builds RdmaOptions (no ProfileError mid-run)."""
    from pytest_kvfabric.transports.rdma.options import RdmaOptions

    p = data.draw(st.sampled_from(RDMA_PARAMS))
    value = _good(p, data)
    opts = {p.name: value}
    if p.name == "signal_every":  # signal_every <= max_send_wr is checked across the two, in RdmaOptions
        opts["max_send_wr"] = 1 << 16
    if p.name == "max_send_wr":
        opts["signal_every"] = 1
    assert check({"rdma": RDMA_PARAMS}, opts) is None
    RdmaOptions.from_options(opts)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(spec=st.one_of(
    st.just("auto"),
    st.integers(1, MAX_RX_QUEUE).map(lambda n: f"auto:{n}"),
    st.integers(0, MAX_RX_QUEUE),
    st.lists(st.integers(0, MAX_RX_QUEUE), min_size=1, max_size=8, unique=True),
    st.lists(st.integers(0, MAX_RX_QUEUE), min_size=1, max_size=8, unique=True).map(lambda q: ",".join(map(str, q))),
))
def test_devmem_rx_queues_the_table_accepts_parse(spec):
    from pytest_kvfabric.transports.devmem.probe import parse_queues

    assert check({"devmem": DEVMEM_PARAMS}, {"rx_queues": spec}) is None
    queues, err = parse_queues(spec, MAX_RX_QUEUE + 1)
    assert err is None and queues and all(0 <= q <= MAX_RX_QUEUE for q in queues)


@pytest.mark.parametrize("transport", ["rdma", "devmem"])
def test_cli_refuses_a_bad_parameter_before_probing(capsys, transport):
    """Both transports are unavailable here; the parameter error comes first, exit 2, one line."""
    capsys.readouterr()
    code = cli.main(["run", "--model", "llama3.1-8b", "--transport", transport, "--transport-param", "bogus=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"unknown parameter 'bogus' for transport {transport}; valid: " in err


@pytest.mark.parametrize("transport, param, expected", [
    ("rdma", "bogus=1", "unknown parameter 'bogus' for transport rdma; valid: accept_timeout_s"),
    ("devmem", "rx_queues=auto:0", "transport devmem parameter rx_queues"),
])
def test_pytest_refuses_a_bad_parameter_as_a_usage_error(pytester, transport, param, expected):
    pytester.makepyfile("def test_x(): pass")
    res = pytester.runpytest(f"--kv-transport={transport}", f"--kv-transport-param={param}")
    assert res.ret == pytest.ExitCode.USAGE_ERROR and expected in res.stderr.str()


def test_rdma_flags_feed_declared_parameters(pytester):
    pytester.makepyfile("def test_x(): pass")
    res = pytester.runpytest("--kv-transport=rdma", "--kv-rdma-device=mlx5_0", "--kv-rdma-gid-index=3",
                             "--kv-rdma-tc=104", "--kv-transport-param=qps=4")
    assert res.ret != pytest.ExitCode.USAGE_ERROR, res.stderr.str()
