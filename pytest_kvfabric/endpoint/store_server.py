"""The store endpoint: a third agent role holding inactive KV pages.

Its DRAM tier is the transport's registered region (slots of one object each), served to the
network by the transport's Target: fetching clients READ pages out of it, offloading clients
WRITE pages into it. An optional file tier (store_file.py) holds what DRAM evicts. Lookups come
over a small TCP socket of their own (store_proto.py): the server answers where each object can
be read (staging file-tier objects into DRAM first) and pins it until the client releases it.

Threads: the main thread runs the Target's progress loop (stream transports serve READs and
place WRITEs there); one lookup thread serves the lookup socket. They share the region only
through pins: a pinned slot is never evicted, staged or overwritten, and clients touch only
slots they hold pinned.
"""
from __future__ import annotations

import selectors
import socket
import threading
import time
from typing import Any

import numpy as np

from ..measure.result import plain
from . import store_proto
from .store_index import DRAM, StoreFull, TierIndex, parallel_safe

STORE_INJECT_PARAM = "_store_inject"  # "corrupt": flip a byte of the first stored page (tests)
LOOKUP_POLL_S = 0.05
PROGRESS_S = 0.005


class StoreServer:
    def __init__(self, msg: dict[str, Any]) -> None:
        from ..emulator.storeplan import file_slot_bytes
        from .pool import Pool
        from .store_file import FileTier
        from .store_pages import store_side

        side = store_side(msg, "serve reads")
        sc, sp = side.scenario, side.plan
        self.scenario, self.sp, self.transport, self.topts, self.pages = (
            sc, sp, side.transport, side.topts, side.pages)
        self.pool = Pool(self.transport, sp.dram_slots * sp.obj_bytes, self.topts)
        self.file = (FileTier(sc.store.file_dir, sp.file_slots, sp.obj_bytes, file_slot_bytes(sp.obj_bytes))
                     if sp.file_slots else None)
        self.index = TierIndex(sp.dram_slots, sp.file_slots)
        self.errors: list[str] = []
        self.error_count = 0
        self.pages_checked = 0
        self.lock = threading.Lock()
        self.bye = threading.Event()
        self.lookup_ns: list[int] = []
        t0 = time.monotonic_ns()
        if sp.mode != "offload":  # the store already holds the cached prefixes / earlier turns
            for obj in range(sp.total_objects):
                slot = self._put(obj)
                self.pages.fill(self.pool.array, slot * sp.obj_bytes, obj)
            self.index.counters.stored = 0  # populating is not the run's traffic
            if self.file is not None:  # populating is set-up: the run's disk figures start at zero
                self.file.read_bytes = self.file.write_bytes = self.file.read_ns = self.file.write_ns = 0
        self.populate_s = (time.monotonic_ns() - t0) / 1e9
        if dict(sc.transport_params).get(STORE_INJECT_PARAM) == "corrupt" and sp.total_objects:
            self._corrupt(0)
        self.target = self.transport.target(self.pool.region, self.topts)
        timeout = float((msg.get("options") or {}).get("setup_timeout_s", 30.0))
        self.descriptor = self.target.listen(msg["bind"], timeout)
        self.listener = socket.create_server((msg["bind"], 0))
        self.listener.setblocking(False)
        self.reply = {"ok": True, "descriptor": self.descriptor, "populate_s": self.populate_s,
                      "lookup_addr": [msg["bind"], self.listener.getsockname()[1]]}

    def _corrupt(self, obj: int) -> None:
        """Fault injection (transport param `_store_inject: corrupt`): flip one byte of a stored page,
        so a test proves the fetching side's verification names it."""
        tier, slot = self.index.where(obj) or (None, -1)
        if tier == DRAM:
            self.pool.array[slot * self.sp.obj_bytes + 1000 % self.sp.obj_bytes] ^= 0xFF

    # -- tiers ---------------------------------------------------------------------------
    def _apply(self, moves: list[Any]) -> None:
        """Carry out the index's moves: a batch's demotions, then its stagings, each group in
        parallel where store_index.parallel_safe allows; else one by one, in order."""
        if not moves:
            return
        arr, n, f = self.pool.array, self.sp.obj_bytes, self.file
        assert f is not None, "moves without a file tier"

        def item(mv: Any) -> tuple[int, np.ndarray]:
            return mv.file_slot, arr[mv.dram_slot * n:(mv.dram_slot + 1) * n]

        if parallel_safe(moves):
            f.write_many([item(mv) for mv in moves if mv.kind == "demote"])
            f.read_many([item(mv) for mv in moves if mv.kind == "stage"])
            return
        for mv in moves:
            (f.write if mv.kind == "demote" else f.read)(*item(mv))

    def _put(self, obj: int) -> int:
        slot, moves = self.index.put(obj)
        self._apply(moves)
        return slot

    # -- lookup requests -----------------------------------------------------------------
    def answer(self, msg: Any) -> dict[str, Any]:
        why = store_proto.check_request(msg)
        if why is None and msg["op"] != "bye" and any(k >= self.sp.total_objects for k in msg["keys"]):
            why = f"{msg['op']}: object id out of range (the plan has {self.sp.total_objects})"
        if why:
            return {"ok": False, "error": why}
        op, n = msg["op"], self.sp.obj_bytes
        t0 = time.monotonic_ns()
        with self.lock:
            try:
                if op == "get":
                    found: list[Any] = []
                    moves: list[Any] = []
                    self.index.begin_batch()  # one batch: its disk I/O goes out together, below
                    try:
                        for k in msg["keys"]:
                            hit = self.index.get(k)
                            if hit is None:
                                found.append(None)
                                continue
                            tier, slot, mv = hit
                            moves += mv
                            found.append([tier, slot * n])
                    except StoreFull:  # a refused get holds nothing: drop the pins it took
                        for k, f in zip(msg["keys"], found):
                            if f is not None:
                                self.index.unpin(k)
                        raise
                    finally:
                        try:
                            self._apply(moves)  # what the index already moved must reach the disk
                        finally:
                            self.index.end_batch()
                    out: dict[str, Any] = {"ok": True, "found": found}
                elif op == "release":
                    for k in msg["keys"]:
                        self.index.unpin(k)
                    out = {"ok": True}
                elif op == "put":
                    offs: list[int] = []
                    try:
                        for k in msg["keys"]:
                            offs.append(self._put(k) * n)
                            self.index.pins[k] = self.index.pins.get(k, 0) + 1  # until its commit
                    except StoreFull:  # a refused put holds nothing
                        for k in msg["keys"][:len(offs)]:
                            self.index.unpin(k)
                        raise
                    out = {"ok": True, "offs": offs}
                elif op == "commit":
                    errs = []
                    for k in msg["keys"]:
                        place = self.index.where(k)
                        self.index.unpin(k)
                        if place is None or place[0] != DRAM:
                            errs.append(f"store object {k}: committed but no longer in DRAM")
                            continue
                        self.pages_checked += 1
                        why = self.pages.check(self.pool.array, place[1] * n, k)
                        if why:
                            errs.append(why)
                    self.error_count += len(errs)
                    self.errors.extend(errs[: max(0, 10 - len(self.errors))])
                    out = {"ok": True, "errors": errs[:10]}
                else:
                    self.bye.set()
                    out = {"ok": True}
            except StoreFull as exc:
                out = {"ok": False, "error": f"store full: {exc}"}
        if op in ("get", "put"):
            self.lookup_ns.append(time.monotonic_ns() - t0)
        return out

    def _lookup_loop(self, deadline: float) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        conns: dict[socket.socket, store_proto.Decoder] = {}
        try:
            while not self.bye.is_set() and time.monotonic() < deadline:
                for key, _ in sel.select(LOOKUP_POLL_S):
                    if key.fileobj is self.listener:
                        try:
                            c, _ = self.listener.accept()
                        except BlockingIOError:
                            continue
                        c.setblocking(True)
                        c.settimeout(5.0)
                        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        conns[c] = store_proto.Decoder()
                        sel.register(c, selectors.EVENT_READ, None)
                        continue
                    c = key.fileobj  # type: ignore[assignment]
                    try:
                        data = c.recv(1 << 16)
                        msgs = conns[c].feed(data) if data else None
                    except (OSError, store_proto.ProtocolError):
                        msgs = None
                    if msgs is None:  # closed or broken: forget the connection
                        sel.unregister(c)
                        conns.pop(c, None)
                        c.close()
                        continue
                    for m in msgs:
                        c.sendall(store_proto.encode(self.answer(m)))
        finally:
            for c in conns:
                c.close()
            sel.close()

    # -- the run -------------------------------------------------------------------------
    def run(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        lookups = threading.Thread(target=self._lookup_loop, args=(deadline,), name="kvf-store-lookup", daemon=True)
        lookups.start()
        error: str | None = None
        try:
            while not self.bye.is_set() and time.monotonic() < deadline:
                self.target.progress(PROGRESS_S)
        except Exception as exc:  # noqa: BLE001 - reported to the controller as the store's error
            error = f"{type(exc).__name__}: {exc}"
        self.bye.set()
        lookups.join(timeout=5)
        timed_out = error is None and time.monotonic() >= deadline
        lk = np.asarray(self.lookup_ns, dtype=np.float64) / 1e3
        return {
            "ok": error is None, "error": error, "kind": "TransportError", "timed_out": timed_out,
            "counters": self.index.counters.to_dict(), "resident": len(self.index),
            "dram_slots": self.sp.dram_slots, "file_slots": self.sp.file_slots,
            "file": self.file.stats() if self.file is not None else None,
            "pages_checked": self.pages_checked, "errors": self.error_count, "error_list": self.errors,
            "lookup_us_p50": float(np.percentile(lk, 50)) if len(lk) else None,
            "lookup_us_p99": float(np.percentile(lk, 99)) if len(lk) else None,
            "data_path": plain(self.target.data_path()),
        }

    def close(self) -> None:
        for obj in (self.target, self.listener):
            try:
                obj.close()
            except Exception:  # noqa: BLE001 - teardown must not mask the run's outcome
                pass
        if self.file is not None:
            self.file.close()
        self.pages = None  # type: ignore[assignment]
        self.pool.release()
