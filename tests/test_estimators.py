"""Pool estimators against brute force and hand-counted cases."""

import math
from itertools import combinations

import numpy as np
import pytest

from ponder.experiments.estimators import (
    PoolView,
    bootstrap_ci,
    coverage,
    expected_accuracy,
    k_subsets,
    pass_at_k,
    samples_of,
)
from ponder.strategies.pooling import majority, scored

vote_majority, vote_weighted, vote_max = majority, scored("weighted"), scored("max")


def expected_vote_accuracy(pool, k, select, seed=0, key=""):
    return expected_accuracy([pool], k, select, seed=seed, key=key)[0]


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 1, 1), (5, 2, 3), (10, 3, 4), (8, 8, 2), (8, 1, 8)])
def test_pass_at_k_matches_chen_formula_and_enumeration(n, c, k):
    chen = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    correct = [i < c for i in range(n)]
    brute = sum(any(correct[i] for i in s) for s in combinations(range(n), k)) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(chen)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


def test_expected_majority_with_ties_goes_to_earliest_sample():
    # Counted by hand: k=2 -> {ab: a, ab: a, ac: a, bb: b, bc: b, bc: b} = 3/6; k=3 -> {abb: b, abc: a,
    # abc: a, bbc: b} = 2/4; k=4 -> b.
    pool = PoolView(("a", "b", "b", "c"), (False, True, True, False))
    assert expected_vote_accuracy(pool, 1, vote_majority) == pytest.approx(0.5)
    assert expected_vote_accuracy(pool, 2, vote_majority) == pytest.approx(0.5)
    assert expected_vote_accuracy(pool, 3, vote_majority) == pytest.approx(0.5)
    assert expected_vote_accuracy(pool, 4, vote_majority) == pytest.approx(1.0)


def test_majority_ignores_missing_answers():
    pool = PoolView((None, None, "7"), (False, False, True))
    # Any subset holding sample 2 answers "7"; the all-None subset answers nothing.
    assert expected_vote_accuracy(pool, 2, vote_majority) == pytest.approx(2 / 3)
    assert expected_vote_accuracy(PoolView((None, None), (False, False)), 2, vote_majority) == 0.0


def test_weighted_and_max_best_of_n_by_hand():
    pool = PoolView(("a", "b", "b"), (False, True, True), scores=(0.9, 0.5, 0.5))
    # k=2: {a,b}: a (0.9 > 0.5) twice, {b,b}: b -> 1/3. k=3: b sums 1.0 > 0.9 -> right; max picks a -> wrong.
    assert expected_vote_accuracy(pool, 2, vote_weighted) == pytest.approx(1 / 3)
    assert expected_vote_accuracy(pool, 3, vote_weighted) == pytest.approx(1.0)
    assert expected_vote_accuracy(pool, 3, vote_max) == pytest.approx(0.0)
    assert expected_vote_accuracy(pool, 1, vote_max) == pytest.approx(2 / 3)


def test_sampled_subsets_are_deterministic_and_close_to_exact():
    rng = np.random.default_rng(3)
    answers = tuple(str(x) for x in rng.integers(0, 4, size=16))
    pool = PoolView(answers, tuple(a == "1" for a in answers))
    assert math.comb(16, 8) > 5000  # so the default path samples subsets
    first = expected_vote_accuracy(pool, 8, vote_majority, seed=7, key="p1")
    again = expected_vote_accuracy(pool, 8, vote_majority, seed=7, key="p1")
    assert first == again
    exact_rows = k_subsets(16, 8, max_exact=10**6)
    assert len(exact_rows) == math.comb(16, 8)
    exact = np.mean([
        majority(samples_of(pool, [int(i) for i in r])) == "1" for r in exact_rows
    ])
    assert first == pytest.approx(exact, abs=0.04)


def test_k_subsets_rows_are_sorted_distinct_indices():
    rows = k_subsets(20, 6, seed=1)
    assert rows.shape == (2000, 6)
    assert (np.diff(rows, axis=1) > 0).all()
    assert rows.min() >= 0 and rows.max() < 20


def test_coverage_is_pass_at_k_of_the_pool():
    pool = PoolView(("1", "2", "3", "1"), (True, False, False, True))
    assert coverage(pool, 2) == pytest.approx(1 - math.comb(2, 2) / math.comb(4, 2))


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 1, np.nan], dtype=float)
    lo, hi = bootstrap_ci(values, seed=0)
    assert (lo, hi) == bootstrap_ci(values, seed=0)
    assert lo < np.nanmean(values) < hi
    assert lo >= 0.0 and hi <= 1.0
    more = np.tile(values, 20)  # same mean, 20x the problems: a much narrower interval
    lo20, hi20 = bootstrap_ci(more, seed=0)
    assert hi20 - lo20 < (hi - lo) / 2


def test_a_bootstrap_of_the_median_ignores_an_outlier_that_drags_the_mean():
    values = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 10.0]  # one run hit by a stall
    lo, hi = bootstrap_ci(values, seed=0, statistic=np.median)
    assert 0.98 <= lo <= 1.0 <= hi <= 1.02
    _, mean_hi = bootstrap_ci(values, seed=0)
    assert mean_hi > 2.0  # the mean's interval is dragged up by the outlier; the median's is not


def test_a_tied_majority_goes_to_the_larger_summed_logprob_as_the_strategy_breaks_it():
    # "a" and "b" tie 1-1 in every 2-subset of {a, b}; b's sample is more confident, so b wins the tie.
    pool = PoolView(("a", "b"), (False, True), mean_logprobs=(-0.9, -0.1))
    assert expected_vote_accuracy(pool, 2, vote_majority) == 1.0
    assert expected_vote_accuracy(PoolView(("a", "b"), (False, True)), 2, vote_majority) == 0.0  # earliest


def test_two_pools_are_subsampled_independently_and_voted_together():
    # cot says a (wrong) twice and b (right) once; programs say b once and c once. k=1: one of each pool.
    cot = PoolView(("a", "a", "b"), (False, False, True), mean_logprobs=(-0.5, -0.5, -0.5))
    prog = PoolView(("b", "c"), (True, False), mean_logprobs=(-0.1, -0.1))
    # pairs: (a,b) tie -> b by logprob: right (twice); (a,c) -> c: wrong (twice); (b,b): right; (b,c) -> c
    # (-0.1 > -0.5): wrong. 3 of 6.
    acc, exact = expected_accuracy([cot, prog], 1, vote_majority)
    assert exact and acc == pytest.approx(3 / 6)
    acc2, _ = expected_accuracy([cot, prog], 2, vote_majority)
    # k=2: cot subsets {aa, ab, ab} x prog {bc}: aa+bc -> a (2 votes): wrong; ab+bc -> b (2 votes): right.
    assert acc2 == pytest.approx(2 / 3)
