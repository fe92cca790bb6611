"""The SIOCETHTOOL stand-in for the `ethtool` CLI: real ioctls on this machine's loopback."""
from __future__ import annotations

import errno

import pytest

from pytest_kvfabric.transports import ethtool_ioctl


def test_loopback_answers_its_offloads():
    with ethtool_ioctl.socket_in_netns(None) as s:
        offloads = ethtool_ioctl.get_offloads(s, "lo")
    assert set(offloads) <= set(ethtool_ioctl.OFFLOAD_CMDS) and "gso" in offloads
    assert set(offloads.values()) <= {"on", "off"}


def test_missing_interface_is_the_kernels_enodev():
    with ethtool_ioctl.socket_in_netns(None) as s, pytest.raises(OSError) as exc:
        ethtool_ioctl.drvinfo(s, "kvnope0")
    assert exc.value.errno == errno.ENODEV


@pytest.mark.parametrize("name", ["", "x" * 16])
def test_interface_name_length_is_checked_before_the_ioctl(name):
    with ethtool_ioctl.socket_in_netns(None) as s, pytest.raises(ValueError, match="1-15 bytes"):
        ethtool_ioctl.get_offloads(s, name)


def test_unknown_offload_lists_the_valid_ones():
    with ethtool_ioctl.socket_in_netns(None) as s, pytest.raises(ValueError, match="valid: tso, gso, gro"):
        ethtool_ioctl.set_offloads(s, "lo", {"lro": False})
