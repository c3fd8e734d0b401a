"""One run's analysis and its headline figures: rows + config in, everything the report shows out.

`analyze` glues outcomes.py (rows -> per-problem outcomes) to curves.py (CIs, bins, the compute-optimal
policy, fits); `headline` reduces that to the figures of summary.json. Both are pure, so a test recomputes
every number from synthetic rows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ponder.experiments import curves, gains, policy
from ponder.experiments.estimators import SUBSET_DRAWS
from ponder.experiments.outcomes import (
    AXES,
    CostModel,
    Outcome,
    StoppingPoint,
    pool_data,
    pool_outcomes,
    pool_strategies,
    pools_by_problem,
    problem_order,
    result_outcomes,
)
from ponder.experiments.records import ProblemRow, ResultRow, SampleRow

GREEDY = "cot"
MAJORITY = "self_consistency"
BEST_OF_N = "best_of_n"
ADAPTIVE = "adaptive_consistency"


@dataclass(frozen=True)
class Analysis:
    """Everything the report draws and tabulates."""

    pids: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    points: tuple[curves.Point, ...]
    bins: Mapping[str, np.ndarray]
    """"oracle" / "predicted" -> [P] bin per problem (1 easiest .. 5 hardest, 0 no data)."""
    frontiers: Mapping[str, tuple[curves.FrontierPoint, ...]]
    """Bin kind -> the two-fold compute-optimal policy on the token axis."""
    fits: tuple[curves.Fit, ...]
    truncation: Mapping[str, float]
    notes: tuple[str, ...] = field(default_factory=tuple)
    probe: policy.ProbeData | None = None
    """The deployable policy's probe bins and cost (None without a probe pool)."""
    probe_spec: policy.Probe | None = None
    """Which pool the probe reads, and how many samples."""
    policy: Mapping[str, tuple[policy.Comparison, policy.Ratio]] = field(default_factory=dict)
    """Baseline name -> the cross-validated policy against it, and the compute ratio."""

    def outcome(self, strategy: str, budget: int | None = None) -> Outcome | None:
        """The outcome of `strategy` at `budget` (default: its largest budget)."""
        mine = [o for o in self.outcomes if o.strategy == strategy and np.isfinite(o.correct).any()]
        if budget is not None:
            mine = [o for o in mine if o.budget == budget]
        return max(mine, key=lambda o: o.budget) if mine else None


def analyze(problems: Sequence[ProblemRow], samples: Sequence[SampleRow], results: Sequence[ResultRow],
            config: Mapping[str, Any], stopping_point: StoppingPoint | None = None,
            resamples: int = 1000) -> Analysis:
    """Derive every curve of a run from its rows (no generation)."""
    seed = int(config.get("seed", 0) or 0)
    cost_model = CostModel.from_config(config)
    if config.get("machine_seconds"):
        cost_model = cost_model.amortised(float(config["machine_seconds"]), [*samples, *results])
    pids = problem_order(problems, samples, results)
    budgets = config.get("budgets") or None
    specs = pool_strategies(stopping_point)
    outcomes = pool_outcomes(pids, samples, cost_model, budgets, seed, specs)
    outcomes += result_outcomes(pids, results, cost_model)
    points = curves.curve_points(outcomes, seed, resamples)
    bins = {"oracle": curves.oracle_bins(pids, samples), "predicted": curves.predicted_bins(pids, samples)}
    frontiers = {kind: tuple(curves.compute_optimal(outcomes, b, "tokens", seed=seed)) for kind, b in bins.items()}
    fits = tuple(f for axis in AXES for f in curves.scaling_fit(points, axis))
    analysis = Analysis(tuple(pids), tuple(outcomes), tuple(points), bins, frontiers, fits,
                        curves.truncation_share(samples, results), tuple(_notes(outcomes, cost_model)))
    return _with_policy(analysis, samples, cost_model, seed)


def _with_policy(a: Analysis, samples: Sequence[SampleRow], cost_model: CostModel, seed: int,
                 probe: policy.Probe | None = None) -> Analysis:
    """The cross-validated deployable policy against the best fixed strategy, majority and best-of-N."""
    probe = probe or policy.Probe(curves.chain_pool(samples))
    per_sample = {pid: pool_data(rows, cost_model).policy_cost[:, 0]
                  for pid, rows in pools_by_problem(samples, probe.pool).items()}
    if not per_sample:
        return a
    pd = policy.probe_data(a.pids, samples, probe, per_sample)
    baselines: dict[str, Outcome | None] = {"best_fixed": None, "majority": a.outcome(MAJORITY),
                                            "best_of_n": a.outcome(BEST_OF_N)}
    out = {}
    for name, base in baselines.items():
        if name != "best_fixed" and base is None:
            continue
        c = policy.compare(a.outcomes, pd, "tokens", base, seed=seed)
        out[name] = (c, policy.ratio(c, seed=seed))
    return dataclasses.replace(a, probe=pd, probe_spec=probe, policy=out)


def _notes(outcomes: Sequence[Outcome], cost_model: CostModel) -> list[str]:
    notes = []
    sampled = sorted({o.label for o in outcomes if not o.exact})
    if sampled:
        notes.append(f"estimated from {SUBSET_DRAWS} fixed-seed random k-subsets (the rest enumerate every subset): "
                     + ", ".join(sampled))
    if cost_model.seconds_per_token is not None:
        notes.append(f"seconds and local dollars: the sweep's wall time shared out by generated tokens "
                     f"({cost_model.seconds_per_token * 1000:.1f} ms of machine time per token)")
    if cost_model.info:
        notes.append(f"FLOPs from ponder.compute: 2 x {cost_model.info.n_params:,} parameters per processed token "
                     "(prefill + decode) plus attention over the context (Kaplan et al. 2020)")
    else:
        notes.append("FLOPs unknown: the run's config has no model_info.n_params")
    return notes


