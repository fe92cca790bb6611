"""The store's client: the fetching (or offloading) side of an agent host, as its own process.

It runs on the prefill host (prefix hits) or the decode host (session resume, offload), beside
that host's agent, so its traffic shares the host's link with the prefill-to-decode transfers.
Per request, at the emulated time the StorePlan gives (act_ns from the run's start):

- fetch: ask the store where the request's cached pages are (one lookup round trip; the store
  stages file-tier pages into DRAM and pins them), pull every found page with one-sided READs
  into this side's emulated HBM, release the pins, then verify every page read (outside the
  timed span). The pages served are the found ones up to the first miss: a prefix is usable
  only up to its first hole.
- offload: ask the store for room, WRITE the request's pages (pattern-filled like every
  page), then commit; the store verifies what landed.

Up to MAX_LANES requests have traffic in flight at once (each in its own lane of the region),
so a slow fetch does not hold back the next request's. Every wait is bounded by the run's deadline.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ProtocolError, TransportError
from ..measure.result import plain
from . import store_proto

ROUND_TRIP_TIMEOUT_S = 10.0
MAX_LANES = 4  # requests whose store traffic is in flight at once (each holds a lane of the region)
POLL_S = 0.05


@dataclass
class Flight:
    """One request's store traffic in flight."""

    r: int
    lane: int
    t0: int  # when its lookup was sent (monotonic ns)
    keys: list[int]  # its objects
    pages: list[int]  # indices into keys moved (fetch: found ones; offload: all)
    served: int  # fetch: pages usable as a prefix (up to the first miss); offload: pages written
    ids: set[int] = field(default_factory=set)  # transfers not yet complete
    last_ns: int = 0  # latest completion seen


