"""Sub-plans of a multi-agent run: which rows of a scenario's TransferPlan each flow carries.

A run with rails and instances (xPyD) is several flows; a flow is one sender agent (prefill
instance p on rail r) and one receiver agent (decode instance d on rail r). Pure: numpy in,
numpy out; each agent rebuilds the full plan from the Scenario and cuts its own flow out of it
with `flow_plan`, so no plan crosses a channel and both ends of a flow cut the same rows.

Rules (declared once, here):
- rails: row with src_rank k goes over rail k mod N (rail-optimized fabrics: GPU k of the
  prefill node talks to its peer over NIC k). Fewer prefill ranks than rails leaves rails idle.
- instances: request i runs on prefill instance i mod P (the front end spreads prompts evenly)
  and goes to a decode instance by the routing rule:
    round_robin  d = (i // P) mod D (every prefill instance reaches every decode instance)
    random       a seeded draw per request (numpy PCG64 on the scenario seed)
    session      requests come in sessions of SESSION_REQUESTS consecutive requests (a
                 conversation's turns); a session sticks to one decode instance, drawn seeded
- a flow's sender emulates its prefill instance's GPU: it keeps all of that instance's requests
  with their original arrival times (an instance is its own serving engine) and carries the
  rows of those routed to its decode instance; the others occupy the GPU and move nothing here.
  Open loop this is exact; closed loop, a request without rows here completes at its start
  (the flow does not see the other flow's completion), an approximation the report names.
- each flow's agents own only the ranks their rows touch: rank regions are compacted, so N
  rails do not allocate N copies of the emulated HBM.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from .plantypes import TransferPlan

ROUTINGS = ("round_robin", "random", "session")
SESSION_REQUESTS = 4  # requests per session for routing "session"
MAX_RAILS = 64
MAX_INSTANCES = 64
_ROUTE_DOMAIN = 0x726F757465  # "route": keeps the routing stream apart from the workload's


@dataclass(frozen=True)
class FlowSpec:
    """Which part of the plan one flow carries. prefill=None: every prefill instance's requests
    routed to `decode` (the one-sender reference of an incast measurement, which emulates all
    P prefill GPUs' timelines in one agent)."""

    rails: int = 1
    rail: int = 0
    prefill_instances: int = 1
    decode_instances: int = 1
    prefill: int | None = 0
    decode: int = 0
    routing: str = "round_robin"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FlowSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def name(self) -> str:
        p = "all" if self.prefill is None else str(self.prefill)
        return f"p{p}d{self.decode}r{self.rail}"


@dataclass(frozen=True)
class SubPlan:
    plan: TransferPlan  # the flow's own plan: renumbered requests, compacted rank regions
    rows: np.ndarray  # index into the full plan's transfers of each of its rows (ascending)
    reqs: np.ndarray  # index into the full plan's requests of each of its requests (ascending)
    gpu: np.ndarray  # per request of the sub-plan: which emulated prefill GPU (instance) runs it


def route(nreq: int, prefill_instances: int, decode_instances: int, routing: str,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prefill instance, decode instance) of every request index 0..nreq-1."""
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r}; valid: {', '.join(ROUTINGS)}")
    P, D = int(prefill_instances), int(decode_instances)
    i = np.arange(nreq, dtype=np.int64)
    pre = i % P
    if routing == "round_robin":
        dec = (i // P) % D
    else:
        rng = np.random.Generator(np.random.PCG64([int(seed) & 0xFFFFFFFFFFFFFFFF, _ROUTE_DOMAIN]))
        if routing == "random":
            dec = rng.integers(0, D, nreq, dtype=np.int64)
        else:
            sessions = -(-nreq // SESSION_REQUESTS)
            dec = rng.integers(0, D, max(sessions, 1), dtype=np.int64)[i // SESSION_REQUESTS]
    return pre, dec


def rail_of(src_rank: np.ndarray, rails: int) -> np.ndarray:
    """The rail of each row: prefill rank k -> rail k mod N."""
    return np.asarray(src_rank, np.int64) % max(int(rails), 1)


def restrict(plan: TransferPlan, row_mask: np.ndarray, req_mask: np.ndarray,
             gpu_of_request: np.ndarray | None = None) -> SubPlan:
    """The plan of `req_mask`'s requests and `row_mask`'s rows (rows of other requests must not
    be in row_mask). Requests renumber 0..k-1 in order; rank regions compact to those used."""
    T, R = plan.transfers, plan.requests
    reqs = np.flatnonzero(req_mask)
    rows = np.flatnonzero(row_mask)
    t = T[rows].copy()
    new_req = np.full(len(R), -1, np.int64)
    new_req[reqs] = np.arange(len(reqs))
    t["request"] = new_req[t["request"].astype(np.int64)]
    src_ranks, t["src_off"] = _compact(t["src_off"], plan.src_rank_bytes)
    dst_ranks, t["dst_off"] = _compact(t["dst_off"], plan.dst_rank_bytes)
    r = R[reqs].copy()
    r["request"] = np.arange(len(reqs))
    count = np.bincount(t["request"].astype(np.int64), minlength=len(reqs)).astype(np.int64)
    r["count"] = count
    r["first"] = np.concatenate(([0], np.cumsum(count)[:-1])) if len(reqs) else count
    r["nbytes"] = np.bincount(t["request"].astype(np.int64), weights=t["nbytes"].astype(np.float64),
                              minlength=len(reqs)).astype(np.uint64)
    sub = TransferPlan(transfers=t, requests=r, src_ranks=max(src_ranks, 1), dst_ranks=max(dst_ranks, 1),
                       src_rank_bytes=plan.src_rank_bytes, dst_rank_bytes=plan.dst_rank_bytes,
                       src_slot_bytes=plan.src_slot_bytes, dst_slot_bytes=plan.dst_slot_bytes)
    gpu = np.zeros(len(reqs), np.int64) if gpu_of_request is None else np.asarray(gpu_of_request, np.int64)[reqs]
    return SubPlan(sub, rows, reqs, gpu)


def _compact(off: np.ndarray, rank_bytes: int) -> tuple[int, np.ndarray]:
    """(ranks used, offsets moved so the used rank regions sit side by side in rank order)."""
    off = off.astype(np.uint64)
    if not len(off) or rank_bytes <= 0:
        return 0, off
    rb = np.uint64(rank_bytes)
    old = off // rb
    used = np.unique(old)
    new = np.searchsorted(used, old).astype(np.uint64)
    return len(used), off - old * rb + new * rb


def flow_masks(plan: TransferPlan, spec: FlowSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row mask, request mask, prefill instance of every request) of the flow `spec`.

    The flow keeps every request of its prefill instance (all instances for the one-sender
    reference), rows or not: the sender emulates that instance's GPU, which computes the
    requests routed to other decode instances too. Its rows are those of its requests routed
    to its decode instance, on its rail."""
    pre, dec = route(len(plan.requests), spec.prefill_instances, spec.decode_instances, spec.routing, spec.seed)
    req_mask = np.ones(len(plan.requests), bool) if spec.prefill is None else pre == spec.prefill
    T = plan.transfers
    row_req = T["request"].astype(np.int64)
    row_mask = req_mask[row_req] & (dec[row_req] == spec.decode) & (rail_of(T["src_rank"], spec.rails) == spec.rail)
    return row_mask, req_mask, pre


def flow_plan(plan: TransferPlan, spec: FlowSpec) -> SubPlan:
    """The sub-plan one flow's two agents run (both cut the same one from the same plan)."""
    row_mask, req_mask, pre = flow_masks(plan, spec)
    return restrict(plan, row_mask, req_mask, pre if spec.prefill is None else None)


def check_layout(rails: Any, prefill: Any, decode: Any, routing: Any, where: str = "topology",
                 rails_name: str = "rails") -> str | None:
    """Why these rails/instances/routing values are invalid ("field: reason", one line), or None."""
    for name, value, top in ((rails_name, rails, MAX_RAILS), (f"{where}.prefill", prefill, MAX_INSTANCES),
                             (f"{where}.decode", decode, MAX_INSTANCES)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return f"{name}: expected an integer, got {value!r}"
        if not 1 <= int(value) <= top:
            return f"{name}: must be between 1 and {top}, got {value}"
    if routing not in ROUTINGS:
        return f"{where}.routing: unknown routing {routing!r}; valid: {', '.join(ROUTINGS)}"
    return None
