"""A small generic-netlink client for the `netdev` (and `ethtool`) families.

pyroute2 0.9 can speak arbitrary generic-netlink families, but only through per-family
message classes and without named extack decoding; the netdev family needs a nested
multi-attr (`queues`), the bind must outlive the call (the binding dies with the socket),
and we want pure, table-tested codecs. So: pure encode/decode functions over bytes, plus
`GenlSocket`, a thin AF_NETLINK socket layer where every recv has a timeout.

Numbers of the netdev family, from Documentation/netlink/specs/netdev.yaml and the generated
include/uapi/linux/netdev.h (Linux 6.15+, unchanged through 6.18):
    commands: dev-get 1, queue-get 10, bind-rx 13, napi-set 14, bind-tx 15
    attribute-set dev:    ifindex 1, pad 2, xdp-features 3, xdp-zc-max-segs 4,
                          xdp-rx-metadata-features 5, xsk-features 6
    attribute-set queue:  id 1, ifindex 2, type 3, napi-id 4, dmabuf 5, io-uring 6, xsk 7
    attribute-set dmabuf: ifindex 1, queues 2 (nest of queue-id {id 1, type 3}, multi-attr),
                          fd 3, id 4
    enum queue-type: rx 0, tx 1
"""
from __future__ import annotations

import errno as _errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ...errors import TransportError
from ..ethtool_ioctl import socket_in_netns

# ---- netlink core (include/uapi/linux/netlink.h, genetlink.h) ----------------------------
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
GENL_HDR = struct.Struct("=BBH")  # cmd, version, reserved
NLA_HDR = struct.Struct("=HH")  # len, type
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # flags of an NLMSG_ERROR message
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
# enum nlmsgerr_attrs
NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLMSGERR_ATTR_COOKIE = 1, 2, 3
NLMSGERR_ATTR_POLICY, NLMSGERR_ATTR_MISS_TYPE, NLMSGERR_ATTR_MISS_NEST = 4, 5, 6

# nlctrl (GENL_ID_CTRL)
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_VERSION = 1, 2, 3
CTRL_ATTR_HDRSIZE, CTRL_ATTR_MAXATTR, CTRL_ATTR_OPS = 4, 5, 6
CTRL_ATTR_OP_ID, CTRL_ATTR_OP_FLAGS = 1, 2

# ---- netdev family (see module docstring for the source) ---------------------------------
NETDEV_FAMILY_NAME = "netdev"
NETDEV_FAMILY_VERSION = 1
NETDEV_CMD = {"dev-get": 1, "queue-get": 10, "bind-rx": 13, "napi-set": 14, "bind-tx": 15}
NETDEV_A_DEV = {"ifindex": 1, "pad": 2, "xdp-features": 3, "xdp-zc-max-segs": 4,
                "xdp-rx-metadata-features": 5, "xsk-features": 6}
NETDEV_A_QUEUE = {"id": 1, "ifindex": 2, "type": 3, "napi-id": 4, "dmabuf": 5,
                  "io-uring": 6, "xsk": 7}
NETDEV_A_DMABUF = {"ifindex": 1, "queues": 2, "fd": 3, "id": 4}
NETDEV_QUEUE_TYPE = {"rx": 0, "tx": 1}
_QUEUE_TYPE_NAME = {v: k for k, v in NETDEV_QUEUE_TYPE.items()}
_ATTR_SETS = {"dev": NETDEV_A_DEV, "queue": NETDEV_A_QUEUE, "dmabuf": NETDEV_A_DMABUF}
_CMD_ATTR_SET = {"dev-get": "dev", "queue-get": "queue", "bind-rx": "dmabuf",
                 "bind-tx": "dmabuf", "napi-set": "napi"}

# ---- ethtool family (include/uapi/linux/ethtool_netlink*.h) ------------------------------
ETHTOOL_FAMILY_NAME = "ethtool"
ETHTOOL_MSG_RINGS_GET = 15
ETHTOOL_A_HEADER_DEV_INDEX, ETHTOOL_A_HEADER_DEV_NAME = 1, 2
ETHTOOL_A_RINGS_HEADER = 1
ETHTOOL_A_RINGS_TCP_DATA_SPLIT = 11  # u8: ETHTOOL_TCP_DATA_SPLIT_{UNKNOWN,DISABLED,ENABLED}
TCP_DATA_SPLIT_NAME = {0: "unknown", 1: "off", 2: "on"}


