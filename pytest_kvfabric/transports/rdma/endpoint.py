"""The verbs side both rdma halves share: pyverbs lookup (Verbs) and one Endpoint (device
context, PD, CQ and its channel, MR, RC QPs, the port's counters before and after).

pyverbs is imported inside Verbs() only, so this module imports without rdma-core.
"""
from __future__ import annotations

import enum
import importlib
import ipaddress
import mmap
import os
import random
import select
import time
from typing import Any, Mapping

import numpy as np

from ...errors import ProtocolError, TransportError
from . import probe as probe_mod
from . import qp as qpa
from . import sysfs
from .options import RdmaOptions
from .wr import SGE_MAX_NBYTES

MAP_HUGETLB = getattr(mmap, "MAP_HUGETLB", 0x40000)  # Linux value on x86/arm/riscv

# Buffer address -> how allocate() backed it ("hugetlb 2MiB pages", "THP (madvise)", ...).
ALLOC_KIND: dict[int, str] = {}


def addr_of(region: memoryview) -> int:
    arr = np.frombuffer(region, dtype=np.uint8)
    try:
        return int(arr.ctypes.data)
    finally:
        del arr


def hugepage_nbytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 20


# What /proc/self/fd/N links to for an ibv_comp_channel (an anonymous inode of uverbs).
CHANNEL_FD_LINK = "anon_inode:[infinibandevent]"


