"""The plan types: what every KV write of a scenario looks like, as numpy structured arrays.

INTERFACE (shared by the plan builders, runner, endpoints, transports and stats), in its own
module so that a reader of the rows needs neither builder, and the builders need not import
each other. Offsets are into ONE region per side: rank r of a side owns bytes
[r * rank_bytes, (r + 1) * rank_bytes) of that side's region, where a "rank" is
(pp_stage * tp + tp_rank). Within a rank region, logical pages are mapped onto reusable
physical slots (the bounded KV pool, as serving engines page their KV).

Rows are sorted by (request, ready_ns, layer, block, src_rank, dst_rank). `ready_ns` is relative
to the request's start. For access="block", `layer` is the first layer of the stage the page holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.limits import MAX_PLAN_ROWS
from ..errors import ProfileError

if TYPE_CHECKING:
    from ..core.scenario import Scenario

SOURCE = "<scenario>"  # where a plan's errors point: the scenario the plan was built from

TRANSFER_DTYPE = np.dtype(
    [
        ("request", "<u4"),
        ("layer", "<u2"),
        ("src_rank", "<u2"),
        ("dst_rank", "<u2"),
        ("block", "<u4"),  # logical page index within the request
        ("src_off", "<u8"),
        ("dst_off", "<u8"),
        ("nbytes", "<u4"),
        ("ready_ns", "<u8"),
    ]
)

REQUEST_DTYPE = np.dtype(
    [
        ("request", "<u4"),
        ("arrival_ns", "<u8"),  # open loop: offset from run start; closed loop: 0 (decided at run time)
        ("isl", "<u4"),
        ("osl", "<u4"),
        ("prefill_ns", "<u8"),  # emulated prefill duration (last layer of last chunk ready)
        ("decode_step_ns", "<u8"),  # emulated decode step (TPOT) at this context length
        ("nbytes", "<u8"),  # KV bytes this request moves
        ("first", "<u8"),  # index of its first row in transfers
        ("count", "<u8"),  # number of rows
        ("overlap_ns", "<u8"),  # prefill time shared with the next request (continuous batching; else 0)
    ]
)


@dataclass(frozen=True)
class TransferPlan:
    transfers: np.ndarray  # TRANSFER_DTYPE
    requests: np.ndarray  # REQUEST_DTYPE
    src_ranks: int  # prefill ranks (pp * tp)
    dst_ranks: int
    src_rank_bytes: int  # bytes of region owned by each prefill rank
    dst_rank_bytes: int
    src_slot_bytes: int  # size of one physical slot on the prefill side (>= largest transfer)
    dst_slot_bytes: int

    @property
    def src_region_bytes(self) -> int:
        return self.src_ranks * self.src_rank_bytes

    @property
    def dst_region_bytes(self) -> int:
        return self.dst_ranks * self.dst_rank_bytes

    @property
    def total_bytes(self) -> int:
        return int(self.transfers["nbytes"].sum(dtype=np.uint64))



def check_plan_rows(rows: int, scenario: "Scenario") -> None:
    """Refuse a plan larger than MAX_PLAN_ROWS before its table is allocated, with the figures."""
    if rows > MAX_PLAN_ROWS:
        gib = rows * TRANSFER_DTYPE.itemsize / 2**30
        raise ProfileError(SOURCE, "workload", f"the plan would hold {rows:,} transfers ({gib:,.1f} GiB); "
                           f"the limit is {MAX_PLAN_ROWS:,}: use fewer requests, shorter ISL, "
                           f"larger pages or access=block")