class NetlinkError(TransportError):
    """The kernel answered NLMSG_ERROR: errno, its name, and the extack message/offending attr."""

    def __init__(self, op: str, err: int, message: str = "", bad_attr: str = "",
                 missing: str = "") -> None:
        self.op = op
        self.errno = err
        # errno 95 has two names; the kernel sources and docs say EOPNOTSUPP
        self.errname = "EOPNOTSUPP" if err == _errno.EOPNOTSUPP else _errno.errorcode.get(err, f"errno {err}")
        self.message = message
        self.bad_attr = bad_attr
        self.missing = missing
        text = f"{op}: {self.errname} ({os.strerror(err)})"
        if message:
            text += f": {message}"
        if bad_attr:
            text += f" [kernel flagged attribute {bad_attr}]"
        if missing:
            text += f" [kernel says attribute {missing} is missing]"
        super().__init__(text)


# ---- attributes --------------------------------------------------------------------------

def _pad4(n: int) -> int:
    return (n + 3) & ~3


def nla(type_: int, payload: bytes) -> bytes:
    raw = NLA_HDR.pack(NLA_HDR.size + len(payload), type_) + payload
    return raw + b"\0" * (_pad4(len(raw)) - len(raw))


def nla_u8(type_: int, v: int) -> bytes:
    return nla(type_, struct.pack("=B", v))


def nla_u32(type_: int, v: int) -> bytes:
    return nla(type_, struct.pack("=I", v))


def nla_str(type_: int, s: str) -> bytes:
    return nla(type_, s.encode() + b"\0")


def nla_nest(type_: int, *children: bytes) -> bytes:
    return nla(type_ | NLA_F_NESTED, b"".join(children))


def iter_attrs(buf: bytes | memoryview) -> Iterator[tuple[int, memoryview]]:
    """(type without flags, payload) for each attribute; raise ValueError on a malformed one."""
    view = memoryview(buf)
    pos = 0
    while pos + NLA_HDR.size <= len(view):
        length, type_ = NLA_HDR.unpack_from(view, pos)
        if length < NLA_HDR.size or pos + length > len(view):
            raise ValueError(f"malformed netlink attribute at offset {pos}: nla_len {length}")
        yield type_ & NLA_TYPE_MASK, view[pos + NLA_HDR.size : pos + length]
        pos += _pad4(length)


def attrs_dict(buf: bytes | memoryview) -> dict[int, list[memoryview]]:
    out: dict[int, list[memoryview]] = {}
    for t, v in iter_attrs(buf):
        out.setdefault(t, []).append(v)
    return out


def get_u32(v: memoryview) -> int:
    return struct.unpack_from("=I", v)[0]


def get_uint(v: memoryview) -> int:
    """NLA_UINT / u8 / u16 / u32 / u64 by length."""
    return int.from_bytes(bytes(v), "little") if len(v) in (1, 2, 4, 8) else 0


def get_str(v: memoryview) -> str:
    return bytes(v).split(b"\0", 1)[0].decode()


# ---- messages ----------------------------------------------------------------------------

def encode_genl(family_id: int, cmd: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST | NLM_F_ACK,
                version: int = 1) -> bytes:
    body = GENL_HDR.pack(cmd, version, 0) + attrs
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), family_id, flags, seq, 0) + body


@dataclass
class Message:
    type: int
    flags: int
    seq: int
    payload: memoryview  # after nlmsghdr

    @property
    def genl_cmd(self) -> int:
        return self.payload[0]

    @property
    def genl_attrs(self) -> memoryview:
        return self.payload[GENL_HDR.size :]


def split_messages(buf: bytes | memoryview) -> list[Message]:
    view = memoryview(buf)
    out = []
    pos = 0
    while pos + NLMSG_HDR.size <= len(view):
        length, type_, flags, seq, _pid = NLMSG_HDR.unpack_from(view, pos)
        if length < NLMSG_HDR.size or pos + length > len(view):
            raise ValueError(f"malformed netlink message at offset {pos}: nlmsg_len {length}")
        out.append(Message(type_, flags, seq, view[pos + NLMSG_HDR.size : pos + length]))
        pos += _pad4(length)
    return out


@dataclass(frozen=True)
class ErrorReply:
    error: int  # 0 = ACK, else positive errno
    message: str = ""
    offset: int | None = None  # extack: offset of the bad attribute in the request
    missing_type: int | None = None
    orig_request: bytes = b""


