"""HBM fit: a deployment whose weights plus KV do not fit one GPU's HBM cannot run; say so with both figures.

Per rank: weights = attention (whole under dp_attention, else / tp) + dense FFNs / tp (whole under
dp_attention) + routed experts / tp (spread over ep ranks, each TP-split over tp/ep) + embeddings
and LM head / tp, all over the rank's PP stage share (layers / pp); KV = the rank's bytes per
token * tokens held at once: prefill the largest prompt (a batch's budget when batching), decode
concurrency * (ISL + OSL). Activations and the framework's workspace are not counted, so a
deployment that passes may still be tight; one that fails cannot run. GB are decimal.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ProfileError
from ..profiles import ModelProfile
from ..scenario import Deployment
from .kvlayout import kv_layout
from .timing import attention_params, weight_bytes_per_param
from .workload import sample_requests

if TYPE_CHECKING:
    from ..scenario import Scenario


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

    `kvfabric plan` and `kvfabric run` call it; the plan builder does not, so layout studies of
    any size still plan, and the runner only warns (see runner.py)."""
    problem = hbm_fit_problem(scenario)
    if problem is not None:
        raise ProfileError(source, *problem)


def hbm_fit_problem(scenario: "Scenario", source: str = "<scenario>") -> tuple[str, str] | None:
    """(field, reason) when one side's weights + KV exceed the GPU's HBM, else None."""
    if scenario.synthetic is not None:
        return None
    isl, osl, _ = sample_requests(scenario.workload, scenario.seed, source)
    max_isl, max_osl = int(isl.max()), int(osl.max())
    gpu = scenario.gpu
    capacity = gpu.hbm_capacity_gb * 1e9
    arrival = scenario.workload.arrival
    concurrency = arrival.concurrency if arrival.kind == "closed" else 1
    model = scenario.model
    for side, dep, tokens in (
        ("prefill", scenario.prefill, max(max_isl, dep_budget(scenario.prefill))),
        ("decode", scenario.decode, concurrency * (max_isl + max_osl)),
    ):
        layout = kv_layout(model, dep, source, side)
        weights = weight_bytes_per_rank(model, dep)
        kv = float(layout.bytes_per_rank_per_token) * tokens
        if weights + kv > capacity:
            return (
                f"{side}.tp",
                f"{model.id} needs {weights / 1e9:.1f} GB of weights + {kv / 1e9:.1f} GB of KV per GPU "
                f"({tokens} tokens) at tp={dep.tp} pp={dep.pp}, more than {gpu.id}'s {gpu.hbm_capacity_gb:g} GB of HBM; "
                "raise tp/pp or shorten the prompts")
    return None


def dep_budget(dep: Deployment) -> int:
    """Tokens one prefill step holds KV for when batching (0 when not batching)."""
    return int(dep.max_batch_tokens) if dep.max_batch_tokens > 0 else 0
