"""Pure codecs for devmem TCP socket control data (no I/O).

Numbers and layouts from the kernel UAPI (checked against include/uapi/asm-generic/socket.h
and include/uapi/linux/uio.h, Linux 6.12+; Documentation/networking/devmem.rst):

    #define SO_DEVMEM_LINEAR 78   (SCM_DEVMEM_LINEAR)
    #define SO_DEVMEM_DMABUF 79   (SCM_DEVMEM_DMABUF)
    #define SO_DEVMEM_DONTNEED 80
    #define MSG_SOCK_DEVMEM 0x2000000
    struct dmabuf_cmsg { __u64 frag_offset; __u32 frag_size; __u32 frag_token;
                         __u32 dmabuf_id; __u32 flags; };           /* 24 bytes */
    struct dmabuf_token { __u32 token_start; __u32 token_count; };  /* 8 bytes */

(alpha, mips, parisc and sparc number the SO_ options differently; x86/arm use asm-generic.)
SO_DEVMEM_DONTNEED takes at most 128 tokens and frees at most 1024 frags per call.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from ...errors import ProtocolError

SOL_SOCKET = socket.SOL_SOCKET
SO_DEVMEM_LINEAR = 78
SCM_DEVMEM_LINEAR = SO_DEVMEM_LINEAR
SO_DEVMEM_DMABUF = 79
SCM_DEVMEM_DMABUF = SO_DEVMEM_DMABUF
SO_DEVMEM_DONTNEED = 80
MSG_SOCK_DEVMEM = 0x2000000
MSG_ZEROCOPY = 0x4000000
SO_ZEROCOPY = 60

DMABUF_CMSG = struct.Struct("=QIIII")  # native layout, 24 bytes, no padding
DMABUF_TOKEN = struct.Struct("=II")
MAX_DONTNEED_TOKENS = 128  # per setsockopt(SO_DEVMEM_DONTNEED) call
MAX_DONTNEED_FRAGS = 1024  # total token_count per call; the kernel stops early past it

# struct cmsghdr on 64-bit Linux: size_t cmsg_len; int cmsg_level; int cmsg_type; data aligned to 8.
CMSGHDR = struct.Struct("=Qii")
_CMSG_ALIGN = 8

# MSG_ZEROCOPY completions (sock_extended_err in a IP_RECVERR/IPV6_RECVERR cmsg).
SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, origin, type, code, pad, info, data
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1


@dataclass(frozen=True)
class Frag:
    """One received fragment, in stream order.

    device=True (SCM_DEVMEM_DMABUF): payload is in dma-buf `dmabuf_id` at [offset, offset+size),
    pinned until `token` is returned. device=False (SCM_DEVMEM_LINEAR): `size` bytes landed in
    host memory (the recvmsg iov), next in the iov buffer; offset/token/dmabuf_id are 0.
    """

    device: bool
    offset: int
    size: int
    token: int = 0
    dmabuf_id: int = 0
    flags: int = 0


def _align(n: int) -> int:
    return (n + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)


def cmsg_len(data_nbytes: int) -> int:
    return CMSGHDR.size + data_nbytes


def cmsg_space(data_nbytes: int) -> int:
    return CMSGHDR.size + _align(data_nbytes)


def encode_dmabuf_cmsg(offset: int, size: int, token: int, dmabuf_id: int, flags: int = 0) -> bytes:
    return DMABUF_CMSG.pack(offset, size, token, dmabuf_id, flags)


def encode_cmsg(level: int, type_: int, data: bytes) -> bytes:
    """One raw cmsg with its trailing alignment padding (what the kernel writes)."""
    raw = CMSGHDR.pack(cmsg_len(len(data)), level, type_) + data
    return raw + b"\0" * (cmsg_space(len(data)) - len(raw))


def decode_frag(type_: int, data: bytes | memoryview) -> Frag:
    """Decode the payload of one SCM_DEVMEM_* cmsg; raise ProtocolError on a malformed one."""
    if type_ not in (SCM_DEVMEM_DMABUF, SCM_DEVMEM_LINEAR):
        raise ProtocolError(f"not a devmem cmsg: type {type_}")
    name = "SCM_DEVMEM_DMABUF" if type_ == SCM_DEVMEM_DMABUF else "SCM_DEVMEM_LINEAR"
    if len(data) < DMABUF_CMSG.size:
        raise ProtocolError(
            f"truncated {name} cmsg: {len(data)} of {DMABUF_CMSG.size} bytes of struct dmabuf_cmsg"
        )
    offset, size, token, dmabuf_id, flags = DMABUF_CMSG.unpack_from(data)
    if size == 0:
        raise ProtocolError(f"malformed {name} cmsg: frag_size 0")
    if type_ == SCM_DEVMEM_LINEAR:
        return Frag(False, 0, size)
    return Frag(True, offset, size, token, dmabuf_id, flags)


def parse_ancdata(
    ancdata: Iterable[tuple[int, int, bytes]], msg_flags: int = 0
) -> list[Frag]:
    """Frags from Python's socket.recvmsg ancdata list, in stream order.

    MSG_CTRUNC means the kernel dropped cmsgs for lack of room: tokens would leak and bytes
    would be misplaced, so it is an error (give recvmsg more ancillary space). Cmsgs of other
    levels/types (timestamps...) are skipped.
    """
    if msg_flags & socket.MSG_CTRUNC:
        raise ProtocolError(
            "devmem control data truncated (MSG_CTRUNC): ancillary buffer too small for the frags"
        )
    frags = []
    for level, type_, data in ancdata:
        if level == SOL_SOCKET and type_ in (SCM_DEVMEM_DMABUF, SCM_DEVMEM_LINEAR):
            frags.append(decode_frag(type_, data))
    return frags


def parse_control(buf: bytes | bytearray | memoryview) -> list[Frag]:
    """Frags from a raw msg_control buffer (as recvmsg(2) fills it), in stream order.

    Raises ProtocolError naming the offset of a cmsg whose header or length is inconsistent.
    """
    view = memoryview(buf).cast("B")
    frags = []
    pos = 0
    while pos < len(view):
        if len(view) - pos < CMSGHDR.size:
            raise ProtocolError(
                f"truncated cmsg header at offset {pos}: {len(view) - pos} of {CMSGHDR.size} bytes"
            )
        length, level, type_ = CMSGHDR.unpack_from(view, pos)
        if length < CMSGHDR.size:
            raise ProtocolError(f"malformed cmsg at offset {pos}: cmsg_len {length} < header size")
        if pos + length > len(view):
            raise ProtocolError(
                f"truncated cmsg at offset {pos}: cmsg_len {length} but only "
                f"{len(view) - pos} bytes of control data"
            )
        data = view[pos + CMSGHDR.size : pos + length]
        if level == SOL_SOCKET and type_ in (SCM_DEVMEM_DMABUF, SCM_DEVMEM_LINEAR):
            frags.append(decode_frag(type_, data))
        pos += _align(length)
    return frags


# ---- token return ------------------------------------------------------------------------

def coalesce_tokens(tokens: Iterable[int]) -> list[tuple[int, int]]:
    """(token_start, token_count) runs of consecutive tokens, in the order given."""
    runs: list[list[int]] = []
    for t in tokens:
        if runs and runs[-1][0] + runs[-1][1] == t:
            runs[-1][1] += 1
        else:
            runs.append([t, 1])
    return [(s, c) for s, c in runs]


def batch_tokens(
    tokens: Sequence[int],
    max_tokens: int = MAX_DONTNEED_TOKENS,
    max_frags: int = MAX_DONTNEED_FRAGS,
) -> list[list[tuple[int, int]]]:
    """Split tokens into SO_DEVMEM_DONTNEED calls within the kernel's per-call limits.

    Each call holds at most `max_tokens` dmabuf_token entries whose counts sum to at most
    `max_frags`; a run longer than that is split across calls.
    """
    if max_tokens < 1 or max_frags < 1:
        raise ValueError("max_tokens and max_frags must be >= 1")
    calls: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    cur_frags = 0
    for start, count in coalesce_tokens(tokens):
        while count:
            if len(cur) == max_tokens or cur_frags == max_frags:
                calls.append(cur)
                cur, cur_frags = [], 0
            take = min(count, max_frags - cur_frags)
            cur.append((start, take))
            cur_frags += take
            start += take
            count -= take
    if cur:
        calls.append(cur)
    return calls


def encode_tokens(runs: Sequence[tuple[int, int]]) -> bytes:
    """The option value for one SO_DEVMEM_DONTNEED call: an array of struct dmabuf_token."""
    return b"".join(DMABUF_TOKEN.pack(s, c) for s, c in runs)


def decode_tokens(buf: bytes) -> list[tuple[int, int]]:
    if len(buf) % DMABUF_TOKEN.size:
        raise ProtocolError(f"dmabuf_token array of {len(buf)} bytes is not a multiple of 8")
    return [DMABUF_TOKEN.unpack_from(buf, i) for i in range(0, len(buf), DMABUF_TOKEN.size)]


# ---- TX ----------------------------------------------------------------------------------

def encode_tx_cmsg(dmabuf_id: int) -> tuple[int, int, bytes]:
    """The SCM_DEVMEM_DMABUF cmsg for sendmsg: the bound TX dma-buf id as a u32; the iovs of
    that sendmsg are offsets into the dma-buf, not addresses."""
    return (SOL_SOCKET, SCM_DEVMEM_DMABUF, struct.pack("=I", dmabuf_id))


@dataclass(frozen=True)
class ZcCompletion:
    lo: int
    hi: int
    copied: bool


def parse_zerocopy_completion(data: bytes) -> ZcCompletion | None:
    """A MSG_ZEROCOPY completion range from a sock_extended_err, or None if it is another error."""
    if len(data) < SOCK_EXTENDED_ERR.size:
        raise ProtocolError(
            f"truncated sock_extended_err: {len(data)} of {SOCK_EXTENDED_ERR.size} bytes"
        )
    errno_, origin, _type, code, _pad, info, data_ = SOCK_EXTENDED_ERR.unpack_from(data)
    if origin != SO_EE_ORIGIN_ZEROCOPY or errno_ != 0:
        return None
    return ZcCompletion(info, data_, bool(code & SO_EE_CODE_ZEROCOPY_COPIED))
