"""netdev generic-netlink codecs against the family's published numbers, and a real kernel."""
from __future__ import annotations

import errno
import os
import struct

import pytest

from pytest_kvfabric.transports.devmem import netlink as nl


# ---- pinned numbers ----------------------------------------------------------------------

def test_netdev_numbers_match_the_published_spec():
    # Documentation/netlink/specs/netdev.yaml / include/uapi/linux/netdev.h (Linux 6.15..6.18):
    # NETDEV_CMD_DEV_GET = 1, ..., NETDEV_CMD_QUEUE_GET = 10, NETDEV_CMD_BIND_RX = 13,
    # NETDEV_CMD_NAPI_SET = 14, NETDEV_CMD_BIND_TX = 15.
    assert nl.NETDEV_CMD == {"dev-get": 1, "queue-get": 10, "bind-rx": 13, "napi-set": 14, "bind-tx": 15}
    # enum { NETDEV_A_DMABUF_IFINDEX = 1, _QUEUES, _FD, _ID }
    assert nl.NETDEV_A_DMABUF == {"ifindex": 1, "queues": 2, "fd": 3, "id": 4}
    # enum { NETDEV_A_QUEUE_ID = 1, _IFINDEX, _TYPE, _NAPI_ID, _DMABUF, _IO_URING, _XSK }
    assert nl.NETDEV_A_QUEUE == {"id": 1, "ifindex": 2, "type": 3, "napi-id": 4, "dmabuf": 5,
                                 "io-uring": 6, "xsk": 7}
    assert nl.NETDEV_A_DEV["ifindex"] == 1 and nl.NETDEV_A_DEV["xdp-features"] == 3
    # enum netdev_queue_type { NETDEV_QUEUE_TYPE_RX, NETDEV_QUEUE_TYPE_TX }
    assert nl.NETDEV_QUEUE_TYPE == {"rx": 0, "tx": 1}
    # include/uapi/linux/ethtool_netlink_generated.h: ETHTOOL_MSG_RINGS_GET = 15,
    # ETHTOOL_A_RINGS_TCP_DATA_SPLIT = 11 (u8: 0 unknown, 1 disabled, 2 enabled)
    assert (nl.ETHTOOL_MSG_RINGS_GET, nl.ETHTOOL_A_RINGS_TCP_DATA_SPLIT) == (15, 11)


# ---- encoding ----------------------------------------------------------------------------

def _u32_attr(t: int, v: int) -> bytes:
    return struct.pack("=HHI", 8, t, v)


def test_encode_bind_rx_exact_bytes():
    msg = nl.encode_bind_rx(family_id=0x1C, seq=7, ifindex=3, dmabuf_fd=9, queues=[14, 15])
    queue = lambda q: struct.pack("=HH", 20, 2 | 0x8000) + _u32_attr(1, q) + _u32_attr(3, 0)
    attrs = _u32_attr(1, 3) + _u32_attr(3, 9) + queue(14) + queue(15)
    body = struct.pack("=BBH", 13, 1, 0) + attrs
    expected = struct.pack("=IHHII", 16 + len(body), 0x1C, 0x1 | 0x4, 7, 0) + body
    assert msg == expected


def test_encode_bind_tx_and_queue_get():
    m = nl.split_messages(nl.encode_bind_tx(0x1C, 1, ifindex=4, dmabuf_fd=5))[0]
    assert m.genl_cmd == 15
    assert [(t, nl.get_u32(v)) for t, v in nl.iter_attrs(m.genl_attrs)] == [(1, 4), (3, 5)]
    dump = nl.split_messages(nl.encode_queue_get(0x1C, 2, ifindex=4))[0]
    assert dump.flags & nl.NLM_F_DUMP == nl.NLM_F_DUMP and dump.genl_cmd == 10
    one = nl.split_messages(nl.encode_queue_get(0x1C, 3, ifindex=4, queue_id=2, qtype="tx"))[0]
    assert [(t, nl.get_u32(v)) for t, v in nl.iter_attrs(one.genl_attrs)] == [(2, 4), (3, 1), (1, 2)]
    with pytest.raises(ValueError, match="at least one RX queue"):
        nl.encode_bind_rx(1, 1, 1, 1, [])


