"""transport.py's glue (descriptor, side connection, QP transitions, chained posts, immediates,
completions, errors) driven through a stand-in for pyverbs.

The stand-in is a test double, clearly not a NIC: it implements the pyverbs calls the
transport makes and "places" a write with a memmove between registered regions, enforcing
rkeys, remote-write access, QP states and receive WRs the way RC verbs do. It checks the
transport's use of the verbs API here; the real data path needs a real RDMA device (the
probe says so, and nothing here changes what the probe reports).
"""
from __future__ import annotations

import ctypes
import enum
import os
import time
import sys
import types
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from pytest_kvfabric.errors import TransportError
from pytest_kvfabric.transports.base import XFER_DTYPE
from pytest_kvfabric.transports.rdma.sysfs_tree import write_port

# ----------------------------------------------------------------------------- the double


class E:  # enum classes shaped like pyverbs.libibverbs_enums
    ibv_qp_type = enum.IntEnum("ibv_qp_type", {"IBV_QPT_RC": 2})
    ibv_qp_state = enum.IntEnum("ibv_qp_state", {"IBV_QPS_RESET": 0, "IBV_QPS_INIT": 1,
                                                 "IBV_QPS_RTR": 2, "IBV_QPS_RTS": 3,
                                                 "IBV_QPS_ERR": 6})
    ibv_mtu = enum.IntEnum("ibv_mtu", {f"IBV_MTU_{128 << i}": i for i in range(1, 6)})
    ibv_access_flags = enum.IntFlag("ibv_access_flags", {"IBV_ACCESS_LOCAL_WRITE": 1,
                                                         "IBV_ACCESS_REMOTE_WRITE": 2,
                                                         "IBV_ACCESS_REMOTE_READ": 4})
    ibv_wr_opcode = enum.IntEnum("ibv_wr_opcode", {"IBV_WR_RDMA_WRITE": 0,
                                                   "IBV_WR_RDMA_WRITE_WITH_IMM": 1,
                                                   "IBV_WR_RDMA_READ": 4})
    ibv_send_flags = enum.IntFlag("ibv_send_flags", {"IBV_SEND_SIGNALED": 2})
    ibv_qp_attr_mask = enum.IntFlag("ibv_qp_attr_mask", {n: 1 << i for i, n in enumerate([
        "IBV_QP_STATE", "IBV_QP_CUR_STATE", "IBV_QP_EN_SQD_ASYNC_NOTIFY", "IBV_QP_ACCESS_FLAGS",
        "IBV_QP_PKEY_INDEX", "IBV_QP_PORT", "IBV_QP_QKEY", "IBV_QP_AV", "IBV_QP_PATH_MTU",
        "IBV_QP_TIMEOUT", "IBV_QP_RETRY_CNT", "IBV_QP_RNR_RETRY", "IBV_QP_RQ_PSN",
        "IBV_QP_MAX_QP_RD_ATOMIC", "IBV_QP_ALT_PATH", "IBV_QP_MIN_RNR_TIMER", "IBV_QP_SQ_PSN",
        "IBV_QP_MAX_DEST_RD_ATOMIC", "IBV_QP_PATH_MIG_STATE", "IBV_QP_CAP", "IBV_QP_DEST_QPN"])})


M = E.ibv_qp_attr_mask
NEEDED = {  # what ibv_modify_qp requires for each RC transition
    1: M.IBV_QP_STATE | M.IBV_QP_PKEY_INDEX | M.IBV_QP_PORT | M.IBV_QP_ACCESS_FLAGS,
    2: M.IBV_QP_STATE | M.IBV_QP_AV | M.IBV_QP_PATH_MTU | M.IBV_QP_DEST_QPN | M.IBV_QP_RQ_PSN
    | M.IBV_QP_MAX_DEST_RD_ATOMIC | M.IBV_QP_MIN_RNR_TIMER,
    3: M.IBV_QP_STATE | M.IBV_QP_SQ_PSN | M.IBV_QP_TIMEOUT | M.IBV_QP_RETRY_CNT
    | M.IBV_QP_RNR_RETRY | M.IBV_QP_MAX_QP_RD_ATOMIC,
}


