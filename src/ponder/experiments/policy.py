"""The deployable compute-optimal policy: a probe, difficulty bins from it, and a choice per bin, cross-validated.

Snell et al. (2024) pick a strategy per question difficulty. Measured honestly, the policy may only see what it
could see at run time: the first `samples` samples of a probe pool (their agreement: the share that gives the
modal answer, needing no reference), whose compute is charged to the policy. Bins are fixed agreement ranges, so
a deployed policy bins a new question the same way. Choices are fitted on training problems only, and so is the
compute level: the cheapest level whose *training* accuracy reaches the best fixed strategy's *training*
accuracy. The held-out problems then score both, repeated over `repeats` random 2-fold splits, and the ratio of
compute carries a bootstrap interval over problems. Where it cannot be told apart from 1, or the accuracies are
degenerate, the figure is "not measurable", never a number. Oracle bins (from the graded pool) stay in curves.py
as an upper bound.

What it ignores: how outcomes are estimated (outcomes.py) and how the report draws them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ponder.experiments.curves import choose, compute_levels
from ponder.experiments.outcomes import Outcome, pools_by_problem
from ponder.experiments.records import SampleRow
from ponder.strategies.compute_optimal import AGREEMENT_EDGES, POLICY_KIND, agreement, bin_of
from ponder.strategies.pooling import split_pool


@dataclass(frozen=True)
class Probe:
    """What the policy looks at before it chooses: the first `samples` samples of pool `pool`."""

    pool: str = "cot"
    samples: int = 2

    def agreement(self, answers: Sequence[str | None]) -> float:
        """Share of the probe's samples that give the modal answer (the deployed strategy's own rule)."""
        return agreement(list(answers[: self.samples]))


@dataclass(frozen=True)
class ProbeData:
    """[P] per problem: its bin (0 = no probe data) and the probe's cost on the policy's axis."""

    bins: np.ndarray
    cost: np.ndarray


def probe_data(pids: Sequence[str], samples: Sequence[SampleRow], probe: Probe, axis_cost: Mapping[str, Sequence[float]]
               ) -> ProbeData:
    """Bins and probe cost per problem; `axis_cost[pid]` is the per-sample cost of that problem's probe pool."""
    pools = pools_by_problem(samples, probe.pool)
    bins = np.zeros(len(pids), dtype=int)
    cost = np.full(len(pids), math.nan)
    for i, pid in enumerate(pids):
        rows = pools.get(pid, [])
        if len(rows) >= probe.samples and pid in axis_cost:
            bins[i] = bin_of(probe.agreement([r.answer for r in rows]))
            cost[i] = float(np.sum(list(axis_cost[pid])[: probe.samples]))
    return ProbeData(bins, cost)


