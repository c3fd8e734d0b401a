"""How a sampling strategy is estimated from stored pools: which pools it draws and how it selects an answer.

A strategy that declares `pooled` joins a sweep's shared pools and its curves without touching experiments/:
the sweep draws each pool it names once per problem (N = the largest budget; a pool is drawn by the registered
sampler strategy of that name, e.g. "cot" or "program_aided"), and the curves estimate the strategy at budget k
by applying its own `select` to k-subsets of each pool (search-and-learn's score.py). The deployed strategy calls
the same `select` on its own samples, so a curve at k = N and the strategy on the same samples agree by
construction, tie-breaks included. What it ignores: drawing, grading and the subset arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ponder.types import Candidate


@dataclass(frozen=True)
class PoolSample:
    """What a selection may look at in one sample: never its grade."""

    answer: str | None
    mean_logprob: float | None = None
    score: float | None = None
    """The verifier's score, for selections that need one."""

    @classmethod
    def of(cls, c: Candidate) -> PoolSample:
        return cls(c.answer, c.mean_logprob, c.score)


Select = Callable[[Sequence[PoolSample]], str | None]
"""The answer chosen from samples (in pool order; several pools are concatenated in the order of `pools`)."""
Stop = Callable[[int, Sequence[str | None]], int]
"""(budget k, answers in pool order) -> how many samples a sequential strategy consumes before it stops."""


@dataclass(frozen=True)
class Pooled:
    """One curve a strategy contributes from pools."""

    label: str
    """The curve's name: the strategy's own name, or a variant's (best_of_n_max)."""
    pools: tuple[str, ...]
    """The pools it draws k samples from, each; the budget k is k samples of each."""
    select: Select
    needs_scores: bool = False
    """Only where every sample carries a verifier score."""
    stop: Stop | None = None
    """Sequential (adaptive) strategies consume their one pool in order and stop early: the curve simulates it."""
    params: Mapping[str, object] = field(default_factory=dict)
    """The strategy fields that make the deployed strategy select as this curve does (best_of_n_max: mode=max)."""


def majority(samples: Sequence[PoolSample]) -> str | None:
    """The self-consistency vote: the most frequent answer; ties by summed mean log-probability, then order."""
    from ponder.strategies.self_consistency import majority_vote

    return majority_vote([s.answer for s in samples], [s.mean_logprob for s in samples])[0]


def scored(mode: str) -> Select:
    """Best-of-N selection over verifier scores ("weighted" sums per answer, "max" keeps the best sample)."""
    from ponder.strategies.best_of_n import select

    def pick(samples: Sequence[PoolSample]) -> str | None:
        return select([s.answer for s in samples], [float(s.score or 0.0) for s in samples], mode)[0]  # type: ignore[arg-type]
    return pick


TEMPERATURE_TAG = "@T="
"""A pool drawn at one of several sweep temperatures is named `<pool>@T=<t>` (its curves `<label>[T=<t>]`)."""


def at_temperature(pool: str, temperature: float) -> str:
    """The name of pool `pool` drawn at `temperature`, when a sweep draws it at several."""
    return f"{pool}{TEMPERATURE_TAG}{temperature:g}"


def split_pool(name: str) -> tuple[str, float | None]:
    """(the sampler strategy that draws the pool, its temperature tag or None)."""
    base, tag, t = name.partition(TEMPERATURE_TAG)
    return (base, float(t)) if tag else (base, None)


def split_label(label: str) -> tuple[str, float | None]:
    """A curve's label `<label>[T=<t>]` -> (the curve's own label, its temperature or None)."""
    if label.endswith("]") and "[T=" in label:
        base, _, t = label[:-1].rpartition("[T=")
        return base, float(t)
    return label, None


def declared(strategy_class: object) -> tuple[Pooled, ...]:
    """The pooled curves a strategy class declares (none for a strategy that runs per budget)."""
    return tuple(getattr(strategy_class, "pooled", ()) or ())
