"""What one engine step costs in FLOPs and bytes, from the model's shapes (compute.py's accounting, per step).

- FLOPs: 2N per token in the batch (decoded and prefilled) plus attention, 2 * n_layers * d_attn per position
  attended (Kaplan et al. 2020, as compute.py). A decoded token's attention runs over the whole span of
  llama.cpp's unified KV cache, every cell in use (other sequences' cells masked out, not skipped for
  free), so its positions are the cells in use, not its own context (the calibration grid fits wide
  steps only so). A prefill chunk, run on an empty cache in the calibration, keeps its own causal positions.
- Weight bytes: every step reads all the weights once, whatever its width (the batch shares them).
- KV bytes: each decoded sequence reads its own context's keys and values, each prefill chunk the cells up to its
  end, 2 * n_layers * n_kv_heads * head_dim * bytes_per_value per cell (Sadhukhan et al. 2025); the cells a step
  writes are added.

This module owns that arithmetic; it ignores how long the step took (predict.py fits that).
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.backends.steptrace import StepRecord
from ponder.compute import KVCacheType, attention_width
from ponder.types import ModelInfo


@dataclass(frozen=True)
class StepCost:
    decode_flops: float
    """2N per decoded token: the weight matmuls of the decode rows (matrix-vector products, one per sequence)."""
    prefill_flops: float
    """2N per prefilled token (matrix-matrix products: a kernel of their own)."""
    decode_attention_flops: float
    """2 * n_layers * d_attn per position a decoded token's attention runs over: every cell in use (see above)."""
    prefill_attention_flops: float
    weight_bytes: float
    kv_bytes: float

    @property
    def attention_flops(self) -> float:
        return self.decode_attention_flops + self.prefill_attention_flops

    @property
    def flops(self) -> float:
        return self.decode_flops + self.prefill_flops + self.attention_flops

    def columns(self) -> tuple[float, ...]:
        """What the step-time model weighs, in predict.TERMS order after the constant."""
        return (self.kv_bytes, self.decode_flops, self.prefill_flops, self.decode_attention_flops,
                self.prefill_attention_flops)

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOPs per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0


def kv_bytes_per_cell(info: ModelInfo, kv: KVCacheType) -> float:
    return 2.0 * info.n_layers * info.n_kv_heads * info.head_dim * kv.bytes_per_value


def weight_bytes(info: ModelInfo) -> float:
    return info.n_params * info.bytes_per_param


def step_cost(step: StepRecord, info: ModelInfo, kv: KVCacheType) -> StepCost:
    tokens = step.width + step.prefill_tokens
    cells = step.context_sum + step.prefill_kv_tokens + tokens
    attention = 2.0 * info.n_layers * attention_width(info)
    return StepCost(2.0 * info.n_params * step.width, 2.0 * info.n_params * step.prefill_tokens,
                    attention * step.width * step.kv_cells, attention * step.prefill_context_sum, weight_bytes(info),
                    cells * kv_bytes_per_cell(info, kv))


def kv_crossover_context(info: ModelInfo, kv: KVCacheType, width: int) -> float:
    """The context length per sequence at which a width-`width` decode step reads as many KV bytes as weight
    bytes: beyond it, the KV cache dominates the step's memory traffic."""
    return weight_bytes(info) / (width * kv_bytes_per_cell(info, kv))
