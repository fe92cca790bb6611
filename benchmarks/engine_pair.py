"""One target and one initiator process of a (plug-in) transport, 32 writes of 64 KiB, every
page compared, both data paths printed as one JSON line ("LABRESULT name {...}").

For the soft-RoCE VM lab, where engine start-up under TCG emulation outlasts the runner's
30 s setup margin: no runner, generous timeouts. Usage (KEY=VALUE are transport params):

    python benchmarks/engine_pair.py mooncake protocol=rdma device=rxe0
    python benchmarks/engine_pair.py nixl ucx_tls=tcp ucx_net_devices=lo require_ucx_transport=tcp
"""
from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time

import numpy as np

NB, N = 65536, 32

def target(name, params, q_desc, q_res):
    from pytest_kvfabric.transports import registry
    T = registry.get_transport(name)
    region = T.allocate(NB * N, params)
    t = T.target(region, {**params, "token": "lab"})
    q_desc.put(t.listen("127.0.0.1", 600))
    got, end = 0, time.monotonic() + 600
    while got < N and time.monotonic() < end:
        p, _ = t.progress(0.5)
        got += len(p)
    arr = np.frombuffer(region, np.uint8)
    ok = all((arr[i * NB:(i + 1) * NB] == (i % 251)).all() for i in range(N))
    end = time.monotonic() + 60
    while not t.peers_closed() and time.monotonic() < end:
        t.progress(0.2)
    q_res.put({"placed": got, "pages_ok": bool(ok), "target": t.data_path()})
    t.close()

def initiator(name, params, desc, q_res):
    from pytest_kvfabric.transports import registry
    from pytest_kvfabric.transports.base import XFER_DTYPE
    T = registry.get_transport(name)
    region = T.allocate(NB * N, params)
    arr = np.frombuffer(region, np.uint8)
    for i in range(N):
        arr[i * NB:(i + 1) * NB] = i % 251
    ini = T.initiator(region, {**params, "token": "lab"})
    try:
        ini.connect(desc, 600)
        b = np.zeros(N, XFER_DTYPE)
        b["xfer"] = np.arange(N); b["src_off"] = b["dst_off"] = np.arange(N) * NB; b["nbytes"] = NB; b["notify"] = -1
        b["notify"][-1] = 0
        t0 = time.monotonic()
        for k in range(0, N, 8):
            ini.post(b[k:k + 8], 600)
        done, end = 0, time.monotonic() + 600
        while done < N and time.monotonic() < end:
            done += len(ini.poll(1.0))
        q_res.put({"completed": done, "seconds": time.monotonic() - t0, "initiator": ini.data_path()})
    except Exception as exc:
        q_res.put({"initiator_error": f"{type(exc).__name__}: {exc}"})
    finally:
        ini.close()

if __name__ == "__main__":
    name = sys.argv[1]
    params = dict(kv.split("=", 1) for kv in sys.argv[2:])
    ctx = mp.get_context("spawn")
    qd, qr = ctx.Queue(), ctx.Queue()
    pt = ctx.Process(target=target, args=(name, params, qd, qr)); pt.start()
    desc = qd.get(timeout=900)
    pi = ctx.Process(target=initiator, args=(name, params, desc, qr)); pi.start()
    out = {}
    for _ in range(2):
        try:
            out.update(qr.get(timeout=900))
        except Exception as exc:
            out["error"] = repr(exc); break
    pi.join(30); pt.join(30)
    for p in (pi, pt):
        if p.is_alive(): p.kill()
    keep = ("description", "protocol", "device", "ucx_write_lanes", "ucx_notify_lanes", "ucx_scope", "zero_copy", "topology")
    for side in ("initiator", "target"):
        if side in out:
            out[side] = {k: v for k, v in out[side].items() if k in keep}
    print("LABRESULT", name, json.dumps(out), flush=True)