class Fabric:
    def __init__(self):
        self.mrs = {}
        self.qps = {}
        self.next_key = 0x100
        self.next_qpn = 0x40
        self.posts = []  # (qp_num, [wr_id...]) per post_send call


FABRIC = Fabric()


def build_modules():
    class Context:
        def __init__(self, name):
            self.name = name

        def query_port(self, port):
            return SimpleNamespace(active_mtu=E.ibv_mtu.IBV_MTU_4096, max_msg_sz=1 << 12,
                                   lid=0, state=4)

        def query_device(self):
            return SimpleNamespace(max_qp_wr=1 << 14, max_cqe=1 << 16, fw_version="9.9.9")

        def close(self):
            pass

    class PD:
        def __init__(self, ctx):
            self.ctx = ctx

    class CompChannel:  # like pyverbs 44: no `fd` attribute; an eventfd stands for uverbs' fd
        def __init__(self, ctx):
            self.r = self.w = os.eventfd(0)

        def get_cq_event(self, cq):
            os.eventfd_read(self.r)

    class CQ:
        def __init__(self, ctx, cqe, cq_context=None, channel=None, comp_vector=0):
            self.q = deque()
            self.channel = channel
            self.armed = False

        def push(self, **wc):
            base = dict(wr_id=0, status=0, opcode=0, vendor_err=0, qp_num=0, imm_data=0)
            self.q.append(SimpleNamespace(**{**base, **wc}))
            if self.channel is not None and self.armed:
                self.armed = False
                os.eventfd_write(self.channel.w, 1)

        def poll(self, n=1):
            out = [self.q.popleft() for _ in range(min(n, len(self.q)))]
            return len(out), out

        def req_notify(self, solicited_only=False):
            self.armed = True

        def ack_events(self, n):
            pass

    class MR:
        def __init__(self, pd, length, access, address=None):
            FABRIC.next_key += 1
            self.lkey = self.rkey = FABRIC.next_key
            FABRIC.mrs[self.rkey] = (address, length, int(access))

    class QPAttr:
        def __init__(self):
            self.qp_state = 0

    class QPCap:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class QPInitAttr:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class QP:
        def __init__(self, pd, init_attr):
            FABRIC.next_qpn += 1
            self.qp_num = FABRIC.next_qpn
            self.cq = init_attr.scq
            self.cap = init_attr.cap
            self.state = 0
            self.recvs = deque()
            self.attrs = {}
            FABRIC.qps[self.qp_num] = self

        def modify(self, attr, mask):
            new = int(attr.qp_state)
            if new != self.state + 1 or (mask & NEEDED[new]) != NEEDED[new]:
                raise RuntimeError(f"bad transition {self.state}->{new} mask {mask:#x}")
            self.state = new
            self.attrs.update({k: v for k, v in vars(attr).items()})

        def query(self, mask):
            return SimpleNamespace(qp_state=self.state), None

        def post_recv(self, wr):
            if len(self.recvs) >= self.cap.max_recv_wr:  # ibv_post_recv: ENOMEM, as rxe answers
                raise RuntimeError("Failed to post recv (errno 12): receive queue full")
            self.recvs.append(wr.wr_id)

        def post_send(self, wr):
            if self.state != 3:
                raise RuntimeError("post_send: QP not in RTS")
            n, w = 0, wr
            while w is not None:
                n, w = n + 1, w._next
            if n > self.cap.max_send_wr:  # a chain longer than the send queue: ENOMEM
                raise RuntimeError(f"Failed to post send (errno 12): {n} WRs > max_send_wr")
            ids = []
            while wr is not None:
                ids.append(wr.wr_id)
                self._execute(wr)
                wr = wr._next
            FABRIC.posts.append((self.qp_num, ids))

        def _execute(self, wr):
            if self.state == 6:
                self.cq.push(wr_id=wr.wr_id, status=5, qp_num=self.qp_num)  # flushed
                return
            peer = FABRIC.qps[self.attrs["dest_qp_num"]]
            addr, length, access = FABRIC.mrs.get(wr.rkey, (0, 0, 0))
            sge = wr.sg[0]
            need = 4 if wr.opcode == 4 else 2  # REMOTE_READ for an RDMA READ, else REMOTE_WRITE
            if not access & need or not addr <= wr.raddr <= wr.raddr + sge.length <= addr + length:
                self.state = 6
                self.cq.push(wr_id=wr.wr_id, status=10, qp_num=self.qp_num)  # REM_ACCESS_ERR
                return
            if wr.opcode == 4:  # RDMA READ: remote -> local
                ctypes.memmove(sge.addr, wr.raddr, sge.length)
            else:
                ctypes.memmove(wr.raddr, sge.addr, sge.length)
            if wr.opcode == 1:
                if not peer.recvs:
                    self.state = 6
                    self.cq.push(wr_id=wr.wr_id, status=13, qp_num=self.qp_num)
                    return
                peer.recvs.popleft()
                peer.cq.push(opcode=129, imm_data=wr.imm_data, qp_num=peer.qp_num)
            if wr.send_flags & 2:
                self.cq.push(wr_id=wr.wr_id, qp_num=self.qp_num)

    class SGE:
        def __init__(self, addr, length, lkey):
            self.addr, self.length, self.lkey = addr, length, lkey

    class SendWR:
        def __init__(self, wr_id=0, opcode=0, num_sge=0, imm_data=0, sg=None, send_flags=2):
            assert num_sge == 1 and len(sg) == 1 and sg[0].length > 0
            self.wr_id, self.opcode, self.sg = wr_id, opcode, sg
            self.imm_data, self.send_flags, self._next = imm_data, send_flags, None

        @property
        def next_wr(self):
            return self._next

        @next_wr.setter
        def next_wr(self, val):
            self._next = val

        def set_wr_rdma(self, rkey, addr):
            self.rkey, self.raddr = rkey, addr

    class RecvWR:
        def __init__(self, wr_id=0, num_sge=0, sg=None):
            # what Debian's pyverbs 44 says (and rdma_rxe would refuse anyway): the
            # transport's first run on a real provider died here
            if num_sge < 1 or not sg or len(sg) != num_sge:
                raise ValueError("A WR needs at least one SGE")
            if any(s.lkey not in FABRIC.mrs for s in sg):
                raise ValueError("receive SGE with an lkey no MR issued")
            self.wr_id = wr_id

    def GID(val):
        assert len(val.split(":")) == 8  # pyverbs wants the 8-word form
        return val

    mods = {}
    for name, attrs in {
        "pyverbs": {},
        "pyverbs.device": {"Context": Context},
        "pyverbs.pd": {"PD": PD},
        "pyverbs.cq": {"CQ": CQ, "CompChannel": CompChannel},
        "pyverbs.mr": {"MR": MR},
        "pyverbs.qp": {"QP": QP, "QPAttr": QPAttr, "QPCap": QPCap, "QPInitAttr": QPInitAttr},
        "pyverbs.addr": {"GID": GID, "GlobalRoute": lambda **kw: kw, "AHAttr": lambda **kw: kw},
        "pyverbs.wr": {"SGE": SGE, "SendWR": SendWR, "RecvWR": RecvWR},
        "pyverbs.libibverbs_enums": {k: v for k, v in vars(E).items() if not k.startswith("_")},
    }.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mods[name] = mod
    return mods


