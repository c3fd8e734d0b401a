"""A step-time model fitted to measured steps, its validation, and what-if predictions for other hardware.

A step's seconds are modelled as the weights streamed once, plus what varies with the batch, plus the host:

    seconds = weight_bytes / weight_bandwidth + kv_bytes * s_kv
              + decode_flops * s_decode + prefill_flops * s_prefill
              + decode_attention_flops * s_attention + prefill_attention_flops * s_prefill_attention + host_s

Decode rows (matrix-vector products), prefill chunks (matrix-matrix) and attention run different kernels at
different shares of the machine's peak, so each has its own rate. The constant (weights plus host) and the rates
are fitted by non-negative least squares on relative errors (each step weighted by 1 / its time), then again
without the 5% of steps fitted worst (a shared machine stalls a step now and then). The host share (sampling and
Python, measured on every step; its median) is taken out of the constant; what is left is the weights' streaming time.
Validation fits on every other step and predicts the rest: relative error overall, by width and by context.

That additive model is this machine's (a CPU runs a step's memory streams and arithmetic in one kernel, and a
matrix-vector product's time is both). For other hardware the prediction is the roofline: each step takes the
host's seconds (carried over as measured: host-side work) plus the longer of its bytes and its FLOPs at the same
shares of that hardware's ceilings as the engine reached here (Efficiency). The binding ceiling is the term that
takes most of the predicted time.
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

RATES = ("kv_bytes", "decode_flops", "prefill_flops", "decode_attention_flops", "prefill_attention_flops")
"""The per-unit seconds a StepModel fits, in StepCost.columns order."""


@dataclass(frozen=True)
class StepModel:
    constant_s: float
    """Seconds every step pays: the weights streamed, and the host's time."""
    host_s: float
    """The measured median of sampling and Python per step (part of constant_s)."""
    weight_bytes: float
    rates: tuple[float, ...]
    """Seconds per unit of each of RATES."""

    @property
    def weight_bandwidth(self) -> float:
        """Bytes per second the weights were read at (the constant less the host, per step)."""
        t = self.constant_s - self.host_s
        return self.weight_bytes / t if t > 0 else math.inf

    def achieved(self, name: str) -> float:
        r = self.rates[RATES.index(name)]
        return 1.0 / r if r > 0 else math.inf

    def terms(self, cost: StepCost) -> tuple[float, float, float, float]:
        """(host, memory, compute, attention) seconds of one step."""
        kv, dec, pre, att, patt = (c * r for c, r in zip(cost.columns(), self.rates, strict=True))
        weights = max(0.0, self.constant_s - self.host_s)
        return self.host_s, weights + kv, dec + pre, att + patt

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
    X = np.array([[1.0, *c.columns()] for c in costs])
    scale = np.where(X.max(axis=0) > 0, X.max(axis=0), 1.0)  # columns of O(1) for the solver
    y = np.array([max(s.seconds, 1e-9) for s in steps])
    Aw = (X / scale) / y[:, None]  # relative errors
    coef = _nnls(Aw, np.ones_like(y))
    if len(y) >= 20:
        residual = np.abs(Aw @ coef - 1.0)
        keep = residual <= np.percentile(residual, 95)
        coef = _nnls(Aw[keep], np.ones(int(keep.sum())))
    coef = coef / scale
    host = float(np.median([s.sample_s + s.other_s for s in steps]))  # a stalled step's host time is no guide
    return StepModel(float(coef[0]), min(host, float(coef[0])), costs[0].weight_bytes,
                     tuple(float(c) for c in coef[1:]))


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
    test = [i for i in range(1, len(steps), 2) if steps[i].seconds > 0]
    if len(train) < 3 or not test:
        return {"n_test_steps": len(test), "note": "too few steps to validate"}
    model = fit_step_model([steps[i] for i in train], [costs[i] for i in train])
    errors = {i: abs(model.seconds(costs[i]) - steps[i].seconds) / steps[i].seconds for i in test}
    by_width: dict[str, list[float]] = defaultdict(list)
    by_context: dict[str, list[float]] = defaultdict(list)
    for i, e in errors.items():
        s = steps[i]
        if s.width and not s.prefill_tokens:  # pure decode steps: the grid a hardware team reads
            by_width[_bucket(s.width, WIDTH_EDGES)].append(e)
            by_context[_bucket(s.context_sum // s.width, CONTEXT_EDGES)].append(e)

    def summary(xs: list[float]) -> dict[str, float]:
        return {"n": len(xs), "median": float(np.median(xs)), "p90": float(np.percentile(xs, 90)),
                "max": float(max(xs))}

    return {"n_test_steps": len(errors), "relative_error": summary(list(errors.values())),
            "by_width": {k: summary(v) for k, v in sorted(by_width.items())},
            "by_context": {k: summary(v) for k, v in sorted(by_context.items())}}


@dataclass(frozen=True)
class Efficiency:
    """The shares of this machine's ceilings the engine reached: each step's bytes and FLOPs over its time inside
    llama_decode, the 90th percentile over steps (a robust best), over the measured ceiling."""

    bandwidth: float
    flops: float

    @classmethod
    def of(cls, steps: Sequence[StepRecord], costs: Sequence[StepCost], ceilings: Ceilings) -> Efficiency:
        timed = [(c, s.decode_s) for s, c in zip(steps, costs, strict=True) if s.decode_s > 0]
        if not timed:
            return cls(1.0, 1.0)
        bw = float(np.percentile([c.bytes / t for c, t in timed], 90)) / ceilings.memory_bandwidth
        fl = float(np.percentile([c.flops / t for c, t in timed], 90)) / ceilings.flops
        return cls(min(1.0, bw), min(1.0, fl))


@dataclass(frozen=True)
class WhatIf:
    hardware: str
    seconds: float
    tokens_per_second: float
    usd: float
    usd_per_solved: float | None
    binding: str
    """The term taking most of the predicted time (WHAT_IF_TERMS)."""
    shares: dict[str, float]
    fits_in_memory: bool


WHAT_IF_TERMS = ("host", "memory bandwidth", "compute")


def what_if(hw: Hardware, efficiency: Efficiency, host_s: float, costs: Sequence[StepCost], decoded_tokens: int,
            peak_bytes: float, solved: int | None = None) -> WhatIf:
    """The same steps on `hw` by the roofline: each step takes the host's seconds plus the longer of its bytes at
    `efficiency.bandwidth` x the hardware's bandwidth and its FLOPs at `efficiency.flops` x its FLOP/s (a GPU
    overlaps the two; the additive step model above is this machine's, for validation)."""
    bw = efficiency.bandwidth * hw.memory_bandwidth
    fl = efficiency.flops * hw.flops
    totals = [0.0, 0.0, 0.0]
    for c in costs:
        memory, compute = c.bytes / bw, c.flops / fl
        totals[0] += host_s
        totals[1 if memory >= compute else 2] += max(memory, compute)
    seconds = sum(totals)
    usd = hw.usd_per_hour * seconds / 3600.0
    shares = {name: (t / seconds if seconds else 0.0) for name, t in zip(WHAT_IF_TERMS, totals, strict=True)}
    return WhatIf(hw.name, seconds, decoded_tokens / seconds if seconds else 0.0, usd,
                  usd / solved if solved else None, max(shares, key=lambda k: shares[k]), shares,
                  peak_bytes <= hw.memory_bytes)
