"""Curves over outcomes: accuracy vs compute with CIs, difficulty bins, the compute-optimal policy, fits.

Everything here is a pure function over `Outcome`s (outcomes.py) and rows, so it is tested on synthetic data:
- `curve_points`: accuracy per (strategy, budget) with a 95% bootstrap CI over problems, on all four axes.
- `oracle_bins` / `predicted_bins`: 5 difficulty bins by pool pass rate (Snell et al. 2024's oracle
  difficulty), or by the agreement among the first few samples (needs no answers).
- `compute_optimal`: per bin and compute level, the (strategy, budget) best on one half of the problems,
  scored on the other half (two-fold), pooled over both halves.
- `efficiency_ratio`: how many times less compute the policy needs to match a baseline's best point.
- `scaling_fit`: least squares of accuracy on ln(compute): slope, intercept, R².
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ponder.experiments.estimators import bootstrap_ci
from ponder.experiments.outcomes import AXES, Outcome, pools_by_problem
from ponder.experiments.records import ResultRow, SampleRow

N_BINS = 5


@dataclass(frozen=True)
class Point:
    """One (strategy, budget) on the curves."""

    strategy: str
    budget: int
    accuracy: float
    ci_low: float
    ci_high: float
    cost: Mapping[str, float]
    """Axis -> mean compute per problem."""
    n_problems: int
    deployable: bool
    exact: bool


def curve_points(outcomes: Sequence[Outcome], seed: int = 0, resamples: int = 1000) -> list[Point]:
    """Accuracy with a 95% bootstrap CI (over problems, fixed seed) and mean compute, per outcome."""
    points = []
    for o in outcomes:
        lo, hi = bootstrap_ci(o.correct, seed=seed, resamples=resamples)
        n = int(np.isfinite(o.correct).sum())
        points.append(Point(o.strategy, o.budget, o.accuracy(), lo, hi,
                            {a: o.mean_cost(a) for a in AXES}, n, o.deployable, o.exact))
    return points


# -- difficulty --------------------------------------------------------------------------------------------
def bins_from_scores(pids: Sequence[str], ease: Mapping[str, float], n_bins: int = N_BINS) -> np.ndarray:
    """[P] bin per problem: 1 = easiest (highest `ease`) .. n_bins = hardest; 0 = no data. Equal-size bins."""
    known = [pid for pid in pids if pid in ease and math.isfinite(ease[pid])]
    ranked = sorted(known, key=lambda pid: (-ease[pid], pid))  # the id breaks ties, so bins are stable
    bin_of = {pid: b + 1 for b, chunk in enumerate(np.array_split(np.array(ranked, dtype=object), n_bins))
              for pid in chunk}
    return np.array([bin_of.get(pid, 0) for pid in pids], dtype=int)


def pass_rates(samples: Sequence[SampleRow], pool: str = "cot") -> dict[str, float]:
    """Single-sample pass rate per problem, estimated from its pool."""
    return {pid: float(np.mean([r.correct for r in rows])) for pid, rows in pools_by_problem(samples, pool).items()}


def agreement(samples: Sequence[SampleRow], first: int = 4, pool: str = "cot") -> dict[str, float]:
    """Share of the first `first` samples that give the modal answer (no answer counts as disagreeing)."""
    out = {}
    for pid, rows in pools_by_problem(samples, pool).items():
        answers = [r.answer for r in rows[:first]]
        counts = Counter(a for a in answers if a is not None)
        out[pid] = (counts.most_common(1)[0][1] if counts else 0) / max(1, len(answers))
    return out


def chain_pool(samples: Sequence[SampleRow]) -> str:
    """The chain-of-thought pool that difficulty is read from: "cot", else the coolest temperature-tagged one."""
    from ponder.strategies.pooling import split_pool

    drawn = {s.pool for s in samples}
    tagged = sorted((split_pool(p)[1] or 0.0, p) for p in drawn if split_pool(p)[0] == "cot")
    return "cot" if "cot" in drawn or not tagged else tagged[0][1]


def oracle_bins(pids: Sequence[str], samples: Sequence[SampleRow], n_bins: int = N_BINS) -> np.ndarray:
    return bins_from_scores(pids, pass_rates(samples, chain_pool(samples)), n_bins)


def predicted_bins(pids: Sequence[str], samples: Sequence[SampleRow], first: int = 4,
                   n_bins: int = N_BINS) -> np.ndarray:
    return bins_from_scores(pids, agreement(samples, first, chain_pool(samples)), n_bins)


# -- the compute-optimal policy ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrontierPoint:
    """The two-fold compute-optimal policy at one compute level."""

    level: float
    """The most compute (mean per problem, on the training half's bin) a choice may spend."""
    accuracy: float
    """Held-out accuracy, pooled over both folds."""
    cost: float
    """Held-out mean compute per problem on the axis."""
    choices: tuple[str, ...]
    """Per bin, "label A / label B": the choice trained on each half."""


def halves(n: int, seed: int = 0) -> np.ndarray:
    """[n] bool: True for half A, from a fixed-seed permutation."""
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
    return mask


def choose(outcomes: Sequence[Outcome], train: np.ndarray, level: float, axis: str) -> Outcome | None:
    """The outcome with the best accuracy on `train` among those within `level`; ties go to the cheaper."""
    best, key = None, None
    for o in outcomes:
        cost = o.mean_cost(axis, train)
        if not cost <= level:  # also drops NaN
            continue
        k = (o.accuracy(train), -cost, o.label)
        if key is None or k > key:
            best, key = o, k
    return best


def compute_optimal(outcomes: Sequence[Outcome], bins: np.ndarray, axis: str = "tokens",
                    levels: Sequence[float] | None = None, seed: int = 0) -> list[FrontierPoint]:
    """Two-fold compute-optimal policy: pick per (bin, level) on one half, score on the other, and swap."""
    in_a = halves(len(bins), seed)
    bin_ids = sorted(int(b) for b in set(bins.tolist()) if b > 0)
    frontier = []
    for level in levels if levels is not None else compute_levels(outcomes, axis):
        point = _policy_at(outcomes, bins, bin_ids, in_a, float(level), axis)
        if point is not None:
            frontier.append(point)
    return frontier


def _policy_at(outcomes: Sequence[Outcome], bins: np.ndarray, bin_ids: Sequence[int], in_a: np.ndarray,
               level: float, axis: str) -> FrontierPoint | None:
    correct = np.full(len(bins), math.nan)
    cost = np.full(len(bins), math.nan)
    choices = []
    for b in bin_ids:
        in_bin = bins == b
        # A candidate must have data for every problem of the bin, so both halves score the same problems.
        usable = [o for o in outcomes if o.deployable and np.isfinite(o.correct[in_bin]).all()
                  and np.isfinite(o.cost[axis][in_bin]).all()]
        picked = []
        for train, test in ((in_a & in_bin, ~in_a & in_bin), (~in_a & in_bin, in_a & in_bin)):
            if not test.any():
                picked.append("-")
                continue
            # A one-problem bin may leave a half empty: train on every other problem instead, still held out.
            o = choose(usable, train if train.any() else ~test, level, axis)
            if o is None:
                return None  # some bin has nothing this cheap: the policy is not defined at this level
            correct[test], cost[test] = o.correct[test], o.cost[axis][test]
            picked.append(o.label)
        choices.append(" / ".join(picked))
    if not np.isfinite(correct).any():
        return None
    return FrontierPoint(level, float(np.nanmean(correct)), float(np.nanmean(cost)), tuple(choices))


def compute_levels(outcomes: Sequence[Outcome], axis: str, n: int = 16) -> np.ndarray:
    """A geometric grid spanning the per-problem compute of every deployable outcome."""
    values = np.concatenate([o.cost[axis] for o in outcomes if o.deployable] or [np.array([])])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return np.array([])
    return np.geomspace(values.min(), values.max(), n)


def efficiency_ratio(frontier: Sequence[FrontierPoint], baseline: Outcome, axis: str = "tokens") -> float | None:
    """Baseline compute / the least compute at which the policy's held-out accuracy reaches the baseline's.

    The crossing is interpolated on log-compute between frontier points; None if the policy never matches.
    """
    target, spend = baseline.accuracy(), baseline.mean_cost(axis)
    pts = sorted((p.cost, p.accuracy) for p in frontier if p.cost > 0 and math.isfinite(p.accuracy))
    if not math.isfinite(target) or not spend > 0:
        return None
    for i, (c, a) in enumerate(pts):
        if a + 1e-12 < target:
            continue
        if i == 0 or a == pts[i - 1][1]:
            return spend / c
        c0, a0 = pts[i - 1]
        t = (target - a0) / (a - a0)
        return spend / math.exp(math.log(c0) + t * (math.log(c) - math.log(c0)))
    return None


# -- fits and shares ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """accuracy ≈ intercept + slope × ln(compute)."""

    strategy: str
    axis: str
    slope: float
    intercept: float
    r2: float | None
    """None when accuracy does not vary (R² is undefined)."""
    n_points: int


def scaling_fit(points: Sequence[Point], axis: str = "tokens") -> list[Fit]:
    """Per strategy with at least two budgets: least squares of accuracy on ln(mean compute)."""
    fits = []
    for strategy in sorted({p.strategy for p in points}):
        pts = [p for p in points if p.strategy == strategy and p.cost[axis] > 0 and math.isfinite(p.accuracy)]
        if len({p.cost[axis] for p in pts}) < 2:
            continue
        x = np.log([p.cost[axis] for p in pts])
        y = np.array([p.accuracy for p in pts])
        slope, intercept = np.polyfit(x, y, 1)
        ss_tot = float(((y - y.mean()) ** 2).sum())
        ss_res = float(((y - (intercept + slope * x)) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else None
        fits.append(Fit(strategy, axis, float(slope), float(intercept), r2, len(pts)))
    return fits


def truncation_share(samples: Sequence[SampleRow], results: Sequence[ResultRow]) -> dict[str, float]:
    """Share of rows that hit max_tokens (finish_reason "length"), per pool ("pool:cot") and per strategy."""
    groups: dict[str, list[bool]] = {}
    for s in samples:
        groups.setdefault(f"pool:{s.pool}", []).append(s.finish_reason == "length")
    for r in results:
        groups.setdefault(r.strategy, []).append(r.finish_reason == "length")
    every = [x for g in groups.values() for x in g]
    out = {name: float(np.mean(flags)) for name, flags in sorted(groups.items())}
    if every:
        out["all"] = float(np.mean(every))
    return out
