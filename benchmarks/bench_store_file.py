"""The store's file tier: O_DIRECT against the page cache, same file size, interleaved rounds.

Why O_DIRECT (endpoint/store_file.py): a buffered file tier serves reads of recently written
pages from the page cache, i.e. from DRAM, so a "file tier" hit would measure memory twice.
This prints each mode's write and read GB/s per round and the median ratio direct / buffered;
a buffered read several times faster than the disk is the page cache answering.

    python benchmarks/bench_store_file.py                       # 5 rounds, 40 pages of 2.5 MiB, temp dir
    python benchmarks/bench_store_file.py --dir /mnt/nvme --rounds 9 --pages 200
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pytest_kvfabric.emulator.storeplan import file_slot_bytes
from pytest_kvfabric.endpoint.store_file import FileTier


def one(direct: bool, directory: str | None, pages: int, obj: int) -> dict[str, float | str]:
    tier = FileTier(directory, pages, obj, file_slot_bytes(obj), direct=direct)
    try:
        src = np.random.default_rng(1).integers(0, 256, obj, dtype=np.uint8)
        dst = np.zeros(obj, np.uint8)
        t0 = time.perf_counter()
        for k in range(pages):
            tier.write(k, src)
        t1 = time.perf_counter()
        for k in range(pages):
            tier.read(k, dst)
        t2 = time.perf_counter()
        assert np.array_equal(src, dst)
        moved = pages * obj
        return {"io": tier.how, "write_GBps": moved / (t1 - t0) / 1e9, "read_GBps": moved / (t2 - t1) / 1e9}
    finally:
        tier.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="directory of the file (default: the temp dir)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--page-bytes", type=int, default=2_621_440, help="default: llama3-70b fp8, 16 tokens")
    a = ap.parse_args()
    rows: dict[bool, list[dict[str, float | str]]] = {True: [], False: []}
    for r in range(a.rounds):
        for direct in ((True, False) if r % 2 == 0 else (False, True)):  # interleaved, order alternating
            rows[direct].append(one(direct, a.dir, a.pages, a.page_bytes))
    for direct, name in ((True, "direct"), (False, "buffered")):
        rs = rows[direct]
        print(f"{name:9s} {rs[0]['io']:<40s} write GB/s " + " ".join(f"{x['write_GBps']:.2f}" for x in rs)
              + "   read GB/s " + " ".join(f"{x['read_GBps']:.2f}" for x in rs))
    for key in ("write_GBps", "read_GBps"):
        ratios = [d[key] / b[key] for d, b in zip(rows[True], rows[False])]
        print(f"median ratio direct/buffered {key}: {statistics.median(ratios):.2f} "
              f"(rounds: {' '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
