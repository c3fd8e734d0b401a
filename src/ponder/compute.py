"""Compute accounting: FLOPs and bytes moved for the tokens a Ledger counted, from the model's shapes.

FLOPs follow Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", Table 1): a forward pass costs about
2N FLOPs per token for N parameters, plus 2 * n_layers * context * d_attn for attention scores and values, which
grows with the context. (Kaplan count non-embedding parameters; we count all, since the output projection is a
real matmul: a small overcount for models with untied input embeddings.) Bytes follow the memory-bound view of
decoding in Kinetics (Sadhukhan et al. 2025, "Kinetics: Rethinking Test-Time Scaling Laws"): every decode step
reads all the weights (shared by the sequences decoded together in one batch) plus each sequence's KV cache,
whose size grows with its context.

Shapes come from GGUF metadata (ModelInfo, `backend.info`). When a count arrives already summed (a Usage), the
context of each token is estimated from the averages per call; the estimate is documented where it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ponder.ledger import PriceTable
from ponder.types import ModelInfo, Result, Usage

KV_BYTES_F16 = 2.0


class KVCacheType(StrEnum):
    """How the KV cache stores each key and value element (llama.cpp's type_k / type_v)."""

    F16 = "f16"
    Q8_0 = "q8_0"
    Q4_0 = "q4_0"

    @property
    def bytes_per_value(self) -> float:
        """Bytes per element: ggml's block formats hold 32 values with one f16 scale (q8_0: 34 bytes, q4_0: 18)."""
        return {"f16": KV_BYTES_F16, "q8_0": 34 / 32, "q4_0": 18 / 32}[self.value]


def attention_width(info: ModelInfo) -> int:
    """The attention width: n_heads * head_dim (d_model when the head shapes are unknown)."""
    return info.n_heads * info.head_dim if info.n_heads and info.head_dim else info.d_model


def flops_per_token(info: ModelInfo, context_len: int) -> float:
    """Forward FLOPs for one token that attends to `context_len` earlier tokens: 2N + 2 * n_layers * ctx * d_attn
    (Kaplan et al. 2020, Table 1)."""
    return 2.0 * info.n_params + 2.0 * info.n_layers * max(context_len, 0) * attention_width(info)


def _position_sum(start: int, stop: int) -> float:
    """sum(range(start, stop)): the total context seen by tokens at positions start .. stop - 1."""
    return (start + stop - 1) * (stop - start) / 2.0 if stop > start else 0.0


def sequence_flops(info: ModelInfo, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
    """Exact FLOPs of one sequence: prefill the uncached prompt tokens, then decode `completion_tokens`."""
    attn = 2.0 * info.n_layers * attention_width(info)
    fresh = max(prompt_tokens - cached_tokens, 0)
    total_positions = prompt_tokens + completion_tokens
    return (2.0 * info.n_params * (fresh + completion_tokens)
            + attn * (_position_sum(cached_tokens, prompt_tokens) + _position_sum(prompt_tokens, total_positions)))


def _per_call(usage: Usage, generations: int | None) -> tuple[float, float]:
    """Average prompt length per call and average generation length (estimated from summed counts)."""
    calls = max(usage.calls, 1)
    gens = max(generations or calls, 1)
    return usage.prompt_tokens / calls, usage.completion_tokens / gens


def usage_flops(info: ModelInfo, usage: Usage, generations: int | None = None) -> tuple[float, float]:
    """(prefill FLOPs, decode FLOPs) of summed usage, with each token's context estimated from averages.

    Prefill tokens see on average half the prompt; a decoded token sees the prompt plus half its own generation.
    `generations` (how many sequences were decoded) sharpens that; without it each call counts as one.
    """
    prompt, gen_len = _per_call(usage, generations)
    fresh = max(usage.prompt_tokens - usage.cached_tokens, 0)
    prefill = fresh * flops_per_token(info, 0) + fresh * 2.0 * info.n_layers * attention_width(info) * prompt / 2.0
    decode = usage.completion_tokens * flops_per_token(info, 0) + (
        usage.completion_tokens * 2.0 * info.n_layers * attention_width(info) * (prompt + gen_len / 2.0))
    return prefill, decode


def flops(info: ModelInfo, usage: Usage | Mapping[str, Usage], generations: int | None = None) -> float:
    """Total forward FLOPs of `usage` (one Usage, or usage by role), prompt and completion together."""
    usages = usage.values() if isinstance(usage, Mapping) else [usage]
    return sum(sum(usage_flops(info, u, generations)) for u in usages)


def bytes_per_decoded_token(info: ModelInfo, context_len: int, kv_bytes: float = KV_BYTES_F16,
                            batch: int = 1) -> float:
    """Bytes read from memory to decode one token: the weights (shared by a batch of `batch` sequences) plus this
    sequence's KV cache, 2 * n_layers * n_kv_heads * head_dim * context * kv_bytes (Sadhukhan et al. 2025)."""
    weights = info.n_params * info.bytes_per_param / max(batch, 1)
    kv = 2.0 * info.n_layers * info.n_kv_heads * info.head_dim * max(context_len, 0) * kv_bytes
    return weights + kv


def bytes_moved(info: ModelInfo, usage: Usage | Mapping[str, Usage], generations: int | None = None,
                batch: int = 1, kv_bytes: float = KV_BYTES_F16) -> float:
    """Bytes read while decoding `usage`'s completion tokens (the memory-bound cost; prefill is compute-bound)."""
    usages = usage.values() if isinstance(usage, Mapping) else [usage]
    total = 0.0
    for u in usages:
        prompt, gen_len = _per_call(u, generations)
        total += u.completion_tokens * bytes_per_decoded_token(info, round(prompt + gen_len / 2.0), kv_bytes, batch)
    return total


@dataclass(frozen=True)
class ComputeReport:
    """What a Result cost, in tokens, FLOPs, bytes moved, seconds and dollars."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    flops: float
    """Forward FLOPs, prefill and decode, all roles (Kaplan et al. 2020)."""
    prefill_flops: float
    decode_flops: float
    bytes_moved: float
    """Bytes read while decoding, one sequence per batch (Kinetics' memory-bound view)."""
    seconds: float
    usd: float
    flops_by_role: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Result, info: ModelInfo, prices: PriceTable | None = None, model: str | None = None,
           usd: float | None = None, busy_seconds: float | None = None) -> ComputeReport:
        """The report for `result` on a model shaped like `info`; dollars from `usd` or else the PriceTable."""
        model = model or info.name
        total = result.usage
        policy_gens = len(result.candidates) or None
        prefill = decode = moved = 0.0
        by_role: dict[str, float] = {}
        for role, u in result.usage_by_role.items():
            gens = policy_gens if role == "policy" else None
            p, d = usage_flops(info, u, gens)
            prefill, decode, by_role[role] = prefill + p, decode + d, p + d
            moved += bytes_moved(info, u, gens)
        if usd is None:
            usd = (prices or PriceTable()).cost(model, total, busy_seconds)
        return cls(model, total.prompt_tokens, total.completion_tokens, prefill + decode, prefill, decode,
                   moved, total.seconds, usd, by_role)

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "flops": self.flops, "prefill_flops": self.prefill_flops, "decode_flops": self.decode_flops,
            "bytes_moved": self.bytes_moved, "seconds": self.seconds, "usd": self.usd,
            "flops_by_role": dict(self.flops_by_role),
        }