# ----------------------------------------------------------------------------- fixtures

LOOP_GID = "0000:0000:0000:0000:0000:ffff:7f00:0001"  # ::ffff:127.0.0.1


@pytest.fixture
def verbs(monkeypatch, tmp_path):
    from pytest_kvfabric.transports.rdma import endpoint

    monkeypatch.setattr(endpoint, "CHANNEL_FD_LINK", "anon_inode:[eventfd]")
    for name, mod in build_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    root = str(tmp_path / "ib")
    write_port(root, "rxe0", gids=[(0, "fe80:0000:0000:0000:0000:0000:0000:0001",
                                    "IB/RoCE v1", "lo"), (1, LOOP_GID, "RoCE v2", "lo")],
               hw_counters={"out_of_sequence": 0}, counters={"port_xmit_data": 0})
    FABRIC.posts.clear()
    return root


def pair(root, nbytes=1 << 16, **opts):
    from pytest_kvfabric.transports.rdma.transport import RdmaTransport

    options = {"sysfs_root": root, "token": "t0k", "data_addr": "127.0.0.1", **opts}
    src, dst = RdmaTransport.allocate(nbytes, options), RdmaTransport.allocate(nbytes, options)
    target = RdmaTransport.target(dst, options)
    desc = target.listen("127.0.0.1", 5.0)
    init = RdmaTransport.initiator(src, options)
    return src, dst, target, desc, init


