"""The compute profile of a workload: measured steps, derived FLOPs and bytes, ceilings, a validated step-time
model and what-if hardware, as one JSON document (format "ponder-profile/1").

Fields (every time in seconds, bytes in bytes, rates per second):

- `format`, `model` (name, sha256, n_params, bytes_per_param, n_layers, n_kv_heads, head_dim), `kv_cache_type`,
  `kv_bytes_per_cell`, `weight_bytes`, `source` (what was profiled);
- `machine`: the ceilings measured here (`memory_bandwidth`, `flops`, `threads`);
- `totals`: `steps`, `decoded_tokens`, `prefill_tokens`, `seconds`, and `share`: the fractions of step time spent
  in `prefill` and `decode` (llama_decode's time, split in mixed steps by FLOPs), `sampling`, `python` and
  `cache_copies` (KV copied to and from the host prefix cache);
- `host_share_by_width`: per decode width, the share of a pure decode step's time in sampling and Python (neither
  llama_decode nor the host cache's copies);
- `kv_cells`: `peak` and `mean` cells in use over the steps; `width_histogram`: steps per decode width;
- `steps`: one row per step with what was measured (width, prefill_tokens, context_sum, context_max, kv_cells,
  seconds, decode_s, sample_s, other_s, cache_s) and derived (flops, weight_bytes, kv_bytes, intensity, achieved_flops,
  achieved_bandwidth);
- `step_model` (predict.py): `constant_s` (weights streamed plus host, per step), `host_s`, `weight_bandwidth`,
  `achieved` (per unit of each term: kv_bytes in B/s, decode_flops, prefill_flops, decode_attention_flops and
  prefill_attention_flops in FLOP/s; null where the fit gave the term no time), `share_of_ceiling` of each, and
  `validation` (predict.validate);
- `kv_crossover_context`: per decode width, the context per sequence beyond which KV reads exceed weight reads;
- `efficiency`: the shares of the bandwidth and FLOP/s ceilings the engine reached (predict.Efficiency);
- `what_if`: per hardware, by the roofline at those shares, predicted `seconds`, `tokens_per_second`, `usd`,
  `usd_per_solved`, the `binding` term (host, memory bandwidth or compute), the time `shares` and whether the
  weights and peak KV cache fit in its memory.

This module owns the document and reading steps back; the arithmetic is cost.py's and predict.py's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any

from ponder.backends.steptrace import StepRecord
from ponder.compute import KVCacheType
from ponder.errors import PonderError
from ponder.profiling.ceilings import Ceilings
from ponder.profiling.cost import kv_bytes_per_cell, kv_crossover_context, step_cost, weight_bytes
from ponder.profiling.hardware import Hardware
from ponder.profiling.predict import RATES, Efficiency, fit_step_model, validate, what_if
from ponder.types import ModelInfo

FORMAT = "ponder-profile/1"


class ProfileError(PonderError):
    """Nothing to profile: a run without a step trace, or steps that cannot be read."""


def records(rows: Sequence[Mapping[str, Any]], where: str) -> list[StepRecord]:
    """StepRecords from stored dicts; ProfileError naming `where` if they are not steps."""
    names = {f.name for f in fields(StepRecord)}
    out = []
    for i, row in enumerate(rows):  # steps from before cache_s was recorded are read with it at 0
        if not isinstance(row, Mapping) or set(row) not in (names, names - {"cache_s"}):
            raise ProfileError(f"{where}: step {i} is not a step record (written by another ponder version?): "
                               "profile a new run")
        out.append(StepRecord(**row))
    return out


def _finite(x: float) -> float | None:
    """JSON has no infinity: a term the fit found no time for has no achieved rate."""
    return x if math.isfinite(x) else None


def host_share_by_width(steps: Sequence[StepRecord]) -> dict[str, float]:
    """Per decode width, the share of pure decode steps' time outside llama_decode (sampling and Python)."""
    by: dict[int, list[float]] = {}
    for s in steps:
        if s.width and not s.prefill_tokens and s.seconds > 0:
            by.setdefault(s.width, []).append((s.sample_s + s.other_s) / s.seconds)
    return {str(w): sum(v) / len(v) for w, v in sorted(by.items())}


