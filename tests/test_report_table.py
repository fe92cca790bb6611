"""Terminal summary table: one row per case with the data path in a few words."""
from __future__ import annotations

import pytest

from pytest_kvfabric.report import table


@pytest.mark.parametrize(
    "data_path,label",
    [
        ({"sender": {"transport": "tcp", "zero_copy": False}}, "tcp copied"),
        ({"sender": {"transport": "zerocopy", "copied_fraction": 1.0}}, "zerocopy 100% copied"),
        ({"sender": {"transport": "zerocopy", "copied_fraction": 0.0, "zero_copy": True}}, "zerocopy 0% copied"),
        ({"sender": {"transport": "devmem", "devmem_tx": True}, "receiver": {"device_placed_all": True}},
         "devmem device-placed"),
        ({"sender": {"transport": "devmem", "devmem_tx": False}, "receiver": {"device_placed_all": False}},
         "devmem host bytes seen, RX only"),
        ({"sender": {"transport": "rdma", "zero_copy": True}}, "rdma zero-copy"),
    ],
)
def test_data_path_label(data_path, label):
    assert table.data_path_label({"data_path": data_path}) == label


def test_render_has_a_row_per_case_with_gbytes_and_verdict():
    results = [
        {"case": "s/a[m-tcp]", "outcome": "passed", "pair": "local",
         "metrics": {"throughput_gbps": 16.0, "latency_us": {"p50": 10, "p99": 20},
                     "exposed_ms": {"p99": 1.5}, "cpu_s_per_gb": {"sender": 0.2, "receiver": 0.3},
                     "data_path": {"sender": {"transport": "tcp", "zero_copy": False}}}},
        {"case": "s/b[m-rdma]", "outcome": "skipped", "reason": "rdma: no RDMA device", "metrics": None},
    ]
    text = table.render(results)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["case", "pair", "GB/s"]
    row_a = next(line for line in lines if line.startswith("s/a[m-tcp]"))
    assert " 2 " in row_a and "0.3" in row_a and "tcp copied" in row_a and row_a.rstrip().endswith("passed")
    row_b = next(line for line in lines if line.startswith("s/b[m-rdma]"))
    assert "rdma: no RDMA device" in row_b and row_b.rstrip().endswith("skipped")