class StoreClient:
    def __init__(self, msg: dict[str, Any]) -> None:
        from .pool import Pool
        from .store_pages import store_side

        side = store_side(msg, "do one-sided reads")
        sc, sp = side.scenario, side.plan
        self.scenario, self.sp, self.transport, self.topts, self.pages = (
            sc, sp, side.transport, side.topts, side.pages)
        active = int((sp.req_count > 0).sum())
        # Not the emulated GPUs' concurrency (a request waiting for its fetch leaves the GPU to the
        # next one) but the store's DRAM: every page in flight stays pinned there.
        self.lanes = max(1, min(MAX_LANES, active, sp.dram_slots // max(1, sp.max_objects)))
        self.lane_bytes = max(1, sp.max_objects) * sp.obj_bytes
        self.pool = Pool(self.transport, self.lanes * self.lane_bytes, self.topts)
        self.initiator = self.transport.initiator(self.pool.region, self.topts)
        self.sock: socket.socket | None = None
        self.decoder = store_proto.Decoder()
        self.xfer = 0
        self.reply = {"ok": True}

    # -- the lookup socket -------------------------------------------------------------
    def call(self, msg: dict[str, Any], deadline: float) -> dict[str, Any]:
        assert self.sock is not None
        self.sock.settimeout(max(0.001, min(ROUND_TRIP_TIMEOUT_S, deadline - time.monotonic())))
        self.sock.sendall(store_proto.encode(msg))
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except socket.timeout:
                raise TransportError(f"store did not answer {msg['op']} in time") from None
            if not data:
                raise TransportError(f"store closed the lookup connection during {msg['op']}")
            got = self.decoder.feed(data)
            if got:
                ans = got[0]
                if not isinstance(ans, dict) or not ans.get("ok"):
                    raise TransportError(f"store refused {msg['op']}: {ans.get('error') if isinstance(ans, dict) else ans}")
                return ans

    def _ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.xfer, self.xfer + n, dtype=np.uint64)
        self.xfer += n
        return ids

    # -- one request ---------------------------------------------------------------------
    def _keys(self, r: int) -> list[int]:
        return list(range(int(self.sp.req_first[r]), int(self.sp.req_first[r] + self.sp.req_count[r])))

    def begin(self, r: int, lane: int, deadline: float) -> Flight:
        """Start request r's store traffic in `lane` of this side's region: the lookup (or room
        for an offload) and the posted READs (or WRITEs)."""
        from ..transports.base import READ_DTYPE, XFER_DTYPE

        n, keys = self.sp.obj_bytes, self._keys(r)
        base = lane * self.lane_bytes
        if self.sp.mode == "offload":
            for i, k in enumerate(keys):  # the session's KV as decode holds it (before the timed span)
                self.pages.fill(self.pool.array, base + i * n, k)
        t0 = time.monotonic_ns()
        if self.sp.mode == "offload":
            offs = self.call({"op": "put", "keys": keys}, deadline)["offs"]
            batch = np.zeros(len(keys), dtype=XFER_DTYPE)
            batch["src_off"] = base + np.arange(len(keys), dtype=np.uint64) * n
            batch["dst_off"] = offs
            batch["notify"] = -1
            fl = Flight(r, lane, t0, keys, list(range(len(keys))), len(keys))
        else:
            found = self.call({"op": "get", "keys": keys}, deadline)["found"]
            if len(found) != len(keys):
                raise ProtocolError(f"store answered {len(found)} places for {len(keys)} keys")
            hit = [i for i, f in enumerate(found) if f is not None]
            batch = np.zeros(len(hit), dtype=READ_DTYPE)
            batch["local_off"] = base + np.array(hit, dtype=np.uint64) * n
            batch["remote_off"] = [found[i][1] for i in hit]
            served = next((i for i, f in enumerate(found) if f is None), len(found))  # a prefix ends at its first hole
            fl = Flight(r, lane, t0, keys, hit, served)
        batch["xfer"] = self._ids(len(batch))
        batch["nbytes"] = n
        fl.ids = set(batch["xfer"].tolist())
        fl.last_ns = time.monotonic_ns()
        if len(batch):
            post = self.initiator.post if self.sp.mode == "offload" else self.initiator.post_read
            post(batch, max(0.001, deadline - time.monotonic()))
        return fl

    def end(self, fl: Flight, deadline: float) -> tuple[int, list[str], int]:
        """(ns the traffic took, verification errors, pages checked here) once every transfer completed.
        A fetch took lookup to its last READ's completion, then is released and verified here; an
        offload took room to its commit's answer, the store verifying what landed."""
        n, base = self.sp.obj_bytes, fl.lane * self.lane_bytes
        if self.sp.mode == "offload":
            errs = list(self.call({"op": "commit", "keys": fl.keys}, deadline)["errors"])
            return time.monotonic_ns() - fl.t0, errs, 0
        took = fl.last_ns - fl.t0
        self.call({"op": "release", "keys": [fl.keys[i] for i in fl.pages]}, deadline)
        errs = [e for i in fl.pages if (e := self.pages.check(self.pool.array, base + i * n, fl.keys[i]))]
        return took, errs, len(fl.pages)

    # -- the run -------------------------------------------------------------------------
    def run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Each request's traffic starts when due (up to `lanes` requests in flight at once, as
        the emulated GPUs start requests), completions are polled for all of them together."""
        timeout_s = float(msg["timeout_s"])
        start = time.monotonic_ns()
        deadline = time.monotonic() + timeout_s
        t = time.monotonic_ns()
        self.initiator.connect(msg["descriptor"], min(30.0, timeout_s))
        host, port = msg["lookup_addr"]
        self.sock = socket.create_connection((host, int(port)), timeout=min(30.0, timeout_s))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connect_ns = time.monotonic_ns() - t
        sp = self.sp
        nreq = len(sp.req_count)
        took, served, late = (np.zeros(nreq, dtype=np.int64) for _ in range(3))
        errors: list[str] = []
        error_count = pages = 0
        order = [r for r in np.argsort(sp.act_ns, kind="stable").tolist() if sp.req_count[r] > 0]
        free = list(range(self.lanes - 1, -1, -1))
        flights: list[Flight] = []
        by_id: dict[int, Flight] = {}
        nxt = 0
        while nxt < len(order) or flights:
            if time.monotonic() > deadline:
                raise TransportError(f"store traffic of {len(order) - nxt + len(flights)} request(s) not done "
                                     "by the run's deadline")
            now = time.monotonic_ns()
            while nxt < len(order) and free and start + int(sp.act_ns[order[nxt]]) <= now:
                r = order[nxt]
                late[r] = max(0, now - start - int(sp.act_ns[r]))
                fl = self.begin(r, free.pop(), deadline)
                flights.append(fl)
                by_id.update(dict.fromkeys(fl.ids, fl))
                served[r] = fl.served
                nxt += 1
                now = time.monotonic_ns()
            for fl in [f for f in flights if not f.ids]:
                flights.remove(fl)
                took[fl.r], errs, checked = self.end(fl, deadline)
                free.append(fl.lane)
                pages += checked
                error_count += len(errs)
                errors.extend(errs[: max(0, 10 - len(errors))])
            due_s = ((start + int(sp.act_ns[order[nxt]]) - time.monotonic_ns()) / 1e9
                     if nxt < len(order) and free else POLL_S)
            wait = min(max(due_s, 0.0), POLL_S)
            if not flights:
                time.sleep(wait)
                continue
            for row in self.initiator.poll(wait):
                fl = by_id.pop(int(row["xfer"]), None)
                if fl is not None:
                    fl.ids.discard(int(row["xfer"]))
                    fl.last_ns = max(fl.last_ns, int(row["t_ns"]))
        self.call({"op": "bye"}, deadline)
        data_path = plain(self.initiator.data_path())
        self.initiator.close()
        self.closed = True
        return {"ok": True, "took_ns": _pack(took), "served": _pack(served), "late_ns": _pack(late),
                "errors": error_count, "error_list": errors, "connect_ns": connect_ns, "data_path": data_path,
                "pages_checked": pages, "lanes": self.lanes}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        try:
            if not getattr(self, "closed", False):
                self.initiator.close()
        except Exception:  # noqa: BLE001 - teardown must not mask the run's outcome
            pass
        self.pool.release()


def _pack(a: np.ndarray) -> dict[str, Any]:
    from .agent import pack_array

    return pack_array(a)