def xfers(rows):
    b = np.zeros(len(rows), XFER_DTYPE)
    for i, (src, dst, n, notify) in enumerate(rows):
        b[i] = (i, src, dst, n, notify)
    return b


def drain_target(target, want_notifies, rounds=200):
    placed, notes = [], []
    for _ in range(rounds):
        p, n = target.progress(0.01)
        placed += p.tolist()
        notes += n.tolist()
        if len(notes) >= want_notifies:
            break
    return placed, notes


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("poll", ["busy", "channel"])
def test_writes_land_and_both_sides_report(verbs, poll):
    src, dst, target, desc, init = pair(verbs, qps=2, signal_every=2, max_send_wr=4, poll=poll)
    try:
        assert desc["gid"] == LOOP_GID and desc["gid_index"] == 1 and len(desc["qpns"]) == 2
        assert desc["rkey"] and desc["region_nbytes"] == len(dst)
        init.connect(desc, 5.0)
        np.frombuffer(src, np.uint8)[:] = np.arange(len(src)) % 251
        # request 5: three pages (one larger than max_msg_sz 4096), request 9: one page
        b = xfers([(0, 32768, 10000, -1), (10000, 42768, 100, -1), (20000, 0, 3000, 5),
                   (30000, 50000, 500, 9)])
        init.post(b, 5.0)
        done = []
        for _ in range(100):
            done += init.poll(0.01)["xfer"].tolist()
            if len(done) == 4:
                break
        assert sorted(done) == [0, 1, 2, 3] and init.outstanding() == 0
        placed, notes = drain_target(target, 2)
        assert sorted(r[0] for r in placed) == [0, 1, 2, 3]
        assert {(r[1], r[2]) for r in placed} == {(32768, 10000), (42768, 100), (0, 3000),
                                                  (50000, 500)}
        assert sorted(n[0] for n in notes) == [5, 9]
        s, d = np.frombuffer(src, np.uint8), np.frombuffer(dst, np.uint8)
        for src_off, dst_off, n, _ in [(0, 32768, 10000, 0), (20000, 0, 3000, 0)]:
            assert np.array_equal(d[dst_off:dst_off + n], s[src_off:src_off + n])
        # chained posts never exceed max_send_wr, and every QP was moved to RTS
        assert max(len(ids) for _, ids in FABRIC.posts) <= 4
        assert all(FABRIC.qps[q].state == 3 for q in desc["qpns"])
        dp = init.data_path()
        assert dp["device"] == "rxe0" and dp["gid_type"] == "RoCE v2" and dp["fw_ver"] == "9.9.9"
        assert dp["path_mtu"] == 4096 and dp["poll"] == poll
        assert "counters_delta" in dp and dp["memory"].startswith(
            ("hugetlb", "transparent huge pages", "4 KiB pages"))
        assert target.data_path()["guard_round_trips"] == 0  # all destination bytes fresh
        # an idle wait: busy polling counts its CPU as spin (reported apart), a channel sleeps
        before = target.spin_cpu_ns
        c0 = time.thread_time_ns()
        assert not len(target.progress(0.02)[0])
        spun = target.spin_cpu_ns - before
        assert (0 < spun <= time.thread_time_ns() - c0) if poll == "busy" else spun == 0
    finally:
        init.close()
        for _ in range(100):
            target.progress(0.01)
            if target.peers_closed():
                break
        assert target.peers_closed()
        target.close()


