"""Rows -> outcomes: per problem, the expected correctness and compute of each (strategy, budget).

Sampling strategies are derived from one pool per problem (never regenerated): self_consistency (maj@k),
best_of_n (weighted best-of-N@k), best_of_n_max, adaptive_consistency (simulated in pool order),
program_aided (maj@k over program samples) and pass_at_k (coverage; an oracle, not deployable). Search
strategies and greedy CoT come from their ResultRows, one per budget. Compute is measured on four axes:
generated tokens (all roles), FLOPs, seconds and dollars; for a k-subset its expectation is exactly k times
the pool's mean per sample (linearity). This module owns that bookkeeping; the estimators own the votes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ponder import compute
from ponder.experiments import estimators as est
from ponder.experiments.records import ProblemRow, ResultRow, SampleRow
from ponder.ledger import DEFAULT_HARDWARE_USD_PER_HOUR, PriceTable
from ponder.types import ModelInfo, Usage

AXES = ("tokens", "flops", "seconds", "usd")
"""The compute axes, in the order the report shows them."""
AXIS_LABELS = {"tokens": "generated tokens", "flops": "FLOPs", "seconds": "seconds", "usd": "US dollars"}
JUDGE_ROLES = frozenset({"verifier", "judge"})
"""Roles that only a verifier-using strategy pays for."""


@dataclass(frozen=True)
class Outcome:
    """One (strategy, budget): per-problem expected correctness and compute, aligned to the problem order."""

    strategy: str
    budget: int
    correct: np.ndarray
    """[P] expected correctness per problem in [0, 1]; NaN where the problem has no data."""
    cost: Mapping[str, np.ndarray]
    """Axis name -> [P] expected compute per problem."""
    deployable: bool = True
    """False for oracles (pass@k), which need the reference answer to pick."""
    exact: bool = True
    """False when some expectation was estimated from sampled k-subsets."""

    @property
    def label(self) -> str:
        return f"{self.strategy}@{self.budget}"

    def accuracy(self, mask: np.ndarray | None = None) -> float:
        x = self.correct if mask is None else self.correct[mask]
        return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan

    def mean_cost(self, axis: str, mask: np.ndarray | None = None) -> float:
        x = self.cost[axis] if mask is None else self.cost[axis][mask]
        return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


@dataclass(frozen=True)
class CostModel:
    """Turns a row's usage into the four compute axes."""

    model: str = ""
    info: ModelInfo | None = None
    """The model's shapes, for FLOPs; None leaves FLOPs unknown (NaN)."""
    prices: PriceTable = field(default_factory=PriceTable)
    seconds_per_token: float | None = None
    """Machine seconds per generated token over the whole sweep (its wall time / all generated tokens). A row's
    own seconds overlap other rows that ran in the same batch, so summing them overcounts; when the run recorded
    its wall time, a row's seconds (and a local model's dollars) are its share of that time by generated tokens."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CostModel:
        raw = dict(config.get("model_info") or {})
        known = {f.name for f in fields(ModelInfo)}
        info = ModelInfo(**{k: v for k, v in raw.items() if k in known}) if raw.get("n_params") else None
        hw = config.get("hardware_usd_per_hour", DEFAULT_HARDWARE_USD_PER_HOUR)
        return cls(str(config.get("model_name") or config.get("model") or raw.get("name", "")), info,
                   PriceTable(hardware_usd_per_hour=float(hw)))

    def amortised(self, machine_seconds: float, rows: Iterable[SampleRow | ResultRow]) -> CostModel:
        """This model with seconds shared out by generated tokens over `machine_seconds` of wall time."""
        tokens = sum(u.completion_tokens for r in rows for u in r.usage_by_role.values())
        if machine_seconds <= 0 or tokens <= 0:
            return self
        return replace(self, seconds_per_token=machine_seconds / tokens)

    def flops(self, usage: Usage) -> float:
        """Forward FLOPs of prefill and decode (Kaplan 2N + attention, from ponder.compute)."""
        return compute.flops(self.info, usage) if self.info else math.nan

    def of(self, usage_by_role: Mapping[str, Usage], seconds: float,
           roles: Callable[[str], bool] = lambda r: True) -> np.ndarray:
        """[tokens, flops, seconds, usd] for the roles kept by `roles`."""
        kept = [u for r, u in usage_by_role.items() if roles(r)]
        total = sum(kept, Usage())
        if self.seconds_per_token is not None:
            secs = total.completion_tokens * self.seconds_per_token
        else:
            secs = total.seconds if total.seconds > 0 else seconds
        usd = self.prices.cost(self.model, total, busy_seconds=secs)
        return np.array([total.completion_tokens, self.flops(total), secs, usd], dtype=float)


def problem_order(problems: Sequence[ProblemRow], *row_lists: Iterable[SampleRow | ResultRow]) -> list[str]:
    """Problem ids in store order, plus any that only rows mention (sorted), each once."""
    ids = [p.problem_id for p in problems]
    seen = set(ids)
    extra = sorted({r.problem_id for rows in row_lists for r in rows} - seen)
    return ids + extra


def pools_by_problem(samples: Iterable[SampleRow], pool: str) -> dict[str, list[SampleRow]]:
    """The samples of one pool per problem, in pool order."""
    out: dict[str, list[SampleRow]] = defaultdict(list)
    for s in samples:
        if s.pool == pool:
            out[s.problem_id].append(s)
    return {pid: sorted(rows, key=lambda r: r.index) for pid, rows in out.items()}


def view_of(rows: Sequence[SampleRow]) -> est.PoolView:
    scores = tuple(r.score for r in rows)
    has_scores = bool(rows) and all(s is not None for s in scores)
    lps = tuple(r.mean_logprob for r in rows)
    return est.PoolView(tuple(r.answer for r in rows), tuple(r.correct for r in rows),
                        tuple(float(s) for s in scores) if has_scores else None,  # type: ignore[arg-type]
                        lps if any(lp is not None for lp in lps) else None)


def default_budgets(n: int) -> list[int]:
    """Powers of two up to n, and n itself."""
    out = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return sorted({*out, n})


def _policy_only(role: str) -> bool:
    return role not in JUDGE_ROLES


StoppingPoint = Callable[[int, Sequence[str | None]], int]


def adaptive_stopping_point(k: int, answers: Sequence[str | None]) -> int:
    """How many of `answers` adaptive consistency with n_max=k consumes (the strategy's own rule)."""
    from ponder.strategies.adaptive_consistency import AdaptiveConsistency

    return int(AdaptiveConsistency(n_max=k).stopping_point(list(answers)))


@dataclass(frozen=True)
class PoolData:
    """One problem's pool with the compute of each sample: [N, 4] arrays over AXES."""

    view: est.PoolView
    policy_cost: np.ndarray
    """[N, 4] per sample, policy roles only."""
    all_cost: np.ndarray
    """[N, 4] per sample, verifier roles included."""


Estimate = Callable[[PoolData, int, int, str], tuple[float, np.ndarray, bool]]
"""(pool, k, seed, problem id) -> (expected correctness, expected cost [4], exact?)."""


def _vote_estimate(vote: est.Vote, with_verifier: bool) -> Estimate:
    def estimate(data: PoolData, k: int, seed: int, key: str) -> tuple[float, np.ndarray, bool]:
        per_sample = data.all_cost if with_verifier else data.policy_cost
        acc = est.expected_vote_accuracy(data.view, k, vote, seed=seed, key=key)
        return acc, k * per_sample.mean(axis=0), est.is_exact(len(data.view), k)
    return estimate


def _coverage_estimate(data: PoolData, k: int, seed: int, key: str) -> tuple[float, np.ndarray, bool]:
    return est.coverage(data.view, k), k * data.policy_cost.mean(axis=0), True


def _adaptive_estimate(stopping_point: StoppingPoint) -> Estimate:
    def estimate(data: PoolData, k: int, seed: int, key: str) -> tuple[float, np.ndarray, bool]:
        answers = data.view.answers[:k]  # simulated in stored order: the samples it would have drawn
        m = max(1, min(k, stopping_point(k, answers)))
        idx = tuple(range(m))
        lps = None if data.view.mean_logprobs is None else data.view.mean_logprobs[:m]
        chosen = est.majority_vote(answers[:m], lps)
        return float(est.subset_correct(data.view, idx, chosen)), data.policy_cost[:m].sum(axis=0), True
    return estimate


@dataclass(frozen=True)
class PoolStrategy:
    """A strategy whose every budget is derived from one pool."""

    name: str
    pool: str
    estimate: Estimate
    needs_scores: bool = False
    deployable: bool = True


def pool_strategies(stopping_point: StoppingPoint = adaptive_stopping_point) -> tuple[PoolStrategy, ...]:
    return (
        PoolStrategy("self_consistency", "cot", _vote_estimate(est.vote_majority, False)),
        PoolStrategy("best_of_n", "cot", _vote_estimate(est.vote_weighted, True), needs_scores=True),
        PoolStrategy("best_of_n_max", "cot", _vote_estimate(est.vote_max, True), needs_scores=True),
        PoolStrategy("adaptive_consistency", "cot", _adaptive_estimate(stopping_point)),
        PoolStrategy("pass_at_k", "cot", _coverage_estimate, deployable=False),
        PoolStrategy("program_aided", "program_aided", _vote_estimate(est.vote_majority, False)),
    )


def pool_data(rows: Sequence[SampleRow], cost_model: CostModel) -> PoolData:
    policy = np.array([cost_model.of(r.usage_by_role, r.seconds, _policy_only) for r in rows]).reshape(-1, 4)
    every = np.array([cost_model.of(r.usage_by_role, r.seconds) for r in rows]).reshape(-1, 4)
    return PoolData(view_of(rows), policy, every)


def pool_outcomes(pids: Sequence[str], samples: Sequence[SampleRow], cost_model: CostModel,
                  budgets: Sequence[int] | None = None, seed: int = 0,
                  strategies: Sequence[PoolStrategy] | None = None) -> list[Outcome]:
    """Every pool-derived (strategy, budget) outcome; a budget above a problem's pool size is NaN there."""
    out: list[Outcome] = []
    cache: dict[str, dict[str, PoolData]] = {}
    for spec in strategies if strategies is not None else pool_strategies():
        if spec.pool not in cache:
            cache[spec.pool] = {pid: pool_data(rows, cost_model)
                                for pid, rows in pools_by_problem(samples, spec.pool).items()}
        data = cache[spec.pool]
        if not data or (spec.needs_scores and any(d.view.scores is None for d in data.values())):
            continue
        n_max = max(len(d.view) for d in data.values())
        for k in sorted(set(budgets) if budgets else default_budgets(n_max)):
            if k > n_max:
                continue
            out.append(_one_pool_outcome(spec, k, pids, data, seed))
    return out


def _one_pool_outcome(spec: PoolStrategy, k: int, pids: Sequence[str], data: Mapping[str, PoolData],
                      seed: int) -> Outcome:
    correct = np.full(len(pids), math.nan)
    cost = np.full((len(pids), 4), math.nan)
    exact = True
    for i, pid in enumerate(pids):
        d = data.get(pid)
        if d is None or len(d.view) < k:
            continue
        correct[i], cost[i], ok = spec.estimate(d, k, seed, pid)
        exact &= ok
    return Outcome(spec.name, k, correct, _by_axis(cost), spec.deployable, exact)


def result_outcomes(pids: Sequence[str], results: Sequence[ResultRow], cost_model: CostModel) -> list[Outcome]:
    """One outcome per (strategy, budget) that the sweep ran; greedy CoT is strategy "cot"."""
    index = {pid: i for i, pid in enumerate(pids)}
    groups: dict[tuple[str, int], list[ResultRow]] = defaultdict(list)
    for r in results:
        groups[(r.strategy, r.budget)].append(r)
    out = []
    for (strategy, budget), rows in sorted(groups.items()):
        correct = np.full(len(pids), math.nan)
        cost = np.full((len(pids), 4), math.nan)
        for r in rows:
            correct[index[r.problem_id]] = float(r.correct)
            cost[index[r.problem_id]] = cost_model.of(r.usage_by_role, r.seconds)
        out.append(Outcome(strategy, budget, correct, _by_axis(cost)))
    return out


def _by_axis(cost: np.ndarray) -> dict[str, np.ndarray]:
    return {axis: cost[:, j] for j, axis in enumerate(AXES)}
