"""The rows a sweep stores and the curves read: the contract between sweep.py/store.py and curves.py.

Sampling strategies (self-consistency, best-of-N, adaptive consistency, pass@k, program-aided voting) share
one pool per problem: `SampleRow`s, drawn once at the largest budget, from which every smaller budget is
derived. Search strategies (beam search, DVTS, budget forcing, revision, tournament) and greedy CoT run once
per budget: `ResultRow`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ponder.types import Usage


@dataclass(frozen=True)
class ProblemRow:
    problem_id: str
    question: str
    reference: str | None


@dataclass(frozen=True)
class SampleRow:
    """One sample of a pool."""

    problem_id: str
    pool: str
    """Which pool: "cot" (chain-of-thought samples) or "program_aided" (program samples)."""
    index: int
    """Position in the pool; sample i is drawn with seed = base seed of (problem, pool) + i."""
    seed: int
    text: str
    answer: str | None
    """Extracted, normalised answer."""
    correct: bool
    score: float | None
    """The verifier's score (for best-of-N), if one was used."""
    finish_reason: str
    usage_by_role: dict[str, Usage] = field(default_factory=dict)
    """Policy usage for this sample (its share of the prompt included once per sample) and verifier usage."""
    seconds: float = 0.0
    mean_logprob: float | None = None
    """Mean token log-probability of the sample; a tied vote goes to the answer with the larger sum of these."""
    features: Mapping[str, float] | None = field(default=None, compare=False)
    """The sample's own features for a learned verifier (ponder.verifiers.features), stored in `features`."""


@dataclass(frozen=True)
class ResultRow:
    """One run of a search strategy (or greedy CoT) at one budget."""

    problem_id: str
    strategy: str
    budget: int
    answer: str | None
    correct: bool
    finish_reason: str
    budget_exhausted: bool
    usage_by_role: dict[str, Usage] = field(default_factory=dict)
    seconds: float = 0.0
    trace: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    """The chosen response's full text (for inspection; grading already happened)."""


@dataclass(frozen=True)
class JudgmentRow:
    """One result on an open problem judged against the problem's baseline answer, in both orders
    (experiments/judged.py). The judge's usage is the evaluation's, never charged to the strategy."""

    problem_id: str
    strategy: str
    budget: int
    response_first: float
    """P(first better) with the response shown first."""
    baseline_first: float
    """P(first better) with the baseline shown first."""
    usage_by_role: dict[str, Usage] = field(default_factory=dict)
    seconds: float = 0.0


def generated_tokens(usage_by_role: dict[str, Usage]) -> int:
    """Generated tokens over all roles: the sweep's token axis."""
    return sum(u.completion_tokens for u in usage_by_role.values())