def decode_error(msg: Message) -> ErrorReply:
    """Decode NLMSG_ERROR: struct nlmsgerr {int error; struct nlmsghdr msg;} [+request] [+TLVs]."""
    p = msg.payload
    if len(p) < 4 + NLMSG_HDR.size:
        raise ValueError(f"truncated NLMSG_ERROR: {len(p)} bytes")
    (err,) = struct.unpack_from("=i", p)
    orig_len = NLMSG_HDR.unpack_from(p, 4)[0]
    if msg.flags & NLM_F_CAPPED:
        tlv_at, orig = 4 + NLMSG_HDR.size, bytes(p[4 : 4 + NLMSG_HDR.size])
    else:
        tlv_at, orig = 4 + _pad4(orig_len), bytes(p[4 : 4 + orig_len])
    text, offs, miss = "", None, None
    if msg.flags & NLM_F_ACK_TLVS and tlv_at < len(p):
        for t, v in iter_attrs(p[tlv_at:]):
            if t == NLMSGERR_ATTR_MSG:
                text = get_str(v)
            elif t == NLMSGERR_ATTR_OFFS:
                offs = get_u32(v)
            elif t == NLMSGERR_ATTR_MISS_TYPE:
                miss = get_u32(v)
    return ErrorReply(-err, text, offs, miss, orig)


def attr_at_offset(request: bytes, offset: int, names: "AttrNames") -> str:
    """Name the attribute that starts at `offset` of a genl request (extack NLMSGERR_ATTR_OFFS),
    searching nests ('queues.id'); '' if none starts there."""
    base = NLMSG_HDR.size + GENL_HDR.size

    def walk(buf: memoryview, at: int, table: AttrNames, prefix: str) -> str:
        pos = 0
        for t, v in iter_attrs(buf):
            start = at + pos
            name, sub = table.get(t, (str(t), {}))
            if start == offset:
                return prefix + name
            length = NLA_HDR.size + len(v)
            if start < offset < start + length:
                return walk(v, start + NLA_HDR.size, sub, prefix + name + ".") or prefix + name
            pos += _pad4(length)
        return ""

    if len(request) < base:
        return ""
    return walk(memoryview(request)[base:], base, names, "")


# ---- netdev requests / replies (pure) ----------------------------------------------------

def encode_queue_id(queue_id: int, qtype: str = "rx") -> bytes:
    return nla_nest(
        NETDEV_A_DMABUF["queues"],
        nla_u32(NETDEV_A_QUEUE["id"], queue_id),
        nla_u32(NETDEV_A_QUEUE["type"], NETDEV_QUEUE_TYPE[qtype]),
    )


def encode_bind_rx(family_id: int, seq: int, ifindex: int, dmabuf_fd: int,
                   queues: list[int]) -> bytes:
    if not queues:
        raise ValueError("bind-rx needs at least one RX queue")
    attrs = nla_u32(NETDEV_A_DMABUF["ifindex"], ifindex) + nla_u32(NETDEV_A_DMABUF["fd"], dmabuf_fd)
    attrs += b"".join(encode_queue_id(q, "rx") for q in queues)
    return encode_genl(family_id, NETDEV_CMD["bind-rx"], attrs, seq)


def encode_bind_tx(family_id: int, seq: int, ifindex: int, dmabuf_fd: int) -> bytes:
    attrs = nla_u32(NETDEV_A_DMABUF["ifindex"], ifindex) + nla_u32(NETDEV_A_DMABUF["fd"], dmabuf_fd)
    return encode_genl(family_id, NETDEV_CMD["bind-tx"], attrs, seq)


def encode_queue_get(family_id: int, seq: int, ifindex: int, queue_id: int | None = None,
                     qtype: str = "rx") -> bytes:
    """queue-get: a `do` for one queue, or a dump of the interface's queues (queue_id None)."""
    attrs = nla_u32(NETDEV_A_QUEUE["ifindex"], ifindex)
    if queue_id is None:
        return encode_genl(family_id, NETDEV_CMD["queue-get"], attrs, seq, NLM_F_REQUEST | NLM_F_DUMP)
    attrs += nla_u32(NETDEV_A_QUEUE["type"], NETDEV_QUEUE_TYPE[qtype])
    attrs += nla_u32(NETDEV_A_QUEUE["id"], queue_id)
    return encode_genl(family_id, NETDEV_CMD["queue-get"], attrs, seq)


