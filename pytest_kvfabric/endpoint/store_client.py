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

Every wait is bounded by the run's deadline.
"""
from __future__ import annotations

import socket
import time
from typing import Any

import numpy as np

from ..errors import ProtocolError, TransportError
from . import store_proto

ROUND_TRIP_TIMEOUT_S = 10.0


class StoreClient:
    def __init__(self, msg: dict[str, Any]) -> None:
        from ..core.scenario import Scenario
        from ..emulator.plan import build_plan
        from ..emulator.storeplan import build_store_plan
        from ..transports.registry import get_transport
        from .pool import Pool
        from .store_pages import ObjectPages

        self.scenario = sc = Scenario.from_spec(msg["spec"])
        self.sp = sp = build_store_plan(sc, build_plan(sc))
        self.transport = get_transport(sc.transport)
        cap = self.transport.probe_read(dict(sc.transport_params))
        if not cap.available:
            raise TransportError(f"transport {sc.transport!r} cannot do one-sided reads: {cap.reason}")
        self.topts = {k: v for k, v in dict(sc.transport_params).items() if not str(k).startswith("_")}
        self.topts["token"] = msg["token"]
        self.pages = ObjectPages(sp, sc.seed)
        self.pool = Pool(self.transport, max(1, sp.max_objects) * sp.obj_bytes, self.topts)
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

    def _wait(self, ids: set[int], deadline: float, what: str) -> None:
        while ids:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError(f"{what}: {len(ids)} transfer(s) not complete by the run's deadline")
            for row in self.initiator.poll(min(left, 0.05)):
                ids.discard(int(row["xfer"]))

    def _ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.xfer, self.xfer + n, dtype=np.uint64)
        self.xfer += n
        return ids

    # -- one request ---------------------------------------------------------------------
    def fetch(self, r: int, deadline: float) -> tuple[int, int, list[str], int]:
        """(ns from lookup to the last READ's completion, pages served, verification errors, pages checked)."""
        from ..transports.base import READ_DTYPE

        sp, n = self.sp, self.sp.obj_bytes
        keys = list(range(int(sp.req_first[r]), int(sp.req_first[r] + sp.req_count[r])))
        t0 = time.monotonic_ns()
        found = self.call({"op": "get", "keys": keys}, deadline)["found"]
        if len(found) != len(keys):
            raise ProtocolError(f"store answered {len(found)} places for {len(keys)} keys")
        served = next((i for i, f in enumerate(found) if f is None), len(found))
        hit = [i for i, f in enumerate(found) if f is not None]
        batch = np.zeros(len(hit), dtype=READ_DTYPE)
        batch["xfer"] = self._ids(len(hit))
        batch["local_off"] = np.array(hit, dtype=np.uint64) * n
        batch["remote_off"] = [found[i][1] for i in hit]
        batch["nbytes"] = n
        if len(batch):
            self.initiator.post_read(batch, max(0.001, deadline - time.monotonic()))
            self._wait(set(batch["xfer"].tolist()), deadline, f"request {r} fetch")
        elapsed = time.monotonic_ns() - t0
        self.call({"op": "release", "keys": [keys[i] for i in hit]}, deadline)
        errs = [e for i in hit if (e := self.pages.check(self.pool.array, i * n, keys[i]))]
        return elapsed, served, errs, len(hit)

    def offload(self, r: int, deadline: float) -> tuple[int, int, list[str], int]:
        """(ns from asking for room to the commit's answer, pages written, the store's verification
        errors, pages checked here: none, the store checks them)."""
        from ..transports.base import XFER_DTYPE

        sp, n = self.sp, self.sp.obj_bytes
        keys = list(range(int(sp.req_first[r]), int(sp.req_first[r] + sp.req_count[r])))
        for i, k in enumerate(keys):  # the session's KV as decode holds it (outside the timed span)
            self.pages.fill(self.pool.array, i * n, k)
        t0 = time.monotonic_ns()
        offs = self.call({"op": "put", "keys": keys}, deadline)["offs"]
        batch = np.zeros(len(keys), dtype=XFER_DTYPE)
        batch["xfer"] = self._ids(len(keys))
        batch["src_off"] = np.arange(len(keys), dtype=np.uint64) * n
        batch["dst_off"] = offs
        batch["nbytes"] = n
        batch["notify"] = -1
        if len(batch):
            self.initiator.post(batch, max(0.001, deadline - time.monotonic()))
            self._wait(set(batch["xfer"].tolist()), deadline, f"request {r} offload")
        errs = self.call({"op": "commit", "keys": keys}, deadline)["errors"]
        return time.monotonic_ns() - t0, len(keys), list(errs), 0

    # -- the run -------------------------------------------------------------------------
    def run(self, msg: dict[str, Any]) -> dict[str, Any]:
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
        took = np.zeros(nreq, dtype=np.int64)
        served = np.zeros(nreq, dtype=np.int64)
        late = np.zeros(nreq, dtype=np.int64)
        errors: list[str] = []
        error_count = pages = 0
        for r in np.argsort(sp.act_ns, kind="stable").tolist():
            if sp.req_count[r] == 0:
                continue
            due = start + int(sp.act_ns[r])
            wait = (due - time.monotonic_ns()) / 1e9
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    raise TransportError(f"request {r}'s store traffic is due after the run's deadline")
                time.sleep(wait)
            late[r] = max(0, time.monotonic_ns() - due)
            act = self.offload if sp.mode == "offload" else self.fetch
            took[r], served[r], errs, checked = act(r, deadline)
            pages += checked
            error_count += len(errs)
            errors.extend(errs[: max(0, 10 - len(errors))])
        self.call({"op": "bye"}, deadline)
        data_path = _plain(self.initiator.data_path())
        self.initiator.close()
        self.closed = True
        return {"ok": True, "took_ns": _pack(took), "served": _pack(served), "late_ns": _pack(late),
                "errors": error_count, "error_list": errors, "connect_ns": connect_ns, "data_path": data_path,
                "pages_checked": pages}

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


def _plain(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))
