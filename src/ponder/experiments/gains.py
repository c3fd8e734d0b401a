"""Paired gains: what a strategy buys over a baseline on the same problems, with a paired bootstrap interval.

Every outcome of a run is scored on the same problems, so a gain is the mean of per-problem differences
(expected correctness for pooled strategies), and its interval resamples problems, keeping each problem's pair
together. The best strategy within a compute cap is picked by its point estimate among all candidates: the
result records how many there were, since picking the best of many on the same problems flatters it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ponder.experiments.estimators import bootstrap_ci
from ponder.experiments.outcomes import Outcome


@dataclass(frozen=True)
class Gain:
    """One outcome against the baseline, on the problems both have."""

    label: str
    strategy: str
    budget: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    gain: float
    """Mean per-problem accuracy difference (a fraction, not percent)."""
    gain_ci: tuple[float, float]
    """Paired 95% bootstrap interval of the gain."""
    cost: float
    """Mean compute per problem on the axis."""
    cost_ratio: float
    """cost / the baseline's cost."""
    n_problems: int

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "strategy": self.strategy, "budget": self.budget, "accuracy": self.accuracy,
                "accuracy_ci": list(self.accuracy_ci), "gain": self.gain, "gain_ci": list(self.gain_ci),
                "cost": self.cost, "cost_ratio": self.cost_ratio, "n_problems": self.n_problems}


def paired_gain(outcome: Outcome, baseline: Outcome, axis: str = "tokens", seed: int = 0,
                resamples: int = 2000) -> Gain:
    """`outcome` against `baseline` on the problems both have data for."""
    both = np.isfinite(outcome.correct) & np.isfinite(baseline.correct)
    diff = outcome.correct[both] - baseline.correct[both]
    base_cost = baseline.mean_cost(axis, both)
    cost = outcome.mean_cost(axis, both)
    return Gain(outcome.label, outcome.strategy, outcome.budget, outcome.accuracy(both),
                bootstrap_ci(outcome.correct[both], seed=seed, resamples=resamples),
                float(diff.mean()) if diff.size else math.nan,
                bootstrap_ci(diff, seed=seed, resamples=resamples), cost,
                cost / base_cost if base_cost > 0 else math.nan, int(both.sum()))


def gains_over(baseline: Outcome, outcomes: Sequence[Outcome], axis: str = "tokens",
               max_cost_ratio: float | None = None, seed: int = 0) -> list[Gain]:
    """Every deployable outcome (the baseline excluded) within `max_cost_ratio` x the baseline's compute."""
    out = []
    for o in outcomes:
        if not o.deployable or o.label == baseline.label or not np.isfinite(o.correct).any():
            continue
        g = paired_gain(o, baseline, axis, seed)
        if max_cost_ratio is None or g.cost_ratio <= max_cost_ratio:
            out.append(g)
    return sorted(out, key=lambda g: (-g.gain, g.cost, g.label))


def best(gains: Sequence[Gain]) -> Gain | None:
    """The largest gain (the cheaper on ties)."""
    return min(gains, key=lambda g: (-g.gain, g.cost, g.label)) if gains else None
