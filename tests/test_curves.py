"""Outcomes from rows, difficulty bins, the two-fold compute-optimal policy, efficiency ratios and fits."""

import itertools
import math

import numpy as np
import pytest

from ponder.experiments import curves
from ponder.experiments.outcomes import AXES, CostModel, Outcome, pool_outcomes, pool_strategies, result_outcomes
from ponder.experiments.records import SampleRow
from ponder.types import Usage
from synthetic_rows import CONFIG, make_rows, stop_after_two_agree


def outcome(name, budget, correct, tokens, deployable=True):
    correct = np.asarray(correct, dtype=float)
    cost = {a: np.full(len(correct), float(tokens)) for a in AXES}
    return Outcome(name, budget, correct, cost, deployable)


# -- outcomes from rows ----------------------------------------------------------------------------------------
def test_pool_outcome_tokens_are_k_times_the_mean_and_best_of_n_pays_the_verifier():
    problems, samples, _ = make_rows(4, 8)
    pids = [p.problem_id for p in problems]
    outs = pool_outcomes(pids, samples, CostModel.from_config(CONFIG), [1, 4, 8], 0,
                         pool_strategies(stop_after_two_agree))
    by = {(o.strategy, o.budget): o for o in outs}
    pool0 = [s for s in samples if s.problem_id == "p00"]
    policy = np.mean([s.usage_by_role["policy"].completion_tokens for s in pool0])
    verifier = np.mean([s.usage_by_role["verifier"].completion_tokens for s in pool0])
    assert by[("self_consistency", 4)].cost["tokens"][0] == pytest.approx(4 * policy)
    assert by[("best_of_n", 4)].cost["tokens"][0] == pytest.approx(4 * (policy + verifier))
    assert by[("pass_at_k", 8)].deployable is False
    # maj@1 is the single-sample pass rate; maj@N votes over the whole pool.
    assert by[("self_consistency", 1)].correct[0] == pytest.approx(np.mean([s.correct for s in pool0]))


def test_adaptive_consistency_is_simulated_in_pool_order():
    rows = [SampleRow("q", "cot", i, i, "", a, a == "5", None, "stop", {"policy": Usage(completion_tokens=t)})
            for i, (a, t) in enumerate([("5", 10), ("3", 20), ("5", 30), ("3", 40)])]
    outs = pool_outcomes(["q"], rows, CostModel(), [4], 0, pool_strategies(stop_after_two_agree))
    adaptive = next(o for o in outs if o.strategy == "adaptive_consistency")
    # The rule stops at the third sample ("5" seen twice): tokens 10 + 20 + 30, answer "5".
    assert adaptive.cost["tokens"][0] == 60
    assert adaptive.correct[0] == 1.0
    assert not any(o.strategy == "best_of_n" for o in outs)  # no scores in this pool


def test_result_outcomes_align_problems_and_leave_gaps_nan():
    _, _, results = make_rows(3, 2)
    outs = result_outcomes(["p00", "p01", "p02", "extra"], results, CostModel())
    cot = next(o for o in outs if o.strategy == "cot")
    assert np.isnan(cot.correct[3]) and np.isfinite(cot.correct[:3]).all()
    assert cot.cost["tokens"][0] == 90


# -- difficulty ------------------------------------------------------------------------------------------------
def test_difficulty_bins_partition_problems_easiest_first():
    problems, samples, _ = make_rows(23, 8)
    pids = [p.problem_id for p in problems] + ["no_pool"]
    bins = curves.oracle_bins(pids, samples)
    assert bins[-1] == 0  # no pool, no bin
    sizes = [int((bins == b).sum()) for b in range(1, 6)]
    assert sum(sizes) == 23 and max(sizes) - min(sizes) <= 1
    rates = curves.pass_rates(samples)
    mean_rate = [np.mean([rates[p] for p, b in zip(pids, bins, strict=False) if b == k]) for k in range(1, 6)]
    assert all(a >= b for a, b in itertools.pairwise(mean_rate))


def test_predicted_difficulty_uses_agreement_not_answers():
    def pool(pid, answers):
        return [SampleRow(pid, "cot", i, i, "", a, False, None, "stop") for i, a in enumerate(answers)]
    samples = pool("agree", ["1", "1", "1", "1", "9"]) + pool("split", ["1", "2", "3", None, "1"])
    assert curves.agreement(samples, first=4) == {"agree": 1.0, "split": 0.25}
    bins = curves.predicted_bins(["split", "agree"], samples, first=4, n_bins=2)
    assert bins.tolist() == [2, 1]


