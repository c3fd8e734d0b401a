"""Rows -> outcomes: per problem, the expected correctness and compute of each (strategy, budget).

Pooled strategies are derived from the pools they declare (ponder.strategies.pooling), never regenerated: each
applies its own selection to k-subsets of each pool (a sequential one is simulated in pool order), and pass_at_k
(coverage) is the oracle, not deployable. Search strategies and greedy CoT come from their ResultRows, one per
budget. No strategy is named here. Compute is measured on four axes:
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
from ponder.strategies.pooling import Pooled, Stop, at_temperature, split_label, split_pool
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

    def on(self, mask: np.ndarray) -> Outcome:
        """This outcome on the problems `mask` keeps (to pair it with a run over other problems)."""
        return replace(self, correct=self.correct[mask], cost={a: v[mask] for a, v in self.cost.items()})

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


@dataclass(frozen=True)
class PoolData:
    """One problem's pool with the compute of each sample: [N, 4] arrays over AXES."""

    view: est.PoolView
    policy_cost: np.ndarray
    """[N, 4] per sample, policy roles only."""
    all_cost: np.ndarray
    """[N, 4] per sample, verifier roles included."""


@dataclass(frozen=True)
class PoolStrategy:
    """A curve derived from pools: a strategy's `Pooled` declaration, or the pass@k oracle."""

    spec: Pooled
    deployable: bool = True
    owner: str = ""
    """The registered strategy that declared it."""

    @property
    def name(self) -> str:
        return self.spec.label


COVERAGE = "pass_at_k"
"""The oracle curve (a right answer among k samples; needs the reference, so it is not deployable)."""


StoppingPoint = Stop


def pool_strategies(stopping_point: Stop | None = None, names: Sequence[str] | None = None
                    ) -> tuple[PoolStrategy, ...]:
    """Every pooled curve the registered strategies declare (or those of `names`), and pass@k on the cot pool.
    `stopping_point` replaces the stopping rule of sequential strategies (tests use a simpler rule)."""
    from ponder.registry import STRATEGIES
    from ponder.strategies.pooling import declared, majority

    out = [PoolStrategy(replace(p, stop=stopping_point) if stopping_point and p.stop else p, owner=name)
           for name in (names if names is not None else STRATEGIES.names()) for p in declared(STRATEGIES.get(name))]
    return (*out, PoolStrategy(Pooled(COVERAGE, ("cot",), majority), deployable=False))


def owner_of(label: str) -> tuple[str, Mapping[str, Any]] | None:
    """A pooled curve's label -> (the strategy that deploys it, the params that make it select and sample so);
    None for a label no pooled strategy declares (a search strategy's own name)."""
    base, temperature = split_label(label)
    found = next(((s.owner, dict(s.spec.params)) for s in pool_strategies() if s.deployable and s.name == base), None)
    if found is None or temperature is None:
        return found
    return found[0], {**found[1], "temperature": temperature}


def _estimate(strategy: PoolStrategy, data: Sequence[PoolData], k: int, seed: int, key: str
              ) -> tuple[float, np.ndarray, bool]:
    """(expected correctness, expected cost [4], exact?) of the strategy at budget k on one problem's pools."""
    spec = strategy.spec
    with_verifier = spec.needs_scores
    per_sample = sum((d.all_cost if with_verifier else d.policy_cost).mean(axis=0) for d in data)
    if not strategy.deployable:
        return est.coverage(data[0].view, k), k * data[0].policy_cost.mean(axis=0), True
    if spec.stop is not None:  # sequential: simulated in stored order, on the samples it would have drawn
        view = data[0].view
        m = max(1, min(k, spec.stop(k, view.answers[:k])))
        idx = tuple(range(m))
        return float(est.subset_correct(view, idx, spec.select(est.samples_of(view, idx)))), \
            data[0].policy_cost[:m].sum(axis=0), True
    acc, exact = est.expected_accuracy([d.view for d in data], k, spec.select, seed=seed, key=key)
    return acc, k * per_sample, exact


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
    drawn = {s.pool for s in samples}
    for strategy in strategies if strategies is not None else pool_strategies():
        for temperature in temperatures_of(strategy.spec.pools, drawn):
            names = [p if temperature is None else at_temperature(p, temperature) for p in strategy.spec.pools]
            for pool in names:
                if pool not in cache:
                    cache[pool] = {pid: pool_data(rows, cost_model)
                                   for pid, rows in pools_by_problem(samples, pool).items()}
            data = [cache[pool] for pool in names]
            if not all(data) or (strategy.spec.needs_scores and any(d.view.scores is None for pd in data
                                                                    for d in pd.values())):
                continue
            n_max = min(max(len(d.view) for d in pd.values()) for pd in data)
            label = strategy.name if temperature is None else f"{strategy.name}[T={temperature:g}]"
            for k in sorted(set(budgets) if budgets else default_budgets(n_max)):
                if k <= n_max:
                    out.append(_one_pool_outcome(strategy, k, pids, data, seed, label))
    return out


def temperatures_of(kinds: Sequence[str], drawn: set[str]) -> list[float | None]:
    """The temperature tags at which every pool of `kinds` was drawn (None: the untagged pools)."""
    tags: dict[float | None, set[str]] = {}
    for name in drawn:
        kind, t = split_pool(name)
        tags.setdefault(t, set()).add(kind)
    return sorted((t for t, have in tags.items() if set(kinds) <= have), key=lambda t: (t is not None, t or 0.0))


def _one_pool_outcome(strategy: PoolStrategy, k: int, pids: Sequence[str], data: Sequence[Mapping[str, PoolData]],
                      seed: int, label: str) -> Outcome:
    correct = np.full(len(pids), math.nan)
    cost = np.full((len(pids), 4), math.nan)
    exact = True
    for i, pid in enumerate(pids):
        mine = [pd.get(pid) for pd in data]
        if any(d is None or len(d.view) < k for d in mine):
            continue
        correct[i], cost[i], ok = _estimate(strategy, mine, k, seed, pid)  # type: ignore[arg-type]
        exact &= ok
    return Outcome(label, k, correct, _by_axis(cost), strategy.deployable, exact)


def result_outcomes(pids: Sequence[str], results: Sequence[ResultRow], cost_model: CostModel,
                    grade: Callable[[ResultRow], float] = lambda r: float(r.correct)) -> list[Outcome]:
    """One outcome per (strategy, budget) that the sweep ran; greedy CoT is strategy "cot". `grade` scores a row
    in [0, 1] (NaN: no score), its correctness unless given (an open task's judged score)."""
    index = {pid: i for i, pid in enumerate(pids)}
    groups: dict[tuple[str, int], list[ResultRow]] = defaultdict(list)
    for r in results:
        groups[(r.strategy, r.budget)].append(r)
    out = []
    for (strategy, budget), rows in sorted(groups.items()):
        correct = np.full(len(pids), math.nan)
        cost = np.full((len(pids), 4), math.nan)
        for r in rows:
            correct[index[r.problem_id]] = grade(r)
            cost[index[r.problem_id]] = cost_model.of(r.usage_by_role, r.seconds)
        out.append(Outcome(strategy, budget, correct, _by_axis(cost)))
    return out


def _by_axis(cost: np.ndarray) -> dict[str, np.ndarray]:
    return {axis: cost[:, j] for j, axis in enumerate(AXES)}