def headline(a: Analysis) -> dict[str, Any]:
    """The figures of summary.json (null where the run lacks what a figure needs)."""
    greedy = a.outcome(GREEDY, min((o.budget for o in a.outcomes if o.strategy == GREEDY), default=None))
    deployable = [o for o in a.outcomes if o.deployable and np.isfinite(o.correct).any()]
    best = max(deployable, key=lambda o: (o.accuracy(), -o.mean_cost("tokens"), o.label), default=None)
    majority, bon, adaptive = a.outcome(MAJORITY), a.outcome(BEST_OF_N), None
    if majority is not None:
        adaptive = a.outcome(ADAPTIVE, majority.budget)
    out: dict[str, Any] = {
        "n_problems": len(a.pids),
        "greedy_accuracy": greedy.accuracy() if greedy else None,
        "best_strategy": best.strategy if best else None,
        "best_budget": best.budget if best else None,
        "best_accuracy": best.accuracy() if best else None,
        "best_tokens_ratio_vs_greedy": _ratio(best, greedy, "tokens"),
        "gain_over_greedy": _gain_over_greedy(a, greedy),
        "adaptive_token_savings_vs_majority": (1.0 - r) if (r := _ratio(adaptive, majority, "tokens")) is not None
        else None,
        "compute_optimal_vs_best_fixed": _policy_figure(a, "best_fixed"),
        "compute_optimal_vs_majority": _policy_figure(a, "majority"),
        "compute_optimal_vs_best_of_n": _policy_figure(a, "best_of_n"),
        "oracle_upper_bound_efficiency_vs_majority": _efficiency(a, "oracle", majority),
        "oracle_upper_bound_efficiency_vs_best_of_n": _efficiency(a, "oracle", bon),
        "usd_per_solved_problem": _usd_per_solved(best),
        "maj_at_k": _by_budget(a, MAJORITY),
        "best_of_n_at_k": _by_budget(a, BEST_OF_N),
        "pass_at_k": _by_budget(a, "pass_at_k"),
        "majority_largest_budget": majority.budget if majority else None,
        "best_of_n_largest_budget": bon.budget if bon else None,
        "truncation_share": a.truncation.get("all"),
        "scaling_fit_tokens": {f.strategy: {"slope": f.slope, "intercept": f.intercept, "r2": f.r2}
                               for f in a.fits if f.axis == "tokens"},
    }
    return {k: _clean(v) for k, v in out.items()}


GAIN_TOKEN_CAP = 8.0
"""The headline gain over greedy is the best deployable strategy within this many times greedy's tokens."""


def _gain_over_greedy(a: Analysis, greedy: Outcome | None) -> dict[str, Any] | None:
    """The best deployable strategy within GAIN_TOKEN_CAP x greedy's tokens, its paired gain and interval."""
    if greedy is None:
        return None
    candidates = gains.gains_over(greedy, a.outcomes, "tokens", GAIN_TOKEN_CAP)
    top = gains.best(candidates)
    if top is None:
        return None
    return {**top.to_dict(), "candidates": len(candidates),
            "text": f"{top.label}: {100 * top.gain:+.1f} points over greedy (paired 95% CI "
                    f"{100 * top.gain_ci[0]:+.1f} to {100 * top.gain_ci[1]:+.1f}) at {top.cost_ratio:.2f}x its "
                    f"tokens, best of {len(candidates)} within {GAIN_TOKEN_CAP:g}x"}


def _policy_figure(a: Analysis, name: str) -> dict[str, Any] | None:
    """The deployable policy's held-out compute ratio against a baseline: a number only where it is measurable."""
    if name not in a.policy:
        return None
    c, r = a.policy[name]
    return {"ratio": r.value if r.measurable else None, "ci_low": r.ci_low, "ci_high": r.ci_high,
            "measurable": r.measurable, "text": r.text(), "accuracy_gap": r.accuracy_gap,
            "accuracy_gap_ci": list(r.accuracy_gap_ci), "folds_matched": c.matched_folds, "folds": c.folds,
            "baseline": c.baseline}


def _efficiency(a: Analysis, kind: str, baseline: Outcome | None) -> float | None:
    return curves.efficiency_ratio(a.frontiers.get(kind, ()), baseline) if baseline else None


def _ratio(num: Outcome | None, den: Outcome | None, axis: str) -> float | None:
    if num is None or den is None:
        return None
    d = den.mean_cost(axis)
    return num.mean_cost(axis) / d if d > 0 else None


def _usd_per_solved(o: Outcome | None) -> float | None:
    """Dollars spent over all problems / expected number solved."""
    if o is None:
        return None
    solved = float(np.nansum(o.correct))
    return float(np.nansum(o.cost["usd"])) / solved if solved > 0 else None


def _by_budget(a: Analysis, strategy: str) -> dict[str, float]:
    return {str(o.budget): o.accuracy() for o in sorted(a.outcomes, key=lambda o: o.budget)
            if o.strategy == strategy}


def _clean(v: Any) -> Any:
    """JSON-safe: NaN and inf become null."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