def test_nested_queue_attrs_carry_nla_f_nested():
    msg = nl.encode_bind_rx(0x1C, 1, 3, 9, [5])
    raw_types = []
    pos = 16 + 4
    while pos < len(msg):
        ln, t = struct.unpack_from("=HH", msg, pos)
        raw_types.append(t)
        pos += (ln + 3) & ~3
    assert raw_types == [1, 3, 2 | nl.NLA_F_NESTED]


# ---- decoding ----------------------------------------------------------------------------

def _error_msg(err: int, req: bytes, tlvs: bytes = b"", capped: bool = True) -> bytes:
    orig = req[:16] if capped else req
    flags = (nl.NLM_F_CAPPED if capped else 0) | (nl.NLM_F_ACK_TLVS if tlvs else 0)
    body = struct.pack("=i", -err) + orig + tlvs
    seq = struct.unpack_from("=I", req, 8)[0]
    return struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, flags, seq, 0) + body


def test_decode_error_with_extack_message_and_offset():
    req = nl.encode_bind_rx(0x1C, 7, 3, 9, [14])
    tlvs = nl.nla_str(nl.NLMSGERR_ATTR_MSG, "no such queue") + nl.nla_u32(nl.NLMSGERR_ATTR_OFFS, 20)
    e = nl.decode_error(nl.split_messages(_error_msg(errno.EINVAL, req, tlvs))[0])
    assert (e.error, e.message, e.offset) == (errno.EINVAL, "no such queue", 20)
    assert nl.attr_at_offset(req, 20, nl.attr_names("bind-rx")) == "ifindex"
    assert nl.attr_at_offset(req, 28, nl.attr_names("bind-rx")) == "fd"
    assert nl.attr_at_offset(req, 36, nl.attr_names("bind-rx")) == "queues"
    assert nl.attr_at_offset(req, 40, nl.attr_names("bind-rx")) == "queues.id"
    assert nl.attr_at_offset(req, 48, nl.attr_names("bind-rx")) == "queues.type"
    assert nl.attr_at_offset(req, 999, nl.attr_names("bind-rx")) == ""


def test_decode_error_uncapped_and_plain_ack():
    req = nl.encode_bind_tx(0x1C, 3, 1, 2)
    tlvs = nl.nla_u32(nl.NLMSGERR_ATTR_MISS_TYPE, 3)
    e = nl.decode_error(nl.split_messages(_error_msg(errno.EINVAL, req, tlvs, capped=False))[0])
    assert e.missing_type == 3 and e.orig_request == req
    ack = nl.decode_error(nl.split_messages(_error_msg(0, req))[0])
    assert ack.error == 0 and ack.message == ""


def test_netlink_error_names_errno_and_attribute():
    exc = nl.NetlinkError("netdev bind-rx", errno.EOPNOTSUPP, "", "ifindex")
    assert str(exc) == ("netdev bind-rx: EOPNOTSUPP (Operation not supported) "
                        "[kernel flagged attribute ifindex]")
    assert exc.errname == "EOPNOTSUPP"


def test_decode_family_and_queue_and_binding_id():
    ops = nl.nla_nest(nl.CTRL_ATTR_OPS,
                      nl.nla_nest(1, nl.nla_u32(nl.CTRL_ATTR_OP_ID, 13), nl.nla_u32(2, 0)),
                      nl.nla_nest(2, nl.nla_u32(nl.CTRL_ATTR_OP_ID, 15)))
    attrs = nl.nla(nl.CTRL_ATTR_FAMILY_ID, struct.pack("=H", 0x1C)) + nl.nla_str(2, "netdev") + \
        nl.nla_u32(3, 1) + ops
    fam = nl.decode_family(memoryview(attrs))
    assert fam == nl.Family("netdev", 0x1C, 1, frozenset({13, 15}))
    q = nl.decode_queue(memoryview(nl.nla_u32(1, 15) + nl.nla_u32(2, 3) + nl.nla_u32(3, 0) + nl.nla_u32(5, 2)))
    assert q == {"id": 15, "ifindex": 3, "type": "rx", "dmabuf": 2, "io-uring": False}
    assert nl.decode_binding_id(memoryview(nl.nla_u32(4, 42))) == 42
    with pytest.raises(ValueError, match="without NETDEV_A_DMABUF_ID"):
        nl.decode_binding_id(memoryview(b""))


