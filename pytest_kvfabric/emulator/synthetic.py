"""Synthetic TransferPlans for conformance: fixed transfer sizes independent of any model.

Same dtype and region rules as the model plan (one rank per side, reusable slots), so the
agents and transports cannot tell them apart."""
from __future__ import annotations

import numpy as np

from ..errors import ProfileError
from ..core.scenario import Scenario
from .plantypes import REQUEST_DTYPE, SOURCE, TRANSFER_DTYPE, TransferPlan, check_plan_rows

_SLOT_ALIGN = 64


def build_synthetic_plan(scenario: Scenario) -> TransferPlan:
    syn = scenario.synthetic
    assert syn is not None
    slot_bytes = -(-(syn.nbytes + syn.offset_skew) // _SLOT_ALIGN) * _SLOT_ALIGN
    slots = scenario.pool_bytes // slot_bytes
    if slots < 2:
        raise ProfileError(
            SOURCE, "pool_bytes",
            f"pool of {scenario.pool_bytes} bytes holds {slots} slot(s) of {slot_bytes} bytes; "
            f"needs at least {2 * slot_bytes}",
        )
    per_req = syn.transfers
    n = per_req * syn.requests
    check_plan_rows(n, scenario)
    rows = np.zeros(n, dtype=TRANSFER_DTYPE)
    idx = np.arange(n, dtype=np.uint64)
    within = idx % np.uint64(per_req)
    rows["request"] = idx // np.uint64(per_req)
    rows["block"] = within
    slot = idx % np.uint64(slots)
    # Skew src and dst differently so that a transport that assumes equal alignment fails.
    rows["src_off"] = slot * np.uint64(slot_bytes) + np.uint64(syn.offset_skew)
    rows["dst_off"] = slot * np.uint64(slot_bytes) + np.uint64((syn.offset_skew * 3) % max(1, slot_bytes - syn.nbytes + 1))
    rows["nbytes"] = syn.nbytes
    rows["ready_ns"] = (within // np.uint64(syn.batch)) * np.uint64(int(syn.interval_us * 1000))
    reqs = np.zeros(syn.requests, dtype=REQUEST_DTYPE)
    reqs["request"] = np.arange(syn.requests)
    reqs["first"] = np.arange(syn.requests, dtype=np.uint64) * np.uint64(per_req)
    reqs["count"] = per_req
    reqs["nbytes"] = per_req * syn.nbytes
    last_ready = rows["ready_ns"][per_req - 1] if per_req else 0
    reqs["prefill_ns"] = last_ready
    return TransferPlan(
        transfers=rows,
        requests=reqs,
        src_ranks=1,
        dst_ranks=1,
        src_rank_bytes=slots * slot_bytes,
        dst_rank_bytes=slots * slot_bytes,
        src_slot_bytes=slot_bytes,
        dst_slot_bytes=slot_bytes,
    )