@dataclass(frozen=True)
class Fit:
    """A policy fitted on some problems: the choice per bin at one compute level."""

    level: float
    choices: Mapping[int, Outcome]
    """Bin -> the fixed (strategy, budget) it runs."""

    def apply(self, bins: np.ndarray, axis: str, probe_cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[P] correctness and cost (probe included) where a choice exists; NaN elsewhere."""
        correct = np.full(len(bins), math.nan)
        cost = np.full(len(bins), math.nan)
        for b, o in self.choices.items():
            m = bins == b
            correct[m], cost[m] = o.correct[m], o.cost[axis][m] + probe_cost[m]
        return correct, cost


def fit(outcomes: Sequence[Outcome], probe: ProbeData, train: np.ndarray, level: float, axis: str) -> Fit | None:
    """Per bin, the outcome best on the training problems of that bin within `level` (probe cost included)."""
    choices = {}
    for b in sorted({int(x) for x in probe.bins[train].tolist() if x > 0}):
        mask = train & (probe.bins == b)
        o = choose(outcomes, mask, level - float(np.nanmean(probe.cost[mask])), axis)
        if o is None:
            return None
        choices[b] = o
    return Fit(level, choices)


def best_fixed(outcomes: Sequence[Outcome], mask: np.ndarray, axis: str) -> Outcome | None:
    """The most accurate fixed strategy on `mask` (the cheaper on ties): the top of the fixed Pareto frontier."""
    return choose(outcomes, mask, math.inf, axis)


def _matching_fit(outcomes: Sequence[Outcome], probe: ProbeData, train: np.ndarray, target: float, axis: str,
                  levels: Sequence[float]) -> Fit | None:
    """The cheapest fitted policy whose training accuracy reaches `target` (all decided on training problems)."""
    for level in sorted(levels):
        f = fit(outcomes, probe, train, float(level), axis)
        if f is None:
            continue
        correct, _ = f.apply(probe.bins, axis, probe.cost)
        if np.isfinite(correct[train]).any() and float(np.nanmean(correct[train])) + 1e-12 >= target:
            return f
    return None


def _candidates(outcomes: Sequence[Outcome], probe: ProbeData, axis: str
                ) -> tuple[list[Outcome], np.ndarray, list[float]]:
    """The fixed deployable strategies, the problems every one of them and the probe has data for (a run still in
    progress has gaps), and the compute levels to try (the top one raised by the probe's own cost)."""
    fixed = [o for o in outcomes if o.deployable and np.isfinite(o.correct).any()]
    known = probe.bins > 0
    for o in fixed:
        known &= np.isfinite(o.correct) & np.isfinite(o.cost[axis])
    grid = compute_levels(fixed, axis, 24)
    extra = float(np.nanmax(probe.cost)) if np.isfinite(probe.cost).any() else 0.0
    return fixed, known, [*grid[:-1], *(grid[-1:] + extra)]


@dataclass(frozen=True)
class Comparison:
    """The held-out policy against one fixed baseline, per problem (averaged over the repeated splits)."""

    baseline: str
    """The baseline's label, or "best fixed" when it was chosen per training fold."""
    policy_correct: np.ndarray
    policy_cost: np.ndarray
    baseline_correct: np.ndarray
    baseline_cost: np.ndarray
    matched_folds: int
    folds: int
    chosen: tuple[str, ...] = field(default_factory=tuple)
    """What the training folds chose, e.g. "bin 1: cot@1; bin 2: hybrid_consistency@4"."""


def compare(outcomes: Sequence[Outcome], probe: ProbeData, axis: str = "tokens", baseline: Outcome | None = None,
            repeats: int = 5, seed: int = 0) -> Comparison:
    """Repeated 2-fold cross-validation of the policy against `baseline` (default: the best fixed strategy of each
    training fold). Each problem is held out once per repeat; its figures are averaged over repeats."""
    fixed, known, levels = _candidates(outcomes, probe, axis)
    n = len(probe.bins)
    sums = np.zeros((4, n))
    held = np.zeros(n)
    matched = folds = 0
    chosen: list[str] = []
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        order = rng.permutation(np.flatnonzero(known))
        for test_idx in (order[: len(order) // 2], order[len(order) // 2:]):
            test = np.zeros(n, dtype=bool)
            test[test_idx] = True
            train = known & ~test
            folds += 1
            base = baseline or best_fixed(fixed, train, axis)
            if base is None or not test.any():
                continue
            f = _matching_fit(fixed, probe, train, base.accuracy(train), axis, levels)
            if f is None:
                continue
            matched += 1
            chosen.append("; ".join(f"bin {b}: {o.label}" for b, o in sorted(f.choices.items())))
            correct, cost = f.apply(probe.bins, axis, probe.cost)
            ok = test & np.isfinite(correct)  # a test problem in a bin the training half never saw: not scored
            sums[:, ok] += np.vstack([correct[ok], cost[ok], base.correct[ok], base.cost[axis][ok]])
            held[ok] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(held > 0, sums / np.maximum(held, 1), math.nan)
    return Comparison(baseline.label if baseline else "best fixed", *mean, matched, folds, tuple(chosen))


@dataclass(frozen=True)
class Ratio:
    """Baseline compute / policy compute on the held-out problems, with a bootstrap interval over problems."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    accuracy_gap: float | None
    """Policy accuracy - baseline accuracy (held out)."""
    accuracy_gap_ci: tuple[float | None, float | None]
    measurable: bool
    reason: str
    """Why it is not measurable ("" when it is)."""

    def text(self) -> str:
        if not self.measurable:
            return f"not measurable ({self.reason})"
        lo, hi = self.accuracy_gap_ci
        return (f"{self.value:.2f}x less compute (95% CI {self.ci_low:.2f}-{self.ci_high:.2f}) at "
                f"{100 * (self.accuracy_gap or 0.0):+.1f} points of held-out accuracy "
                f"({100 * (lo or 0.0):+.1f} to {100 * (hi or 0.0):+.1f})")


def ratio(c: Comparison, resamples: int = 2000, seed: int = 0) -> Ratio:
    """The compute ratio of a comparison and whether it can be told apart from 1."""
    ok = np.isfinite(c.policy_cost) & np.isfinite(c.baseline_cost)
    none = Ratio(None, None, None, None, (None, None), False, "")
    if c.matched_folds < c.folds:
        return _why(none, f"the policy never reached the baseline's training accuracy in "
                          f"{c.folds - c.matched_folds} of {c.folds} folds")
    if ok.sum() < 2:
        return _why(none, "fewer than two held-out problems")
    pc, pk, bc, bk = (x[ok] for x in (c.policy_correct, c.policy_cost, c.baseline_correct, c.baseline_cost))
    if np.all(bc == bc[0]) and np.all(pc == pc[0]) and bc[0] in (0.0, 1.0):
        return _why(none, "every accuracy is 0 or every accuracy is 1")
    if not pk.sum() > 0:
        return _why(none, "the policy spent no compute")
    idx = np.random.default_rng(seed).integers(0, len(pk), size=(resamples, len(pk)))  # [R, P]
    ratios = bk[idx].sum(axis=1) / np.maximum(pk[idx].sum(axis=1), 1e-12)
    gaps = pc[idx].mean(axis=1) - bc[idx].mean(axis=1)
    lo, hi = (float(x) for x in np.quantile(ratios, [0.025, 0.975]))
    glo, ghi = (float(x) for x in np.quantile(gaps, [0.025, 0.975]))
    out = Ratio(float(bk.sum() / pk.sum()), lo, hi, float(pc.mean() - bc.mean()), (glo, ghi), True, "")
    if lo <= 1.0 <= hi:
        return _why(out, f"the interval {lo:.2f}-{hi:.2f} includes 1")
    if ghi < 0:
        return _why(out, f"the policy is less accurate held out (gap {glo:+.3f} to {ghi:+.3f})")
    return out


def _why(r: Ratio, reason: str) -> Ratio:
    return Ratio(r.value, r.ci_low, r.ci_high, r.accuracy_gap, r.accuracy_gap_ci, False, reason)


# -- the policy as a file (read by ponder.strategies.compute_optimal) ---------------------------------------------


def deployable(outcomes: Sequence[Outcome], probe: ProbeData, axis: str = "tokens") -> Fit | None:
    """The policy fitted on every problem: the cheapest that matches the best fixed strategy's accuracy."""
    fixed, known, levels = _candidates(outcomes, probe, axis)
    top = best_fixed(fixed, known, axis)
    if top is None:
        return None
    return _matching_fit(fixed, probe, known, top.accuracy(known), axis, levels)


def policy_document(f: Fit, probe: Probe, owner_of: Callable[[str], tuple[str, Mapping[str, object]] | None],
                    config: Mapping[str, object], held_out: Mapping[str, object] | None) -> dict[str, object]:
    """The JSON a server applies: the probe, the bin edges, and per bin the strategy (registry name, params,
    budget) to run. `owner_of` maps a curve's label to its strategy and params (best_of_n_max is best_of_n with
    mode=max; self_consistency[T=0.3] is self_consistency at temperature 0.3)."""
    choices = {}
    for b, o in sorted(f.choices.items()):
        strategy, params = owner_of(o.strategy) or (o.strategy, {})
        choices[str(b)] = {"strategy": strategy, "params": dict(params), "budget": o.budget, "label": o.label}
    sampling = config.get("sampling") or {}
    tagged = split_pool(probe.pool)[1]
    temperature = tagged if tagged is not None else (
        sampling.get("temperature", config.get("temperature")) if isinstance(sampling, Mapping)
        else config.get("temperature"))
    return {"kind": POLICY_KIND, "version": 1, "model": config.get("model_name") or config.get("model"),
            "model_sha256": config.get("model_sha256"), "task": config.get("task"),
            "probe": {"pool": probe.pool, "samples": probe.samples, "temperature": temperature,
                      "max_tokens": config.get("max_tokens")},
            "bins": {"by": "agreement of the probe's samples", "edges": list(AGREEMENT_EDGES)},
            "choices": choices, "level": f.level, "held_out": dict(held_out or {})}