def test_initiator_only_has_local_access_target_has_remote_write_and_read(verbs):
    src, dst, target, desc, init = pair(verbs)
    try:
        init.connect(desc, 5.0)
        access = {FABRIC.mrs[k][0]: FABRIC.mrs[k][2] for k in FABRIC.mrs}
        from pytest_kvfabric.transports.rdma.endpoint import addr_of

        assert access[addr_of(dst)] == 7 and access[addr_of(src)] == 1
        init_qp = FABRIC.qps[FABRIC.qps[desc["qpns"][0]].attrs["dest_qp_num"]]
        assert init_qp.attrs["qp_access_flags"] == 1
        assert FABRIC.qps[desc["qpns"][0]].attrs["qp_access_flags"] == 7
    finally:
        init.close()
        target.close()


def test_remote_access_error_is_named(verbs):
    src, dst, target, desc, init = pair(verbs)
    try:
        init.connect(desc, 5.0)
        init.remote["rkey"] = desc["rkey"] + 1000  # an rkey the target never issued
        init.post(xfers([(0, 0, 64, 1)]), 5.0)
        with pytest.raises(TransportError, match=r"IBV_WC_REM_ACCESS_ERR .*rkey.*"
                                                 r"QP 0x[0-9a-f]+ is in state IBV_QPS_ERR"):
            init.poll(1.0)
    finally:
        init.close()
        target.close()


def test_a_stranger_is_refused_and_the_token_holder_still_connects(verbs):
    from pytest_kvfabric.transports.rdma.transport import RdmaTransport

    src, dst, target, desc, init = pair(verbs)
    other = RdmaTransport.initiator(src, {"sysfs_root": verbs, "token": "wrong",
                                          "data_addr": "127.0.0.1"})
    try:
        with pytest.raises(TransportError, match="refused the connection: bad token"):
            other.connect(desc, 5.0)
        target.progress(0.05)  # a stranger is no error of the run
        init.connect(desc, 5.0)
        init.post(xfers([(0, 0, 64, 1)]), 5.0)
        _, notes = drain_target(target, 1)
        assert [n[0] for n in notes] == [1]
        dp = target.data_path()
        assert dp["side_connections_refused"] == 1 and "bad token" in dp["side_refusals"][0]
    finally:
        other.close()
        init.close()
        target.close()


def test_no_token_holder_in_time_is_an_error_naming_the_refusals(verbs):
    from pytest_kvfabric.transports.rdma.transport import RdmaTransport

    src, dst, target, desc, _ = pair(verbs, accept_timeout_s=1.0)
    other = RdmaTransport.initiator(src, {"sysfs_root": verbs, "token": "wrong", "data_addr": "127.0.0.1"})
    try:
        with pytest.raises(TransportError, match="bad token"):
            other.connect(desc, 5.0)
        with pytest.raises(TransportError, match=r"no initiator with the run's token .*1 refused: "
                                                 r"127\.0\.0\.1:\d+: bad token"):
            for _ in range(300):
                target.progress(0.01)
    finally:
        other.close()
        target.close()


def test_a_garbled_frame_after_connect_is_raised_not_swallowed(verbs):

    src, dst, target, desc, init = pair(verbs)
    try:
        init.connect(desc, 5.0)
        init.sock.sendall(b"Z\x00\x00\x00\x01x")  # no such frame kind
        with pytest.raises(TransportError, match="rdma side connection: bad side-connection frame kind"):
            for _ in range(300):
                target.progress(0.01)
        target._thread.join(timeout=5.0)  # it records the error, then returns: give it the moment
        assert not target._thread.is_alive()
    finally:
        init.close()
        target.close()