def build_profile(steps: Sequence[StepRecord], info: ModelInfo, kv: KVCacheType, ceilings: Ceilings,
                  hardware: Sequence[Hardware] = (), solved: int | None = None,
                  source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if not steps:
        raise ProfileError("no engine steps were recorded: the workload decoded nothing")
    costs = [step_cost(s, info, kv) for s in steps]
    model = fit_step_model(steps, costs)
    efficiency = Efficiency.of(steps, costs, ceilings)
    decoded = sum(s.width for s in steps)
    prefilled = sum(s.prefill_tokens for s in steps)
    total = sum(s.seconds for s in steps)
    prefill_s = decode_s = 0.0
    for s in steps:
        tokens = s.width + s.prefill_tokens
        share = s.prefill_tokens / tokens if tokens else 0.0  # 2N per token dominates a step's FLOPs
        prefill_s += s.decode_s * share
        decode_s += s.decode_s * (1 - share)
    sampling = sum(s.sample_s for s in steps)
    python = sum(s.other_s for s in steps)
    copies = sum(s.cache_s for s in steps)
    peak_cells = max(s.kv_cells for s in steps)
    rows = []
    for s, c in zip(steps, costs, strict=True):
        rows.append({**{k: v for k, v in s.to_dict().items() if k != "start"}, "seconds": s.seconds,
                     "flops": c.flops, "attention_flops": c.attention_flops, "weight_bytes": c.weight_bytes,
                     "kv_bytes": c.kv_bytes,
                     "intensity": c.intensity, "achieved_flops": c.flops / s.decode_s if s.decode_s else None,
                     "achieved_bandwidth": c.bytes / s.decode_s if s.decode_s else None})
    peak_bytes = weight_bytes(info) + peak_cells * kv_bytes_per_cell(info, kv)
    return {
        "format": FORMAT,
        "source": dict(source or {}),
        "model": {"name": info.name, "sha256": info.sha256, "n_params": info.n_params,
                  "bytes_per_param": info.bytes_per_param, "n_layers": info.n_layers, "n_kv_heads": info.n_kv_heads,
                  "head_dim": info.head_dim},
        "kv_cache_type": kv.value, "kv_bytes_per_cell": kv_bytes_per_cell(info, kv),
        "weight_bytes": weight_bytes(info),
        "machine": asdict(ceilings),
        "totals": {"steps": len(steps), "decoded_tokens": decoded, "prefill_tokens": prefilled, "seconds": total,
                   "share": {"prefill": prefill_s / total, "decode": decode_s / total, "sampling": sampling / total,
                             "python": python / total, "cache_copies": copies / total}},
        "kv_cells": {"peak": peak_cells, "mean": sum(s.kv_cells for s in steps) / len(steps)},
        "width_histogram": dict(sorted(Counter(s.width for s in steps).items())),
        "steps": rows,
        "host_share_by_width": host_share_by_width(steps),
        "step_model": {"constant_s": model.constant_s, "host_s": model.host_s,
                       "weight_bandwidth": _finite(model.weight_bandwidth),
                       "weight_bandwidth_share_of_ceiling": _finite(model.weight_bandwidth / ceilings.memory_bandwidth),
                       "achieved": {name: _finite(model.achieved(name)) for name in RATES},
                       "share_of_ceiling": {name: _finite(model.achieved(name) / (
                           ceilings.memory_bandwidth if name == "kv_bytes" else ceilings.flops)) for name in RATES},
                       "validation": validate(steps, costs)},
        "kv_crossover_context": {str(w): kv_crossover_context(info, kv, w) for w in (1, 2, 4, 8, 16)},
        "efficiency": asdict(efficiency),
        "what_if": [asdict(what_if(hw, efficiency, model.host_s, costs, decoded, peak_bytes, solved))
                    for hw in hardware],
    }