def encode_dev_get(family_id: int, seq: int, ifindex: int | None = None) -> bytes:
    if ifindex is None:
        return encode_genl(family_id, NETDEV_CMD["dev-get"], b"", seq, NLM_F_REQUEST | NLM_F_DUMP)
    return encode_genl(family_id, NETDEV_CMD["dev-get"], nla_u32(NETDEV_A_DEV["ifindex"], ifindex), seq)


def decode_binding_id(attrs: memoryview) -> int:
    d = attrs_dict(attrs)
    if NETDEV_A_DMABUF["id"] not in d:
        raise ValueError("bind reply without NETDEV_A_DMABUF_ID")
    return get_u32(d[NETDEV_A_DMABUF["id"]][0])


def decode_queue(attrs: memoryview) -> dict[str, Any]:
    d = attrs_dict(attrs)
    out: dict[str, Any] = {}
    for name in ("id", "ifindex", "napi-id", "dmabuf"):
        if NETDEV_A_QUEUE[name] in d:
            out[name] = get_u32(d[NETDEV_A_QUEUE[name]][0])
    if NETDEV_A_QUEUE["type"] in d:
        t = get_u32(d[NETDEV_A_QUEUE["type"]][0])
        out["type"] = _QUEUE_TYPE_NAME.get(t, t)
    out["io-uring"] = NETDEV_A_QUEUE["io-uring"] in d
    return out


def decode_dev(attrs: memoryview) -> dict[str, Any]:
    d = attrs_dict(attrs)
    return {name: get_uint(d[num][0]) for name, num in NETDEV_A_DEV.items()
            if num in d and name != "pad"}


AttrNames = dict  # type -> (name, nested AttrNames)


def attr_names(cmd: str) -> AttrNames:
    """type -> (name, nested names) for a command's attribute set, to name extack offsets."""
    table: AttrNames = {v: (k, {}) for k, v in _ATTR_SETS.get(_CMD_ATTR_SET.get(cmd, ""), {}).items()}
    if _CMD_ATTR_SET.get(cmd) == "dmabuf":  # queues nests the queue-id subset of `queue`
        table[NETDEV_A_DMABUF["queues"]] = ("queues", {NETDEV_A_QUEUE["id"]: ("id", {}),
                                                       NETDEV_A_QUEUE["type"]: ("type", {})})
    return table


# ---- nlctrl ------------------------------------------------------------------------------

def encode_getfamily(name: str, seq: int) -> bytes:
    return encode_genl(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, nla_str(CTRL_ATTR_FAMILY_NAME, name), seq)


@dataclass(frozen=True)
class Family:
    name: str
    id: int
    version: int
    ops: frozenset[int] = field(default_factory=frozenset)


def decode_family(attrs: memoryview) -> Family:
    d = attrs_dict(attrs)
    ops = set()
    for nest in d.get(CTRL_ATTR_OPS, []):
        for _i, op in iter_attrs(nest):
            od = attrs_dict(op)
            if CTRL_ATTR_OP_ID in od:
                ops.add(get_u32(od[CTRL_ATTR_OP_ID][0]))
    return Family(
        get_str(d[CTRL_ATTR_FAMILY_NAME][0]),
        struct.unpack_from("=H", d[CTRL_ATTR_FAMILY_ID][0])[0],
        get_u32(d[CTRL_ATTR_VERSION][0]) if CTRL_ATTR_VERSION in d else 0,
        frozenset(ops),
    )


# ---- socket layer ------------------------------------------------------------------------