def test_setup_fails_with_the_probe_reason(verbs):
    from pytest_kvfabric.transports.rdma.transport import RdmaTransport

    t = RdmaTransport.target(memoryview(bytearray(4096)), {"sysfs_root": verbs})
    with pytest.raises(TransportError, match=r"rdma: rxe0 port 1 has no RoCE v2 GID for "
                                             r"10.9.9.9"):
        t.listen("10.9.9.9", 1.0)
    t.close()


def test_zero_length_writes_are_refused(verbs):
    src, dst, target, desc, init = pair(verbs)
    try:
        init.connect(desc, 5.0)
        with pytest.raises(TransportError, match="zero-length write"):
            init.post(xfers([(0, 0, 0, 1)]), 1.0)
    finally:
        init.close()
        target.close()


def test_reusing_destination_bytes_reports_then_guards_then_writes(verbs):
    import threading

    src, dst, target, desc, init = pair(verbs)
    events = []
    target.write_guard = lambda off, n: events.append(("guard", off, n))
    stop = threading.Event()

    def decode_loop():
        for _ in range(2000):  # bounded: ~20 s at most
            if stop.is_set():
                return
            placed, notes = target.progress(0.01)
            events.extend(("placed", int(x)) for x in placed["xfer"])
            events.extend(("notify", int(r)) for r in notes["request"])

    thread = threading.Thread(target=decode_loop, daemon=True)
    try:
        init.connect(desc, 5.0)
        thread.start()
        s = np.frombuffer(src, np.uint8)
        s[:4096] = 1
        s[4096:8192] = 2
        first = xfers([(0, 0, 4096, -1)])  # no immediate: only completions prove it landed
        init.post(first, 5.0)
        assert init.poll(2.0)["xfer"].tolist() == [0]
        second = xfers([(4096, 1024, 1024, 3)])  # overwrites part of the first page
        second["xfer"] = 1
        init.post(second, 5.0)
        assert init.poll(2.0)["xfer"].tolist() == [1]
        for _ in range(200):
            if ("notify", 3) in events:
                break
            stop.wait(0.01)
        i_placed0 = events.index(("placed", 0))
        i_guard = events.index(("guard", 1024, 1024))
        assert i_placed0 < i_guard  # attributed while the old bytes were still there
        assert events.index(("placed", 1)) > i_guard and ("notify", 3) in events
        d = np.frombuffer(dst, np.uint8)
        assert set(d[:1024]) == {1} and set(d[1024:2048]) == {2} and set(d[2048:4096]) == {1}
    finally:
        stop.set()
        thread.join(5.0)
        init.close()
        target.close()
    assert target.data_path()["guard_round_trips"] == 1


def test_out_of_region_transfer_is_refused_before_posting(verbs):
    src, dst, target, desc, init = pair(verbs, nbytes=1 << 16)
    try:
        init.connect(desc, 5.0)
        with pytest.raises(TransportError, match=r"transfer 0: remote range \[65000, 66000\) "
                                                 r"outside the 65536-byte remote region"):
            init.post(xfers([(0, 65000, 1000, 1)]), 1.0)
        assert FABRIC.posts == []
    finally:
        init.close()
        target.close()


def reads_batch(rows, first=100):
    from pytest_kvfabric.transports.base import READ_DTYPE

    b = np.zeros(len(rows), READ_DTYPE)
    for i, (local, remote, n) in enumerate(rows):
        b[i] = (first + i, local, remote, n)
    return b