# -- compute-optimal ---------------------------------------------------------------------------------------------
def test_two_fold_picks_the_best_strategy_per_bin_within_the_level():
    # Bin 1: "cheap" is right on every problem; bin 2: only "dear" is. "dear" costs 100, "cheap" 10.
    bins = np.array([1] * 6 + [2] * 6)
    cheap = outcome("cheap", 1, [1] * 6 + [0] * 6, 10)
    dear = outcome("dear", 8, [0] * 6 + [1] * 6, 100)
    oracle = outcome("pass_at_k", 8, [1] * 12, 1, deployable=False)
    low, high = curves.compute_optimal([cheap, dear, oracle], bins, levels=[50, 200])
    assert low.choices == ("cheap@1 / cheap@1", "cheap@1 / cheap@1")  # dear is over the level
    assert low.accuracy == pytest.approx(0.5) and low.cost == pytest.approx(10)
    assert high.choices == ("cheap@1 / cheap@1", "dear@8 / dear@8")
    assert high.accuracy == pytest.approx(1.0) and high.cost == pytest.approx(55)


def test_two_fold_scores_on_the_held_out_half():
    # "lucky" is right exactly on half A, "steady" right on 3/4 of both halves: training on A picks lucky,
    # which then scores 0 on B; training on B picks steady.
    in_a = curves.halves(8, seed=0)
    lucky = outcome("lucky", 1, in_a.astype(float), 10)
    steady_correct = np.zeros(8)
    steady_correct[np.flatnonzero(in_a)[:3]] = 1
    steady_correct[np.flatnonzero(~in_a)[:3]] = 1
    steady = outcome("steady", 2, steady_correct, 10)
    (point,) = curves.compute_optimal([lucky, steady], np.ones(8, dtype=int), levels=[10], seed=0)
    assert point.choices == ("lucky@1 / steady@2",)
    assert point.accuracy == pytest.approx((0 + 3) / 8)  # lucky on B scores 0; steady on A scores 3


def test_no_frontier_point_below_the_cheapest_strategy():
    bins = np.array([1, 1, 1, 1])
    assert curves.compute_optimal([outcome("a", 1, [1, 0, 1, 0], 10)], bins, levels=[5]) == []


def test_efficiency_ratio_interpolates_on_log_compute():
    frontier = [curves.FrontierPoint(10, 0.5, 10.0, ()), curves.FrontierPoint(100, 0.7, 100.0, ())]
    baseline = outcome("self_consistency", 16, [1, 1, 1, 0, 0], 400)  # accuracy 0.6 at 400 tokens
    # 0.6 is halfway from 0.5 to 0.7, so on log-compute the crossing is at sqrt(10 * 100).
    assert curves.efficiency_ratio(frontier, baseline) == pytest.approx(400 / math.sqrt(1000))
    better = outcome("best_of_n", 16, [1, 1, 1, 1, 0], 400)  # 0.8: never matched
    assert curves.efficiency_ratio(frontier, better) is None
    easy = outcome("self_consistency", 16, [1, 0, 0, 0, 0], 400)  # matched by the first point
    assert curves.efficiency_ratio(frontier, easy) == pytest.approx(40)


# -- fits and shares ---------------------------------------------------------------------------------------------
def test_scaling_fit_recovers_slope_and_r2():
    pts = [curves.Point("s", k, 0.1 + 0.05 * math.log(100 * k), 0, 1, dict.fromkeys(AXES, 100.0 * k), 10, True, True)
           for k in (1, 2, 4, 8)]
    pts.append(curves.Point("greedy", 1, 0.3, 0, 1, dict.fromkeys(AXES, 50.0), 10, True, True))
    (fit,) = curves.scaling_fit(pts, "tokens")
    assert fit.strategy == "s" and fit.n_points == 4
    assert fit.slope == pytest.approx(0.05) and fit.intercept == pytest.approx(0.1) and fit.r2 == pytest.approx(1)


def test_curve_points_ci_brackets_accuracy():
    (p,) = curves.curve_points([outcome("s", 4, [1, 0, 1, 1, np.nan, 0, 1, 1], 7)], seed=0, resamples=500)
    assert p.n_problems == 7 and p.accuracy == pytest.approx(5 / 7)
    assert p.ci_low < p.accuracy < p.ci_high and p.cost["tokens"] == 7


def test_truncation_share_counts_length_finishes():
    _problems, samples, results = make_rows(5, 4)
    shares = curves.truncation_share(samples, results)
    expected = np.mean([s.finish_reason == "length" for s in samples])
    assert shares["pool:cot"] == pytest.approx(expected)
    assert shares["cot"] == 0.0
    assert 0 < shares["all"] < shares["pool:cot"] or expected == 0
