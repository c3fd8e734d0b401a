"""Self-consistency: sample n chains of thought and take a majority vote over their final answers.

`majority_vote` is a pure function of stored answers, so sweeps and curves reuse it on a pool without
regenerating (adaptive consistency and program-aided voting use it too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from ponder.errors import BudgetExhausted
from ponder.ledger import Ledger
from ponder.strategies.common import Sampled, at_least, candidate, cut_by_budget, result
from ponder.strategies.pooling import Pooled, PoolSample, majority
from ponder.types import Problem, Result


def majority_vote(
    answers: Sequence[str | None], mean_logprobs: Sequence[float | None] | None = None
) -> tuple[str | None, dict[str, float]]:
    """The most frequent answer and the votes of every answer (None answers do not vote).

    A tie between the most-voted answers goes to the larger sum of mean token log-probabilities over its
    samples; where any tied sample lacks a log-probability, or the sums tie too, the earliest-seen answer wins.
    """
    if mean_logprobs is not None and len(mean_logprobs) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(mean_logprobs)} log-probabilities")
    votes: dict[str, float] = {}
    logprob_sum: dict[str, float | None] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        votes[a] = votes.get(a, 0.0) + 1.0
        lp = mean_logprobs[i] if mean_logprobs is not None else None
        prev = logprob_sum.get(a, 0.0)
        logprob_sum[a] = None if lp is None or prev is None else prev + lp
    if not votes:
        return None, {}
    top = max(votes.values())
    tied = [a for a in votes if votes[a] == top]  # dict order = order of first appearance
    if len(tied) > 1 and all(logprob_sum[a] is not None for a in tied):
        best = max(logprob_sum[a] for a in tied)  # type: ignore[type-var]
        tied = [a for a in tied if logprob_sum[a] == best]
    return tied[0], votes


@dataclass(frozen=True, kw_only=True)
class SelfConsistency(Sampled):
    """Sample n solutions, vote on the answers (Wang et al. 2022, "Self-Consistency Improves Chain of Thought")."""

    name: ClassVar[str] = "self_consistency"
    problem_kinds: ClassVar[tuple[str, ...]] = ("math", "code")
    """It compares answers for equality (or needs a final-answer line): open prompts have neither."""
    paper: ClassVar[str] = "Wang et al. 2022, Self-Consistency Improves Chain of Thought Reasoning (arXiv:2203.11171)"
    pooled: ClassVar[tuple[Pooled, ...]] = (Pooled("self_consistency", ("cot",), majority),)

    n: int = 5
    """Samples to draw and vote over; accuracy rises with n and saturates by ~40 (Wang et al. 2022, Fig. 2)."""
    logprobs: bool = True
    """Ask for token log-probabilities so a tie goes to the more confident answer (Wang et al. 2022 compare
    unnormalised and normalised-probability weighting, Table 1); without them the earliest sample wins."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("n", self.n, 1)

    def at_budget(self, k: int) -> SelfConsistency:
        return replace(self, n=k)

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        policy = ledger.meter(backend, "policy")
        try:
            gens = await policy.generate(self.messages(problem), self.params(self.n, logprobs=self.logprobs))
        except BudgetExhausted:
            return result(self.name, ledger, answer=None, exhausted=True)
        cands = [candidate(g, problem=problem) for g in gens]
        _, votes = majority_vote([c.answer for c in cands], [c.mean_logprob for c in cands])
        answer = majority([PoolSample.of(c) for c in cands])  # the pooled curves' own selection
        return result(self.name, ledger, answer=answer, candidates=cands, votes=votes,
                      exhausted=cut_by_budget(ledger, gens, self.max_tokens))
