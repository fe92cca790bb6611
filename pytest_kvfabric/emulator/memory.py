"""HBM fit: a deployment whose weights plus KV do not fit one GPU's HBM cannot run; say so with both figures.

Per rank: weights = attention (whole under dp_attention, else / tp) + dense FFNs / tp (whole under
dp_attention) + routed experts / tp (spread over ep ranks, each TP-split over tp/ep) + embeddings
and LM head / tp, all over the rank's PP stage share (layers / pp); KV = the rank's bytes per
token * tokens held at once: prefill the largest prompt (a batch's budget when batching), decode
concurrency * (ISL + OSL). Activations and the framework's workspace are not counted, so a
deployment that passes may still be tight; one that fails cannot run. GB are decimal.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from ..errors import ProfileError
from ..core.profiles import ModelProfile
from ..core.scenario import Deployment
from .kvlayout import kv_layout, valid_tp
from .timing import attention_params, weight_bytes_per_param
from .workload import sample_requests

if TYPE_CHECKING:
    from ..core.profiles import GpuProfile
    from ..core.scenario import Scenario


def weight_bytes_per_rank(model: ModelProfile, dep: Deployment) -> float:
    """Weight bytes one rank holds (see the module docstring)."""
    tp, pp = dep.tp, dep.pp
    split = 1 if dep.dp_attention else tp
    h = model.hidden_size
    per_layer = attention_params(model) / split
    dense_ffn = 3 * h * model.ffn_size / split
    total = 0.0
    for layer in range(model.layers):
        if model.moe is not None and layer >= model.moe.dense_layers:
            moe = model.moe
            pe = 3 * h * moe.expert_ffn_size
            total += per_layer + moe.experts * pe / tp + (moe.shared_experts * pe + h * moe.experts) / split
        else:
            total += per_layer + dense_ffn
    total = total / pp + 2 * h * model.vocab_size / tp  # embeddings + LM head
    return total * weight_bytes_per_param(model)


def check_hbm_fit(scenario: "Scenario", source: str = "<scenario>") -> None:
    """Raise ProfileError naming the side, the bytes needed and the GPU's HBM when they do not fit.

    `kvfabric plan`, `kvfabric run` and the runner call it (a deployment someone chose that no GPU
    could hold is a usage error); the plan builder does not, so layout studies of any size still
    plan. Deployments nobody chose go through `fit_to_hbm` first."""
    problem = hbm_fit_problem(scenario)
    if problem is not None:
        raise ProfileError(source, *problem)


def _held_tokens(scenario: "Scenario", source: str) -> dict[str, int]:
    """Per side: tokens of KV one rank holds at once (see the module docstring)."""
    isl, osl, _ = sample_requests(scenario.workload, scenario.seed, source)
    max_isl, max_osl = int(isl.max()), int(osl.max())
    arrival = scenario.workload.arrival
    concurrency = arrival.concurrency if arrival.kind == "closed" else 1
    return {"prefill": max(max_isl, dep_budget(scenario.prefill)), "decode": concurrency * (max_isl + max_osl)}


def side_fit(model: ModelProfile, gpu: "GpuProfile", dep: Deployment, tokens: int, side: str,
             source: str = "<scenario>") -> tuple[float, float]:
    """(weight bytes, KV bytes) one rank of this side holds."""
    layout = kv_layout(model, dep, source, side)
    return weight_bytes_per_rank(model, dep), float(layout.bytes_per_rank_per_token) * tokens


def _misfit(model: ModelProfile, gpu: "GpuProfile", side: str, dep: Deployment, weights: float, kv: float,
            tokens: int) -> tuple[str, str]:
    return (
        f"{side}.tp",
        f"{model.id} needs {weights / 1e9:.1f} GB of weights + {kv / 1e9:.1f} GB of KV per GPU "
        f"({tokens} tokens) at tp={dep.tp} pp={dep.pp}, more than {gpu.id}'s {gpu.hbm_capacity_gb:g} GB of HBM; "
        "raise tp/pp or shorten the prompts")


def hbm_fit_problem(scenario: "Scenario", source: str = "<scenario>") -> tuple[str, str] | None:
    """(field, reason) when one side's weights + KV exceed the GPU's HBM, else None."""
    if scenario.synthetic is not None:
        return None
    held = _held_tokens(scenario, source)
    capacity = scenario.gpu.hbm_capacity_gb * 1e9
    for side in ("prefill", "decode"):
        dep = getattr(scenario, side)
        weights, kv = side_fit(scenario.model, scenario.gpu, dep, held[side], side, source)
        if weights + kv > capacity:
            return _misfit(scenario.model, scenario.gpu, side, dep, weights, kv, held[side])
    return None


def fit_to_hbm(scenario: "Scenario", sides: Sequence[str], source: str = "<scenario>") -> tuple["Scenario", list[str]]:
    """Raise TP on `sides` (deployments nobody chose for this model and GPU) to the smallest TP,
    at least the given one and among the model's valid TP degrees, whose weights + KV fit one
    GPU's HBM; an MoE model is then deployed as DeepSeek's and SGLang's large-EP deployments are:
    experts over every rank (ep = tp) and data-parallel attention (each rank holds its own
    requests' KV, not a copy of every request's). Returns the scenario and one note per changed side. A side
    that fits at no TP is left as it is (check_hbm_fit then names both figures)."""
    if scenario.synthetic is not None or not sides:
        return scenario, []
    held = _held_tokens(scenario, source)
    capacity = scenario.gpu.hbm_capacity_gb * 1e9
    model, changes, notes = scenario.model, {}, []
    for side in sides:
        dep = getattr(scenario, side)
        weights, kv = side_fit(model, scenario.gpu, dep, held[side], side, source)
        if weights + kv <= capacity:
            continue
        for tp in (t for t in valid_tp(model) if t > dep.tp):
            moe = model.moe is not None
            trial = dataclasses.replace(dep, tp=tp, ep=tp if moe else dep.ep, dp_attention=moe or dep.dp_attention)
            if tp % trial.ep:
                continue
            w2, kv2 = side_fit(model, scenario.gpu, trial, held[side], side, source)
            if w2 + kv2 <= capacity:
                changes[side] = trial
                ep_note = f" ep={trial.ep} dp_attention" if moe else ""
                notes.append(f"{side}: tp {dep.tp} -> {tp}{ep_note} so that {model.id} fits {scenario.gpu.id}'s "
                             f"{scenario.gpu.hbm_capacity_gb:g} GB of HBM ({(w2 + kv2) / 1e9:.1f} GB per GPU; "
                             f"{(weights + kv) / 1e9:.1f} GB at tp={dep.tp})")
                break
    return (scenario.replace(**changes) if changes else scenario), notes


def dep_budget(dep: Deployment) -> int:
    """Tokens one prefill step holds KV for when batching (0 when not batching)."""
    return int(dep.max_batch_tokens) if dep.max_batch_tokens > 0 else 0