class GenlSocket:
    """A generic-netlink socket. Keep it open as long as a devmem binding must live: the kernel
    unbinds the dma-buf when the socket that bound it closes."""

    def __init__(self, timeout_s: float = 2.0, sock: socket.socket | None = None) -> None:
        self.timeout_s = timeout_s
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.bind((0, 0))
        self._seq = int(time.monotonic_ns() & 0xFFFF)
        self._families: dict[str, Family] = {}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "GenlSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def request(self, op: str, build: Any, names: AttrNames | None = None,
                dump: bool = False) -> list[Message]:
        """Send build(seq) and collect the replies for that seq until ACK/DONE.

        Raises NetlinkError on NLMSG_ERROR (naming the extack attribute), TransportError on
        a timeout (every recv waits at most what is left of timeout_s).
        """
        seq = self._next_seq()
        req = build(seq)
        self.sock.send(req)
        deadline = time.monotonic() + self.timeout_s
        replies: list[Message] = []
        for _ in range(100_000):  # bounded: a dump of a huge table still ends
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TransportError(f"{op}: no netlink answer within {self.timeout_s:.1f} s")
            data = self.sock.recv(1 << 16)
            for m in split_messages(data):
                if m.seq != seq:
                    continue  # a late answer to an earlier request
                if m.type == NLMSG_ERROR:
                    e = decode_error(m)
                    if e.error:
                        bad = attr_at_offset(req, e.offset, names or {}) if e.offset else ""
                        missing = (names or {}).get(e.missing_type, (str(e.missing_type),))[0] \
                            if e.missing_type is not None else ""
                        raise NetlinkError(op, e.error, e.message, bad, missing)
                    return replies
                if m.type == NLMSG_DONE:
                    return replies
                replies.append(m)
                if not dump and not (m.flags & NLM_F_MULTI):
                    # a `do` reply; the ACK follows (NLM_F_ACK), keep reading for it
                    continue
        raise TransportError(f"{op}: netlink reply did not end")

    def family(self, name: str) -> Family:
        """Resolve a family id (and its ops) through nlctrl; cached."""
        if name not in self._families:
            try:
                msgs = self.request(f"nlctrl getfamily {name}", lambda s: encode_getfamily(name, s),
                                    {CTRL_ATTR_FAMILY_NAME: ("family-name", {})})
            except NetlinkError as exc:
                if exc.errno == _errno.ENOENT:
                    raise NetlinkError(f"generic netlink family {name!r}", exc.errno,
                                       "family not registered by this kernel") from None
                raise
            if not msgs:
                raise TransportError(f"nlctrl: no reply for family {name!r}")
            self._families[name] = decode_family(msgs[0].genl_attrs)
        return self._families[name]

    # -- netdev ---------------------------------------------------------------------------
    def _netdev(self) -> int:
        return self.family(NETDEV_FAMILY_NAME).id

    def bind_rx(self, ifindex: int, dmabuf_fd: int, queues: list[int]) -> int:
        fid = self._netdev()
        msgs = self.request("netdev bind-rx", lambda s: encode_bind_rx(fid, s, ifindex, dmabuf_fd, queues),
                            attr_names("bind-rx"))
        return decode_binding_id(msgs[0].genl_attrs)

    def bind_tx(self, ifindex: int, dmabuf_fd: int) -> int:
        fid = self._netdev()
        msgs = self.request("netdev bind-tx", lambda s: encode_bind_tx(fid, s, ifindex, dmabuf_fd),
                            attr_names("bind-tx"))
        return decode_binding_id(msgs[0].genl_attrs)

    def queues(self, ifindex: int) -> list[dict[str, Any]]:
        fid = self._netdev()
        msgs = self.request("netdev queue-get", lambda s: encode_queue_get(fid, s, ifindex),
                            attr_names("queue-get"), dump=True)
        return [decode_queue(m.genl_attrs) for m in msgs]

    def dev(self, ifindex: int) -> dict[str, Any]:
        fid = self._netdev()
        msgs = self.request("netdev dev-get", lambda s: encode_dev_get(fid, s, ifindex),
                            attr_names("dev-get"))
        return decode_dev(msgs[0].genl_attrs)

    # -- ethtool --------------------------------------------------------------------------
    def tcp_data_split(self, ifname: str) -> str:
        """'on' | 'off' | 'unknown' from ETHTOOL_MSG_RINGS_GET (absent attribute = 'unknown')."""
        fid = self.family(ETHTOOL_FAMILY_NAME).id
        attrs = nla_nest(ETHTOOL_A_RINGS_HEADER, nla_str(ETHTOOL_A_HEADER_DEV_NAME, ifname))
        msgs = self.request("ethtool rings-get",
                            lambda s: encode_genl(fid, ETHTOOL_MSG_RINGS_GET, attrs, s))
        d = attrs_dict(msgs[0].genl_attrs)
        if ETHTOOL_A_RINGS_TCP_DATA_SPLIT not in d:
            return "unknown"
        return TCP_DATA_SPLIT_NAME.get(d[ETHTOOL_A_RINGS_TCP_DATA_SPLIT][0][0], "unknown")


# ---- network namespaces ------------------------------------------------------------------

def open_in_netns(netns: str | None, timeout_s: float = 2.0) -> GenlSocket:
    """A GenlSocket whose netlink socket lives in network namespace `netns` (`ip netns` name),
    or in ours if None. The calling thread enters the namespace only to create the socket."""
    if netns is None:
        return GenlSocket(timeout_s)
    return GenlSocket(timeout_s, socket_in_netns(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC))
