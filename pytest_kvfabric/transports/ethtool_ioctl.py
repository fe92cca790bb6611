"""The few ethtool facts we need, asked of the kernel directly (SIOCETHTOOL), so no `ethtool` binary.

Why: the netns fabric toggles GRO/GSO/TSO and the probes want the driver name; shelling out to
`ethtool` made both fail on machines without it. The legacy ioctls used here (GDRVINFO and the
per-offload get/set pairs) are kept by every kernel and map onto the netdev feature bits exactly
as `ethtool -K IF gro off` does. Stdlib only: `fabric/_probe.py` imports it on remote hosts.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x03
# offload -> (get cmd, set cmd); include/uapi/linux/ethtool.h
OFFLOAD_CMDS: dict[str, tuple[int, int]] = {
    "tso": (0x1E, 0x1F),
    "gso": (0x23, 0x24),
    "gro": (0x2B, 0x2C),
    "sg": (0x18, 0x19),
    "rx_csum": (0x14, 0x15),
    "tx_csum": (0x16, 0x17),
}
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: 16-byte name + 24-byte union
_DRVINFO = struct.Struct("I32s32s32s32s32s12s5I")
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in_netns(netns: str | None, family: int = socket.AF_INET, type_: int = socket.SOCK_DGRAM,
                    proto: int = 0) -> socket.socket:
    """A socket living in network namespace `netns` (`ip netns` name), or ours if None.
    The calling thread enters the namespace only to create the socket."""
    if netns is None:
        return socket.socket(family, type_, proto)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                return socket.socket(family, type_, proto)
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _ioctl(sock: socket.socket, ifname: str, payload: bytes) -> bytes:
    name = ifname.encode()
    if not name or len(name) > 15:
        raise ValueError(f"interface name {ifname!r} is not 1-15 bytes")
    buf = ctypes.create_string_buffer(payload, len(payload))
    ifr = struct.pack("16sP", name, ctypes.addressof(buf)).ljust(_IFREQ_SIZE, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return buf.raw


def drvinfo(sock: socket.socket, ifname: str) -> dict[str, str]:
    """{driver, version, firmware-version, bus-info} as `ethtool -i` names them."""
    raw = _ioctl(sock, ifname, _DRVINFO.pack(ETHTOOL_GDRVINFO, *(b"",) * 6, *(0,) * 5))
    f = _DRVINFO.unpack(raw)

    def s(b: bytes) -> str:
        return b.split(b"\0", 1)[0].decode(errors="replace")

    return {"driver": s(f[1]), "version": s(f[2]), "firmware-version": s(f[3]), "bus-info": s(f[4])}


def get_offloads(sock: socket.socket, ifname: str) -> dict[str, str]:
    """{offload: "on"|"off"} for the offloads in OFFLOAD_CMDS the device answers about."""
    out: dict[str, str] = {}
    for key, (get_cmd, _) in OFFLOAD_CMDS.items():
        try:
            raw = _ioctl(sock, ifname, struct.pack("II", get_cmd, 0))
        except OSError:
            continue
        out[key] = "on" if struct.unpack("II", raw)[1] else "off"
    return out


def set_offloads(sock: socket.socket, ifname: str, offloads: dict[str, bool]) -> None:
    """Apply {offload: on?}; raises OSError naming the offload the kernel refused."""
    for key, on in offloads.items():
        if key not in OFFLOAD_CMDS:
            raise ValueError(f"unknown offload {key!r}; valid: {', '.join(OFFLOAD_CMDS)}")
        try:
            _ioctl(sock, ifname, struct.pack("II", OFFLOAD_CMDS[key][1], int(on)))
        except OSError as exc:
            raise OSError(exc.errno, f"setting {key} {'on' if on else 'off'} on {ifname}: "
                                     f"{os.strerror(exc.errno or 0)}") from None