@pytest.mark.parametrize("buf", [struct.pack("=HH", 2, 1), struct.pack("=HH", 12, 1) + b"\0" * 4])
def test_malformed_attributes_raise(buf):
    with pytest.raises(ValueError, match="malformed netlink attribute"):
        list(nl.iter_attrs(buf))


def test_malformed_message_raises():
    with pytest.raises(ValueError, match="malformed netlink message"):
        nl.split_messages(struct.pack("=IHHII", 64, 2, 0, 1, 0))


# ---- the real kernel ---------------------------------------------------------------------

def _kernel_netlink() -> nl.GenlSocket:
    try:
        return nl.GenlSocket(timeout_s=2.0)
    except OSError as exc:
        pytest.skip(f"no generic netlink socket here: {exc}")


def test_real_kernel_netdev_family_has_the_devmem_ops():
    with _kernel_netlink() as s:
        try:
            fam = s.family("netdev")
        except nl.NetlinkError as exc:
            pytest.skip(f"kernel without the netdev family: {exc}")
        assert fam.id > 0x10 and fam.version >= 1
        assert {1, 10}.issubset(fam.ops)
        uname = os.uname().release
        major, minor = (int(x) for x in uname.split(".")[:2])
        if (major, minor) >= (6, 15):  # bind-tx merged in 6.15, bind-rx in 6.12
            assert {13, 15}.issubset(fam.ops), f"{uname}: ops {sorted(fam.ops)}"


def test_real_kernel_unknown_family_is_a_named_error():
    with _kernel_netlink() as s:
        with pytest.raises(nl.NetlinkError, match="ENOENT.*family not registered"):
            s.family("kvfabricnone")
        # GENL_NAMSIZ is 16: the kernel's policy check rejects a longer name, extack names it
        with pytest.raises(nl.NetlinkError) as info:
            s.family("kvfabric-no-such-family")
        assert info.value.errno == errno.EINVAL and info.value.bad_attr == "family-name"


def test_real_kernel_queue_dump_and_dev_get_on_veth(veth_netns):
    ns, _ifname, ifindex = veth_netns
    with nl.open_in_netns(ns) as s:
        queues = s.queues(ifindex)
        assert {(q["type"], q["id"]) for q in queues} >= {("rx", 0), ("tx", 0)}
        assert all(q["ifindex"] == ifindex for q in queues)
        assert s.dev(ifindex)["ifindex"] == ifindex


def test_real_kernel_refuses_bind_rx_on_veth_with_eopnotsupp(veth_netns):
    """The encoder and the error path meet a real kernel: veth has no queue-management ops,
    so bind-rx is refused at the device (extack points at `ifindex`) before the fd is read."""
    ns, _ifname, ifindex = veth_netns
    fd = os.memfd_create("kvft7-not-a-dmabuf")
    try:
        with nl.open_in_netns(ns) as s:
            if 13 not in s.family("netdev").ops:
                pytest.skip("kernel netdev family has no bind-rx")
            with pytest.raises(nl.NetlinkError) as info:
                s.bind_rx(ifindex, fd, [0])
            assert info.value.errno == errno.EOPNOTSUPP
            assert info.value.bad_attr == "ifindex"
            with pytest.raises(nl.NetlinkError) as info:
                s.bind_rx(ifindex + 1000, fd, [0])
            assert info.value.errno == errno.ENODEV
    finally:
        os.close(fd)
