"""The store's file tier: O_DIRECT against the page cache, same file size, interleaved rounds.

Why O_DIRECT (endpoint/store_file.py): a buffered file tier serves reads of recently written
pages from the page cache, i.e. from DRAM, so a "file tier" hit would measure memory twice.
This prints each mode's write and read GB/s per round and the median ratio direct / buffered;
a buffered read several times faster than the disk is the page cache answering. Then the
same O_DIRECT pages read serially and by N threads at once: whether queue depth (what io_uring
would add to staging) pays on this disk.

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


def parallel_reads(directory: str | None, pages: int, obj: int, threads: int) -> tuple[float, float]:
    """(serial, `threads` concurrent) O_DIRECT read GB/s of the same pages: does queue depth pay?"""
    from concurrent.futures import ThreadPoolExecutor

    slot = file_slot_bytes(obj)
    tier = FileTier(directory, pages, obj, slot)
    try:
        src = np.random.default_rng(2).integers(0, 256, obj, dtype=np.uint8)
        for k in range(pages):
            tier.write(k, src)
        import mmap
        import os

        bufs = [mmap.mmap(-1, slot) for _ in range(pages)]

        def rd(k: int) -> int:  # preadv releases the GIL: threads give the disk a queue
            return os.preadv(tier.fd, [bufs[k]], k * slot)

        t0 = time.perf_counter()
        for k in range(pages):
            rd(k)
        serial = pages * slot / (time.perf_counter() - t0) / 1e9
        with ThreadPoolExecutor(threads) as ex:
            t0 = time.perf_counter()
            list(ex.map(rd, range(pages)))
            par = pages * slot / (time.perf_counter() - t0) / 1e9
        return serial, par
    finally:
        tier.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="directory of the file (default: the temp dir)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--page-bytes", type=int, default=2_621_440, help="default: llama3-70b fp8, 16 tokens")
    ap.add_argument("--threads", type=int, default=4, help="concurrent O_DIRECT readers in the queue-depth test")
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
    qd = [parallel_reads(a.dir, a.pages, a.page_bytes, a.threads) for _ in range(a.rounds)]
    print(f"O_DIRECT read GB/s serial " + " ".join(f"{x[0]:.2f}" for x in qd)
          + f"   {a.threads} threads " + " ".join(f"{x[1]:.2f}" for x in qd)
          + f"   median ratio {statistics.median(p / s_ for s_, p in qd):.2f}")


if __name__ == "__main__":
    main()
