"""Unbiased estimators over one pool of N samples: pass@k, expected maj@k and expected best-of-N@k.

Every budget k <= N is derived from the same pool without generating again (as search-and-learn's score.py
does). pass@k has a closed form (Chen et al. 2021). Votes have ties, so their expectation over all k-subsets
is computed by enumerating the subsets when there are few (C(N, k) <= `max_exact`), else estimated from a
fixed-seed random sample of k-subsets. A subset keeps the pool order, so "ties go to the earliest sample"
means the same thing here as in the live strategy; a tied majority goes to the larger sum of mean token
log-probabilities where the pool has them, exactly as `self_consistency` breaks it.

The vote itself is not defined here: `majority_vote` and `weighted_vote` call the strategies' own functions
(`ponder.strategies.self_consistency.majority_vote`, `ponder.strategies.best_of_n.select`), so a curve and a
deployed strategy never disagree. This module owns the subset arithmetic and the bootstrap over problems.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MAX_EXACT_SUBSETS = 5000
"""Enumerate every k-subset up to this many; beyond it, sample subsets."""
SUBSET_DRAWS = 2000
"""How many random k-subsets estimate an expectation when enumerating is too costly."""


@dataclass(frozen=True)
class PoolView:
    """One problem's pool, in pool order: what a vote over any subset needs."""

    answers: tuple[str | None, ...]
    """Normalised answer of each sample (None when none was extracted)."""
    correct: tuple[bool, ...]
    """Whether each sample's answer is right."""
    scores: tuple[float, ...] | None = None
    """The verifier's score of each sample, when every sample has one."""
    mean_logprobs: tuple[float | None, ...] | None = None
    """Each sample's mean token log-probability: a tied majority goes to the larger sum, as in the strategy."""

    def __len__(self) -> int:
        return len(self.answers)


# -- pass@k -----------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021): 1 - C(n-c, k) / C(n, k), the chance that k of n samples include a correct one."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # The product form avoids huge binomials: prod_{i=n-c+1}^{n} (1 - k/i).
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# -- k-subsets --------------------------------------------------------------------------------------------
def subset_seed(seed: int, key: str, k: int) -> int:
    """A stable per-(problem, k) seed, so one problem's estimate does not depend on which others ran."""
    return (seed * 1_000_003 + zlib.crc32(key.encode()) * 131 + k) % (2**32)


def k_subsets(n: int, k: int, seed: int = 0, max_exact: int = MAX_EXACT_SUBSETS,
              draws: int = SUBSET_DRAWS) -> np.ndarray:
    """Index rows [M, k], each sorted (pool order): all C(n, k) subsets, or `draws` random ones if too many."""
    if not 0 < k <= n:
        raise ValueError(f"a k-subset needs 0 < k <= n; got n={n}, k={k}")
    if math.comb(n, k) <= max_exact:
        from itertools import combinations

        return np.array(list(combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    rng = np.random.default_rng(seed)
    rows = rng.permuted(np.tile(np.arange(n), (draws, 1)), axis=1)[:, :k]  # [draws, k]
    return np.sort(rows, axis=1)


def is_exact(n: int, k: int, max_exact: int = MAX_EXACT_SUBSETS) -> bool:
    """Whether the expectation at (n, k) is exact (every subset enumerated) rather than sampled."""
    return math.comb(n, k) <= max_exact


# -- votes: thin adaptors over the strategies' own functions -----------------------------------------------
def majority_vote(answers: Sequence[str | None], mean_logprobs: Sequence[float | None] | None = None) -> str | None:
    """The self-consistency vote (None answers do not vote; ties by summed mean log-probability, else the earliest)."""
    from ponder.strategies.self_consistency import majority_vote as vote

    return _answer_of(vote(list(answers), mean_logprobs=None if mean_logprobs is None else list(mean_logprobs)))


def weighted_vote(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
    """Weighted best-of-N: the answer whose samples' scores sum highest."""
    from ponder.strategies.best_of_n import select

    return _answer_of(select(list(answers), list(scores), "weighted"), answers)


def max_vote(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
    """Plain best-of-N: the answer of the single highest-scored sample."""
    from ponder.strategies.best_of_n import select

    return _answer_of(select(list(answers), list(scores), "max"), answers)


def _answer_of(chosen: object, answers: Sequence[str | None] | None = None) -> str | None:
    """Accept an answer, an (answer, votes) pair, or an index into `answers`."""
    if isinstance(chosen, tuple):
        chosen = chosen[0]
    if isinstance(chosen, int) and not isinstance(chosen, bool) and answers is not None:
        return answers[chosen]
    return chosen  # type: ignore[return-value]


Vote = Callable[[PoolView, tuple[int, ...]], str | None]


def vote_majority(pool: PoolView, idx: tuple[int, ...]) -> str | None:
    lps = None if pool.mean_logprobs is None else [pool.mean_logprobs[i] for i in idx]
    return majority_vote([pool.answers[i] for i in idx], lps)


def vote_weighted(pool: PoolView, idx: tuple[int, ...]) -> str | None:
    assert pool.scores is not None
    return weighted_vote([pool.answers[i] for i in idx], [pool.scores[i] for i in idx])


def vote_max(pool: PoolView, idx: tuple[int, ...]) -> str | None:
    assert pool.scores is not None
    return max_vote([pool.answers[i] for i in idx], [pool.scores[i] for i in idx])


def subset_correct(pool: PoolView, idx: Sequence[int], answer: str | None) -> bool:
    """Whether `answer`, chosen from the samples `idx`, is right (graded as its earliest sample was)."""
    if answer is None:
        return False
    return next((pool.correct[i] for i in idx if pool.answers[i] == answer), False)


def expected_vote_accuracy(pool: PoolView, k: int, vote: Vote, seed: int = 0, key: str = "") -> float:
    """E[vote over a uniform k-subset is correct]: exact by enumeration, else a fixed-seed estimate."""
    rows = [tuple(r) for r in k_subsets(len(pool), k, seed=subset_seed(seed, key, k)).tolist()]
    if vote is not vote_majority:
        return sum(subset_correct(pool, idx, vote(pool, idx)) for idx in rows) / len(rows)
    # A majority vote depends only on the answers, grades and tie-break log-probabilities: vote once per pattern.
    memo: dict[tuple[object, ...], bool] = {}
    lps = pool.mean_logprobs or (None,) * len(pool)
    graded = list(zip(pool.answers, pool.correct, lps, strict=True))
    total = 0
    for idx in rows:
        sig = tuple(graded[i] for i in idx)
        hit = memo.get(sig)
        if hit is None:
            hit = memo[sig] = subset_correct(pool, idx, vote(pool, idx))
        total += hit
    return total / len(rows)


def coverage(pool: PoolView, k: int) -> float:
    """pass@k of this pool: the oracle chance that a k-subset holds a right answer."""
    return pass_at_k(len(pool), sum(pool.correct), k)


# -- bootstrap over problems --------------------------------------------------------------------------------
def bootstrap_ci(values: Sequence[float] | np.ndarray, seed: int = 0, resamples: int = 1000,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-problem values (NaN = no data for that problem)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))  # [R, P]
    means = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))