def fd_links() -> dict[int, str]:
    """What each open fd of this process links to (a listing fd itself may be among them)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return out


def channel_fd(channel: Any, before: dict[int, str]) -> int:
    """The completion channel's file descriptor, to wait on it with a timeout. Debian's
    pyverbs 44 does not expose it (CompChannel has no `fd`), so take the one uverbs event
    fd that appeared while the channel was created (fd numbers are reused: compare links)."""
    fd = getattr(channel, "fd", None)
    if fd is not None:
        return int(fd)
    new = [n for n, link in fd_links().items() if link == CHANNEL_FD_LINK and before.get(n) != link]
    if len(new) != 1:
        raise TransportError(f"rdma poll=channel: cannot tell the completion channel's fd ({len(new)} new "
                             f"{CHANNEL_FD_LINK} fds; this pyverbs has no CompChannel.fd); use poll=busy")
    return new[0]


class Verbs:
    """The pyverbs modules and enum lookup (pyverbs >= 50 exposes enums as IntEnum classes
    in pyverbs.libibverbs_enums; older releases as constants in pyverbs.enums)."""

    def __init__(self) -> None:
        err = probe_mod.try_import_pyverbs()
        if err is not None:
            raise TransportError(probe_mod.explain_import_error(err))
        self.device = importlib.import_module("pyverbs.device")
        self.pd = importlib.import_module("pyverbs.pd")
        self.cq = importlib.import_module("pyverbs.cq")
        self.mr = importlib.import_module("pyverbs.mr")
        self.qp = importlib.import_module("pyverbs.qp")
        self.addr = importlib.import_module("pyverbs.addr")
        self.wr = importlib.import_module("pyverbs.wr")
        self._mods = []
        for name in ("pyverbs.libibverbs_enums", "pyverbs.enums"):
            try:
                self._mods.append(importlib.import_module(name))
            except ImportError:
                continue
        self._cache: dict[str, int] = {}

    def e(self, name: str) -> int:
        if name in self._cache:
            return self._cache[name]
        for mod in self._mods:
            if hasattr(mod, name):
                value = int(getattr(mod, name))
                break
            found = next((int(v[name]) for v in vars(mod).values()
                          if isinstance(v, type) and issubclass(v, enum.Enum)
                          and name in v.__members__), None)
            if found is not None:
                value = found
                break
        else:
            raise TransportError(f"pyverbs has no enum value {name}")
        self._cache[name] = value
        return value

    def flags(self, names: list[str]) -> int:
        out = 0
        for n in names:
            out |= self.e(n)
        return out

    def modify(self, qp: Any, attrs: Mapping[str, Any], mask: list[str]) -> None:
        """Apply a qp.py (attrs, mask) pair with ibv_modify_qp."""
        a = self.qp.QPAttr()
        for key, value in attrs.items():
            if key in ("qp_state", "path_mtu"):
                setattr(a, key, self.e(value))
            elif key == "qp_access_flags":
                a.qp_access_flags = self.flags(value)
            elif key == "ah_attr":
                g = value["grh"]
                gr = self.addr.GlobalRoute(
                    dgid=self.addr.GID(ipaddress.IPv6Address(g["dgid"]).exploded),
                    flow_label=g["flow_label"], sgid_index=g["sgid_index"],
                    hop_limit=g["hop_limit"], traffic_class=g["traffic_class"])
                a.ah_attr = self.addr.AHAttr(
                    dlid=value["dlid"], sl=value["sl"], src_path_bits=value["src_path_bits"],
                    is_global=value["is_global"], port_num=value["port_num"], gr=gr)
            else:
                setattr(a, key, value)
        try:
            qp.modify(a, self.flags(mask))
        except Exception as exc:
            raise TransportError(f"ibv_modify_qp to {attrs['qp_state']} failed: {exc}") from exc


class Endpoint:
    """What both halves own: device context, PD, CQ (+channel), MR, QPs, counters."""

    spin_cpu_ns = 0  # busy CQ polling on an empty queue (wait_cq)

    def __init__(self, region: memoryview, opts: RdmaOptions, data_addr: str | None,
                 remote_write: bool) -> None:
        self.opts = opts
        self.region = region
        self.base = addr_of(region)
        self.v = Verbs()
        inputs = probe_mod.gather(
            {"device": opts.device, "port": opts.port, "gid_index": opts.gid_index,
             "data_addr": data_addr}, root=opts.sysfs_root, import_pyverbs=lambda: None)
        try:
            self.sel = probe_mod.select(inputs)
        except probe_mod.NotAvailable as exc:
            raise TransportError(f"rdma: {exc}") from None
        v = self.v
        self.closed = False
        try:
            self.ctx = v.device.Context(name=self.sel.device)
            port_attr = self.ctx.query_port(self.sel.port)
            dev_attr = self.ctx.query_device()
            self.fw_ver = getattr(dev_attr, "fw_version", None) or self.sel.fw_ver
            self.lid = int(getattr(port_attr, "lid", 0))
            self.active_mtu = 128 << int(port_attr.active_mtu)
            self.max_msg_nbytes = min(int(port_attr.max_msg_sz) or SGE_MAX_NBYTES, SGE_MAX_NBYTES)
            depth = min(opts.max_send_wr, int(dev_attr.max_qp_wr))
            self.max_send_wr = depth
            self.pd = v.pd.PD(self.ctx)
            cqe = min(int(dev_attr.max_cqe), opts.qps * (depth + opts.recv_depth) + 16)
            self.channel, self.channel_fd = None, -1
            if opts.poll == "channel":
                fds = fd_links()
                self.channel = v.cq.CompChannel(self.ctx)
                self.channel_fd = channel_fd(self.channel, fds)
            self.cq = v.cq.CQ(self.ctx, cqe, None, self.channel, 0)
            # the target's region: written by the peer's RDMA WRITEs and read by its RDMA READs
            access = ["IBV_ACCESS_LOCAL_WRITE"] + (
                ["IBV_ACCESS_REMOTE_WRITE", "IBV_ACCESS_REMOTE_READ"] if remote_write else [])
            self.mr = v.mr.MR(self.pd, len(region), v.flags(access), address=self.base)
            self.qps = []
            self.psns = []
            init_attr = v.qp.QPInitAttr(
                qp_type=v.e("IBV_QPT_RC"), scq=self.cq, rcq=self.cq,
                cap=v.qp.QPCap(max_send_wr=depth, max_recv_wr=opts.recv_depth,
                               max_send_sge=1, max_recv_sge=1), sq_sig_all=0)
            for _ in range(opts.qps):
                q = v.qp.QP(self.pd, init_attr)
                v.modify(q, *qpa.init_attrs(opts.qp, remote_write=remote_write))
                self.qps.append(q)
                self.psns.append(random.getrandbits(24))
        except TransportError:
            self.close()
            raise
        except Exception as exc:  # PyverbsRDMAError and friends: name the verbs call
            self.close()
            raise TransportError(f"rdma setup on {self.sel.device} port {self.sel.port}: {exc}") from exc
        self.qp_index = {int(q.qp_num): i for i, q in enumerate(self.qps)}
        self.counters_before = sysfs.read_counters(self.opts.sysfs_root, self.sel.device, self.sel.port)
        self.counters_after: dict[str, int] | None = None

    def connect_qps(self, remote: Mapping[str, Any]) -> int:
        """INIT -> RTR -> RTS towards the peer's QPs; returns the path MTU used."""
        qpns, psns = list(remote["qpns"]), list(remote["psns"])
        if len(qpns) != len(self.qps) or len(psns) != len(self.qps):
            raise ProtocolError(f"peer has {len(qpns)} QPs, this side {len(self.qps)} (option qps)")
        mtu = qpa.negotiated_mtu(self.opts.qp, self.active_mtu, remote.get("active_mtu"))
        for q, qpn, rpsn, spsn in zip(self.qps, qpns, psns, self.psns):
            self.v.modify(q, *qpa.rtr_attrs(
                self.opts.qp, dest_qpn=int(qpn), rq_psn=int(rpsn), dgid=str(remote["gid"]),
                sgid_index=self.sel.gid_index, path_mtu=mtu, dlid=int(remote.get("lid", 0))))
            self.v.modify(q, *qpa.rts_attrs(self.opts.qp, sq_psn=spsn))
        self.path_mtu = mtu
        return mtu

    def wait_cq(self, timeout_s: float) -> list[Any]:
        """Work completions, waiting at most timeout_s for the first one. Busy polling adds
        the CPU it spends on an empty queue to spin_cpu_ns (reported apart from the work)."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        spin0 = 0  # thread CPU clock when busy polling first found the queue empty
        while True:
            n, wcs = self.cq.poll(64)
            left = deadline - time.monotonic()
            if n or left <= 0:
                if spin0:
                    self.spin_cpu_ns += time.thread_time_ns() - spin0
                return wcs if n else []
            if self.channel is None:
                spin0 = spin0 or time.thread_time_ns()
                continue  # busy poll: spin until the deadline
            self.cq.req_notify()
            n, wcs = self.cq.poll(64)  # a completion may have raced the arming
            if n:
                return wcs
            ready, _, _ = select.select([self.channel_fd], [], [], left)
            if ready:
                self.channel.get_cq_event(self.cq)
                self.cq.ack_events(1)

    def check_wc(self, wc: Any, what: str) -> None:
        if int(wc.status) == 0:
            return
        msg = qpa.describe_wc_error(int(wc.status), vendor_err=int(wc.vendor_err), what=what)
        i = self.qp_index.get(int(wc.qp_num))
        if i is not None:
            try:
                attr, _ = self.qps[i].query(self.v.e("IBV_QP_STATE"))
                if int(attr.qp_state) == self.v.e("IBV_QPS_ERR"):
                    msg += f"; QP {int(wc.qp_num):#x} is in state IBV_QPS_ERR"
            except Exception:
                pass
        raise TransportError(f"rdma: {msg}")

    def data_path(self, side: str) -> dict[str, Any]:
        after = self.counters_after if self.counters_after is not None else sysfs.read_counters(
            self.opts.sysfs_root, self.sel.device, self.sel.port)
        delta = sysfs.counter_delta(self.counters_before, after)
        s = self.sel
        return {
            "transport": "rdma",
            "description": f"RDMA WRITE ({'RoCE v2' if s.link_layer == 'Ethernet' else s.link_layer}) "
                           f"{side} on {s.device} port {s.port}, placed by the NIC",
            "zero_copy": True,
            "device": s.device,
            "fw_ver": self.fw_ver,
            "port": s.port,
            "link_layer": s.link_layer,
            "gid_index": s.gid_index,
            "gid": s.gid,
            "gid_type": s.gid_type,
            "active_mtu": self.active_mtu,
            "path_mtu": getattr(self, "path_mtu", None),
            "rate": s.rate,
            "qps": len(self.qps),
            "traffic_class": self.opts.qp.traffic_class,
            "poll": self.opts.poll,
            "memory": ALLOC_KIND.get(self.base, "caller-provided memory"),
            "counters_before": self.counters_before,
            "counters_after": after,
            "counters_delta": delta,
            "evidence": sysfs.evidence(delta),
        }

    def close(self) -> None:
        if getattr(self, "closed", True):
            return
        self.closed = True
        if self.counters_after is None and hasattr(self, "sel"):
            self.counters_after = sysfs.read_counters(self.opts.sysfs_root, self.sel.device, self.sel.port)
        # Context.close() destroys everything created on it (QPs, MR, CQ, PD) in order.
        ctx = getattr(self, "ctx", None)
        if ctx is not None:
            ctx.close()
