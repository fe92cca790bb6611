"""KV-cache layout: how many bytes each token, layer, page, request and rank holds.

Pure arithmetic on a ModelProfile and a Deployment. Conventions (kept by the plan too):

- GQA/MHA: per layer and token, K and V of every KV head: 2 * kv_heads * head_dim elements.
- MLA: the compressed latent plus the decoupled RoPE key: kv_lora_rank + qk_rope_head_dim
  elements, one "head" that every TP rank holds in full (replicated) unless attention is
  data parallel (then one rank holds a request's latent).
- Element size from KV_DTYPE_BITS; fp4 packs two elements per byte (scales not modelled).
- Tensor parallelism splits KV heads; when kv_heads < tp, heads are replicated: rank t holds
  head t * kv_heads // tp, so each rank holds max(1, kv_heads // tp) heads.
- Pipeline parallelism splits layers into contiguous stages; when layers % pp != 0 the
  first (layers % pp) stages get one extra layer (numpy.array_split rounding).
- Sliding-window layers hold at most `window` tokens of a request.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProfileError
from ..core.profiles import KV_DTYPE_BITS, ModelProfile
from ..core.scenario import Deployment


@dataclass(frozen=True)
class KvLayout:
    model_id: str
    kv_dtype: str
    page_size: int  # tokens per page
    tp: int
    pp: int
    dp_attention: bool
    kv_heads: int  # KV "heads" the layout splits over TP (MLA: 1 latent)
    heads_per_rank: int  # KV heads held by each TP rank
    head_bytes_per_token: tuple[int, ...]  # per layer: bytes of one KV head for one token
    sliding: tuple[bool, ...]  # per layer: is it a sliding-window layer
    window: int  # sliding window in tokens (0 = none)
    stages: tuple[tuple[int, int], ...]  # per PP stage: [first layer, last layer + 1)

    @property
    def layers(self) -> int:
        return len(self.head_bytes_per_token)

    @property
    def bytes_per_token_per_layer(self) -> tuple[int, ...]:
        """Whole model, one copy, no TP split; sliding layers still counted per token."""
        return tuple(b * self.kv_heads for b in self.head_bytes_per_token)

    @property
    def bytes_per_token(self) -> int:
        return sum(self.bytes_per_token_per_layer)

    @property
    def bytes_per_page(self) -> int:
        """One page of `page_size` tokens over all layers (one copy, no TP split)."""
        return self.page_size * self.bytes_per_token

    @property
    def bytes_per_rank_per_token_per_layer(self) -> tuple[int, ...]:
        return tuple(b * self.heads_per_rank for b in self.head_bytes_per_token)

    @property
    def bytes_per_rank_per_token(self) -> int:
        """Bytes one rank holds per token of a request it holds (its stage's layers, its heads).

        With PP the largest stage is reported (the first one, by the rounding rule)."""
        per_layer = self.bytes_per_rank_per_token_per_layer
        return max(sum(per_layer[a:b]) for a, b in self.stages)

    @property
    def copies(self) -> int:
        """How many TP ranks hold each KV byte (replication factor of the whole KV)."""
        if self.dp_attention:
            return 1
        return max(1, self.tp // self.kv_heads)

    @property
    def ranks(self) -> int:
        return self.tp * self.pp

    def stage_of_layer(self, layer: int) -> int:
        for s, (a, b) in enumerate(self.stages):
            if a <= layer < b:
                return s
        raise IndexError(layer)

    def tokens_held(self, layer: int, isl: int) -> int:
        return min(isl, self.window) if self.sliding[layer] and self.window else isl

    def pages(self, isl: int) -> int:
        return -(-isl // self.page_size)

    def first_page_held(self, layer: int, isl: int) -> int:
        """First page a layer still holds: sliding layers keep pages overlapping the last window tokens."""
        if self.sliding[layer] and self.window and isl > self.window:
            return (isl - self.window) // self.page_size
        return 0

    def bytes_per_request(self, isl: int) -> int:
        """Token-exact KV of one request (one copy, no TP split)."""
        per_layer = self.bytes_per_token_per_layer
        return sum(per_layer[l] * self.tokens_held(l, isl) for l in range(self.layers))

    def paged_bytes_per_request(self, isl: int) -> int:
        """KV of one request in whole pages (what the plan moves): a partial last page and a
        sliding layer's first in-window page count whole, as serving engines move blocks."""
        per_layer = self.bytes_per_token_per_layer
        n = self.pages(isl)
        return sum(
            per_layer[l] * self.page_size * (n - self.first_page_held(l, isl)) for l in range(self.layers)
        )

    def to_dict(self, isl: int | None = None) -> dict:
        out = {
            "model": self.model_id,
            "kv_dtype": self.kv_dtype,
            "tp": self.tp,
            "pp": self.pp,
            "page_size": self.page_size,
            "bytes_per_token": self.bytes_per_token,
            "bytes_per_token_per_layer": list(self.bytes_per_token_per_layer),
            "bytes_per_page": self.bytes_per_page,
            "bytes_per_rank_per_token": self.bytes_per_rank_per_token,
            "heads_per_rank": self.heads_per_rank,
            "copies": self.copies,
            "stages": [list(s) for s in self.stages],
        }
        if isl is not None:
            out["isl"] = isl
            out["bytes_per_request"] = self.bytes_per_request(isl)
            out["paged_bytes_per_request"] = self.paged_bytes_per_request(isl)
        return out


def valid_tp(model: ModelProfile) -> list[int]:
    """TP degrees that split this model's heads evenly (replicating KV heads when tp > kv_heads)."""
    kv = 1 if model.attention == "mla" else model.kv_heads
    return [t for t in range(1, model.heads + 1) if model.heads % t == 0 and (kv % t == 0 or t % kv == 0)]


def element_bits(kv_dtype: str, source: str = "<scenario>", field: str = "kv_dtype") -> int:
    try:
        return KV_DTYPE_BITS[kv_dtype]
    except KeyError:
        raise ProfileError(source, field, f"unknown KV dtype {kv_dtype!r}; valid: {', '.join(KV_DTYPE_BITS)}") from None


def split_stages(layers: int, pp: int) -> tuple[tuple[int, int], ...]:
    base, extra = divmod(layers, pp)
    stages, start = [], 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        stages.append((start, start + n))
        start += n
    return tuple(stages)


def kv_layout(
    model: ModelProfile, deployment: Deployment, source: str = "<scenario>", side: str | None = "prefill"
) -> KvLayout:
    """Layout of `model`'s KV under `deployment`. Bad TP/PP/dtype -> ProfileError naming `side.field`."""
    where = (lambda f: f"{side}.{f}") if side else (lambda f: f)
    tp, pp = deployment.tp, deployment.pp
    if tp < 1:
        raise ProfileError(source, where("tp"), f"must be >= 1, got {tp}")
    if pp < 1 or pp > model.layers:
        raise ProfileError(source, where("pp"), f"must be between 1 and {model.layers} (layers), got {pp}")
    ep = deployment.ep
    if ep < 1 or tp % ep:
        raise ProfileError(source, where("ep"), f"must be >= 1 and divide tp ({tp}), got {ep}")
    if deployment.max_batch_tokens < 0:
        raise ProfileError(source, where("max_batch_tokens"), f"must be >= 0, got {deployment.max_batch_tokens}")
    if deployment.page_size < 1:
        raise ProfileError(source, where("page_size"), f"must be >= 1, got {deployment.page_size}")
    kv_dtype = deployment.kv_dtype or model.kv_dtype
    bits = element_bits(kv_dtype, source, where("kv_dtype"))
    if model.attention == "mla":
        if model.mla is None:
            raise ProfileError(source, "mla", "attention is mla but the profile has no mla dims")
        kv_heads, elems = 1, model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
    else:
        kv_heads, elems = model.kv_heads, 2 * model.head_dim
    if not deployment.dp_attention:
        heads_ok = model.heads % tp == 0 and (kv_heads % tp == 0 or tp % kv_heads == 0)
        if not heads_ok:
            raise ProfileError(
                source,
                where("tp"),
                f"tp={tp} does not split {model.id}'s {model.heads} heads / {kv_heads} KV heads evenly; "
                f"valid: {', '.join(map(str, valid_tp(model)))}",
            )
    if (elems * bits) % 8:
        raise ProfileError(source, where("kv_dtype"), f"{kv_dtype} does not pack {elems} elements into whole bytes")
    head_bytes = elems * bits // 8
    sw = model.sliding_window
    sliding_layers = set(sw.layers) if sw else set()
    heads_per_rank = kv_heads if deployment.dp_attention else max(1, kv_heads // tp)
    return KvLayout(
        model_id=model.id,
        kv_dtype=kv_dtype,
        page_size=deployment.page_size,
        tp=tp,
        pp=pp,
        dp_attention=deployment.dp_attention,
        kv_heads=kv_heads,
        heads_per_rank=heads_per_rank,
        head_bytes_per_token=(head_bytes,) * model.layers,
        sliding=tuple(l in sliding_layers for l in range(model.layers)),
        window=sw.window if sw else 0,
        stages=split_stages(model.layers, pp),
    )
