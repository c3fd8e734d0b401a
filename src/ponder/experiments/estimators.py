"""Unbiased estimators over one pool of N samples: pass@k, expected maj@k and expected best-of-N@k.

Every budget k <= N is derived from the same pool without generating again (as search-and-learn's score.py
does). pass@k has a closed form (Chen et al. 2021). Votes have ties, so their expectation over all k-subsets
is computed by enumerating the subsets when there are few (C(N, k) <= `max_exact`), else estimated from a
fixed-seed random sample of k-subsets. A subset keeps the pool order, so "ties go to the earliest sample"
means the same thing here as in the live strategy; a tied majority goes to the larger sum of mean token
log-probabilities where the pool has them, exactly as `self_consistency` breaks it.

The selection itself is not defined here: each strategy declares its own (ponder.strategies.pooling), and the
deployed strategy calls the same function, so a curve and a deployed strategy never disagree. This module owns the
subset arithmetic and the bootstraps over problems.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ponder.strategies.pooling import PoolSample, Select

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


# -- selections over k-subsets ------------------------------------------------------------------------------
def samples_of(pool: PoolView, idx: Sequence[int]) -> list[PoolSample]:
    """What a strategy's selection sees of the samples `idx` (never their grades)."""
    return [PoolSample(pool.answers[i], pool.mean_logprobs[i] if pool.mean_logprobs else None,
                       pool.scores[i] if pool.scores else None) for i in idx]


def subset_correct(pool: PoolView, idx: Sequence[int], answer: str | None) -> bool:
    """Whether `answer`, chosen from the samples `idx`, is right (graded as its earliest sample was)."""
    if answer is None:
        return False
    return next((pool.correct[i] for i in idx if pool.answers[i] == answer), False)


def expected_accuracy(pools: Sequence[PoolView], k: int, select: Select, seed: int = 0,
                      key: str = "") -> tuple[float, bool]:
    """(E[select over k samples of each pool is right], exact?). The k-subsets of each pool are uniform and
    independent; their samples are concatenated in pool order, as the deployed strategy orders its own. Exact by
    enumeration while there are at most MAX_EXACT_SUBSETS combinations, else a fixed-seed estimate."""
    rows = [k_subsets(len(v), k, seed=subset_seed(seed, key if j == 0 else f"{key}#{j}", k)).tolist()
            for j, v in enumerate(pools)]
    counts = [len(r) for r in rows]
    exact = all(is_exact(len(v), k) for v in pools) and math.prod(counts) <= MAX_EXACT_SUBSETS
    if math.prod(counts) <= MAX_EXACT_SUBSETS:
        combos: Iterable[tuple[int, ...]] = itertools.product(*(range(c) for c in counts))
    else:
        rng = np.random.default_rng(subset_seed(seed, f"{key}#combos", k))
        combos = zip(*(rng.integers(0, c, SUBSET_DRAWS).tolist() for c in counts), strict=True)
    memo: dict[tuple[object, ...], bool] = {}  # a selection sees only the samples: vote once per pattern
    hits = draws = 0
    for combo in combos:
        seen: list[PoolSample] = []
        grades: list[bool] = []
        for pool, choice, pool_rows in zip(pools, combo, rows, strict=True):
            seen += samples_of(pool, pool_rows[choice])
            grades += [pool.correct[i] for i in pool_rows[choice]]
        sig = (*seen, *grades)
        hit = memo.get(sig)
        if hit is None:
            chosen = select(seen)
            hit = memo[sig] = chosen is not None and next((g for s, g in zip(seen, grades, strict=True)
                                                           if s.answer == chosen), False)
        hits += hit
        draws += 1
    return hits / draws, exact


def coverage(pool: PoolView, k: int) -> float:
    """pass@k of this pool: the oracle chance that a k-subset holds a right answer."""
    return pass_at_k(len(pool), sum(pool.correct), k)


# -- bootstrap over problems --------------------------------------------------------------------------------
def bootstrap_ci(values: Sequence[float] | np.ndarray, seed: int = 0, resamples: int = 1000,
                 level: float = 0.95, statistic: Callable[..., np.ndarray] = np.mean) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` (np.mean, or np.median for timings) of per-item values (NaN = no
    data for that item). `statistic` reduces along `axis`, as numpy's reducers do."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))  # [R, P]
    stats = statistic(x[idx], axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))
