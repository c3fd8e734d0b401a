"""A step-time model fitted to measured steps, its validation, and what-if predictions for other hardware.

The model is linear in what a step moves and computes:

    seconds = overhead + bytes / achieved_bandwidth + flops / achieved_flops

fitted by non-negative least squares on the steps' seconds (decode, sampling and Python together), on relative
errors (each step weighted by 1 / its time, so short steps count as much as long ones), then again without the
5% of steps it fits worst (a shared machine stalls a step now and then; those stalls are not the hardware). The weights'
bytes are the same every step, so the fit tells their time apart from the overhead only through the KV bytes, which
vary with width and context; both read memory at the same rate. Validation fits on every other step and predicts
the rest, reporting the relative error overall, by width and by context.

For other hardware the engine is assumed to reach the same share of the ceilings it reached here (achieved over
measured), and the per-step overhead is carried over as measured (it is host-side work). The binding ceiling is
the term that takes most of the predicted time.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ponder.backends.steptrace import StepRecord
from ponder.profiling.ceilings import Ceilings
from ponder.profiling.cost import StepCost
from ponder.profiling.hardware import Hardware

TERMS = ("per-step overhead", "memory bandwidth", "compute")


@dataclass(frozen=True)
class StepModel:
    overhead_s: float
    seconds_per_byte: float
    seconds_per_flop: float

    @property
    def achieved_bandwidth(self) -> float:
        return 1.0 / self.seconds_per_byte if self.seconds_per_byte > 0 else math.inf

    @property
    def achieved_flops(self) -> float:
        return 1.0 / self.seconds_per_flop if self.seconds_per_flop > 0 else math.inf

    def terms(self, cost: StepCost) -> tuple[float, float, float]:
        return self.overhead_s, cost.bytes * self.seconds_per_byte, cost.flops * self.seconds_per_flop

    def seconds(self, cost: StepCost) -> float:
        return sum(self.terms(cost))


def _nnls(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0 (active set over a handful of columns)."""
    active = list(range(A.shape[1]))
    while True:
        coef = np.zeros(A.shape[1])
        if active:
            coef[active] = np.linalg.lstsq(A[:, active], y, rcond=None)[0]
        negative = [i for i in active if coef[i] < 0]
        if not negative:
            return coef
        active.remove(min(negative, key=lambda i: coef[i]))


def fit_step_model(steps: Sequence[StepRecord], costs: Sequence[StepCost]) -> StepModel:
    if not steps:
        raise ValueError("no steps to fit")
    # columns scaled to O(1) so the solver sees comparable magnitudes
    b_scale = max(c.bytes for c in costs) or 1.0
    f_scale = max(c.flops for c in costs) or 1.0
    A = np.array([[1.0, c.bytes / b_scale, c.flops / f_scale] for c in costs])
    y = np.array([max(s.seconds, 1e-9) for s in steps])
    Aw, yw = A / y[:, None], np.ones_like(y)  # relative errors
    coef = _nnls(Aw, yw)
    if len(y) >= 20:
        residual = np.abs(Aw @ coef - 1.0)
        keep = residual <= np.percentile(residual, 95)
        coef = _nnls(Aw[keep], yw[keep])
    return StepModel(float(coef[0]), float(coef[1]) / b_scale, float(coef[2]) / f_scale)


def _bucket(value: int, edges: Sequence[int]) -> str:
    for lo, hi in itertools.pairwise(edges):
        if lo <= value < hi:
            return f"{lo}-{hi - 1}"
    return f"{edges[-1]}+"


WIDTH_EDGES = (0, 1, 2, 4, 8, 16, 17)
CONTEXT_EDGES = (0, 512, 1024, 2048, 4096)


def validate(steps: Sequence[StepRecord], costs: Sequence[StepCost]) -> dict[str, object]:
    """Fit on the even steps, predict the odd ones: |predicted - measured| / measured, overall and by bucket."""
    train = list(range(0, len(steps), 2))
    test = list(range(1, len(steps), 2))
    if len(train) < 3 or not test:
        return {"n_test_steps": len(test), "note": "too few steps to validate"}
    model = fit_step_model([steps[i] for i in train], [costs[i] for i in train])
    errors = [abs(model.seconds(costs[i]) - steps[i].seconds) / steps[i].seconds for i in test if steps[i].seconds > 0]
    by_width: dict[str, list[float]] = defaultdict(list)
    by_context: dict[str, list[float]] = defaultdict(list)
    for i, e in zip(test, errors, strict=False):
        s = steps[i]
        if s.width and not s.prefill_tokens:  # pure decode steps: the grid a hardware team reads
            by_width[_bucket(s.width, WIDTH_EDGES)].append(e)
            by_context[_bucket(s.context_sum // s.width, CONTEXT_EDGES)].append(e)

    def summary(xs: list[float]) -> dict[str, float]:
        return {"n": len(xs), "median": float(np.median(xs)), "p90": float(np.percentile(xs, 90)),
                "max": float(max(xs))}

    return {"n_test_steps": len(errors), "relative_error": summary(errors) if errors else None,
            "by_width": {k: summary(v) for k, v in sorted(by_width.items())},
            "by_context": {k: summary(v) for k, v in sorted(by_context.items())}}


@dataclass(frozen=True)
class WhatIf:
    hardware: str
    seconds: float
    tokens_per_second: float
    usd: float
    usd_per_solved: float | None
    binding: str
    """The term taking most of the predicted time (TERMS)."""
    shares: dict[str, float]
    fits_in_memory: bool


def what_if(hw: Hardware, model: StepModel, ceilings: Ceilings, costs: Sequence[StepCost], decoded_tokens: int,
            peak_bytes: float, solved: int | None = None) -> WhatIf:
    """The same steps on `hw`, at the shares of the ceilings the engine reached here (module docstring)."""
    bw_eff = min(1.0, model.achieved_bandwidth / ceilings.memory_bandwidth) if ceilings.memory_bandwidth else 1.0
    fl_eff = min(1.0, model.achieved_flops / ceilings.flops) if ceilings.flops else 1.0
    per_byte = 1.0 / (bw_eff * hw.memory_bandwidth) if model.seconds_per_byte > 0 else 0.0
    per_flop = 1.0 / (fl_eff * hw.flops) if model.seconds_per_flop > 0 else 0.0
    there = StepModel(model.overhead_s, per_byte, per_flop)
    totals = [0.0, 0.0, 0.0]
    for c in costs:
        for i, t in enumerate(there.terms(c)):
            totals[i] += t
    seconds = sum(totals)
    usd = hw.usd_per_hour * seconds / 3600.0
    shares = {name: (t / seconds if seconds else 0.0) for name, t in zip(TERMS, totals, strict=True)}
    return WhatIf(hw.name, seconds, decoded_tokens / seconds if seconds else 0.0, usd,
                  usd / solved if solved else None, max(shares, key=lambda k: shares[k]), shares,
                  peak_bytes <= hw.memory_bytes)