@pytest.mark.parametrize("qps", [1, 3])
def test_rdma_reads_pull_the_target_region_and_complete_through_poll(verbs, qps):
    src, dst, target, desc, init = pair(verbs, qps=qps, signal_every=2, max_send_wr=4)
    try:
        init.connect(desc, 5.0)
        d = np.frombuffer(dst, np.uint8)
        d[:] = (np.arange(len(dst)) * 7 + 3) % 253  # the store's pages
        s = np.frombuffer(src, np.uint8)
        s[:] = 0x5A
        rows = [(0, 40000, 10000), (10000, 5, 4096), (20000, 65536 - 300, 300), (30000, 0, 1)]
        # a write in between: it lands, and the reads after it see nothing of it (other range)
        init.post_read(reads_batch(rows[:2]), 5.0)
        init.post(xfers([(50000, 30000, 100, -1)]), 5.0)
        init.post_read(reads_batch(rows[2:], first=102), 5.0)
        done = []
        for _ in range(100):
            done += init.poll(0.01)["xfer"].tolist()
            if len(done) == 5:
                break
        assert sorted(done) == [0, 100, 101, 102, 103] and init.outstanding() == 0
        for lo, ro, n in rows:
            assert np.array_equal(s[lo : lo + n], d[ro : ro + n]), (lo, ro, n)
        assert (s[31000:50000] == 0x5A).all()
        ops = [w for _q, ids in FABRIC.posts for w in ids]
        assert len(ops) == 7  # the 10000-byte read is 3 WRs (max_msg_sz 4096), the others 1 each
        assert init.data_path()["reads_posted"] == 4
        assert "NIC" in target.data_path()["reads"]
    finally:
        init.close()
        target.close()


def test_rdma_read_errors_are_named(verbs):
    src, dst, target, desc, init = pair(verbs, nbytes=1 << 16)
    try:
        init.connect(desc, 5.0)
        with pytest.raises(TransportError, match=r"read 100: remote range \[65000, 66000\) "
                                                 r"outside the 65536-byte remote region"):
            init.post_read(reads_batch([(0, 65000, 1000)]), 1.0)
        with pytest.raises(TransportError, match=r"read 100: local range \[65500, 65600\) outside"):
            init.post_read(reads_batch([(65500, 0, 100)]), 1.0)
        with pytest.raises(TransportError, match="zero-length read"):
            init.post_read(reads_batch([(0, 0, 0)]), 1.0)
        assert FABRIC.posts == []
        init.remote["rkey"] = desc["rkey"] + 1000  # an rkey the target never issued
        init.post_read(reads_batch([(0, 0, 64)]), 1.0)
        with pytest.raises(TransportError, match=r"IBV_WC_REM_ACCESS_ERR \(RDMA WRITE or READ wr_id"):
            init.poll(1.0)
    finally:
        init.close()
        target.close()


def test_rdma_probe_read_follows_the_probe(verbs, monkeypatch):
    from pytest_kvfabric.transports.base import Capability
    from pytest_kvfabric.transports.rdma import probe as probe_mod
    from pytest_kvfabric.transports.rdma.transport import RdmaTransport

    monkeypatch.setattr(probe_mod, "probe", lambda o: Capability.missing("no RDMA device (test)"))
    assert RdmaTransport.probe_read().reason == "no RDMA device (test)"
    monkeypatch.setattr(probe_mod, "probe", lambda o: Capability.ok("rdma", device="rxe0"))
    cap = RdmaTransport.probe_read()
    assert cap.available and "IBV_WR_RDMA_READ" in cap.data_path and cap.details["device"] == "rxe0"


def test_channel_fd_is_found_even_when_its_number_was_just_reused(monkeypatch):
    from pytest_kvfabric.transports.rdma import endpoint

    monkeypatch.setattr(endpoint, "CHANNEL_FD_LINK", "anon_inode:[eventfd]")
    before = endpoint.fd_links()  # the listing's own fd number is free again afterwards
    fd = os.eventfd(0)
    try:
        assert endpoint.channel_fd(object(), before) == fd
        assert endpoint.channel_fd(SimpleNamespace(fd=7), before) == 7  # a pyverbs that exposes it
        with pytest.raises(TransportError, match="cannot tell the completion channel's fd"):
            endpoint.channel_fd(object(), endpoint.fd_links())  # nothing new
    finally:
        os.close(fd)
