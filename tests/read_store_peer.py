"""A read-only target in its own process (a store holding pages, no writes): fills its region
with a seeded pattern, listens on loopback, prints its descriptor (one JSON line), serves
until its peer says BYE (or --timeout), then prints its data_path() as JSON and exits.

    python tests/read_store_peer.py TRANSPORT NBYTES SEED TOKEN [--timeout S]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from pytest_kvfabric.transports.registry import get_transport


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("transport")
    ap.add_argument("nbytes", type=int)
    ap.add_argument("seed", type=int)
    ap.add_argument("token")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    T = get_transport(a.transport)
    region = T.allocate(a.nbytes, {})
    np.frombuffer(region, np.uint8)[:] = np.random.default_rng(a.seed).integers(0, 256, a.nbytes, dtype=np.uint8)
    tgt = T.target(region, {"token": a.token})
    print(json.dumps(tgt.listen("127.0.0.1", 10.0)), flush=True)
    deadline = time.monotonic() + a.timeout
    try:
        while time.monotonic() < deadline and not tgt.peers_closed():
            placed, _ = tgt.progress(0.05)
            if len(placed):
                raise SystemExit(f"a read-only store was written to: {placed.tolist()}")
        print(json.dumps({"data_path": tgt.data_path(), "closed": tgt.peers_closed()}, default=str), flush=True)
    finally:
        tgt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
