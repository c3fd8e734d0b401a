"""Adaptive consistency: sample in rounds and stop as soon as the vote is settled.

The stopping rule is Adaptive-Consistency's Beta criterion (Aggarwal et al. 2023): treat the shares of the two
leading answers as Beta(v1 + 1, v2 + 1) and stop once P(leader's share > runner-up's) exceeds `threshold`. For
integer counts that probability is an exact binomial tail, so the rule is deterministic. `stopping_point` applies
it to samples given in order, which simulates the strategy on a stored pool without regenerating.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.ledger import Ledger
from ponder.strategies.common import Sampled, at_least, candidate, cut_by_budget, result
from ponder.strategies.pooling import Pooled, majority
from ponder.strategies.self_consistency import majority_vote
from ponder.types import Candidate, Problem, Result
from ponder.verifiers.base import Verifier


def leader_probability(v1: int, v2: int) -> float:
    """P(p1 > p2) for (p1, p2) with p1 / (p1 + p2) ~ Beta(v1 + 1, v2 + 1): the Beta stopping statistic.

    For integers a, b: P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) <= a - 1).
    """
    a, b = v1 + 1, v2 + 1
    trials = a + b - 1
    return sum(math.comb(trials, k) for k in range(a)) / 2**trials


@dataclass(frozen=True, kw_only=True)
class AdaptiveConsistency(Sampled):
    """Self-consistency that stops early once the majority is settled (Aggarwal et al. 2023)."""

    name: ClassVar[str] = "adaptive_consistency"
    problem_kinds: ClassVar[tuple[str, ...]] = ("math", "code")
    """It compares answers for equality (or needs a final-answer line): open prompts have neither."""
    pooled: ClassVar[tuple[Pooled, ...]] = ()  # set below the class: its stopping rule is the class's own
    paper: ClassVar[str] = ("Aggarwal et al. 2023, Let's Sample Step by Step: Adaptive-Consistency (arXiv:2305.11860); "
                            "Fu et al. 2024, Dynasor / Efficiently Serving LLM Reasoning Programs with Certaindex "
                            "(arXiv:2412.20993)")

    n_max: int = 16
    """The most samples drawn, whatever the vote (Aggarwal et al. 2023 cap at 40)."""
    round_size: int = 1
    """Samples per round, drawn in one batched call; the rule is checked after each round. Aggarwal et al. check
    after every sample; larger rounds trade a few extra tokens for fewer, better-batched calls (as Dynasor)."""
    threshold: float = 0.95
    """Stop when P(leader beats runner-up) under the Beta posterior exceeds this (Aggarwal et al. 2023 use 0.95)."""
    logprobs: bool = True
    """Ask for token log-probabilities so the final vote's ties go to the more confident answer."""
    verifier: str | Verifier | Callable[..., object] | None = None
    """Also stop once a verifier is confident: a registry name ("learned" with a scorer file: learned:FILE).
    None: the vote's Beta rule alone."""
    confidence: float = 0.9
    """With a verifier: stop when the leading answer's best score reaches this."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("n_max", self.n_max, 1)
        at_least("round_size", self.round_size, 1)
        if not 0.5 <= self.threshold < 1.0:
            raise InvalidParameter("threshold", self.threshold, "use a probability in [0.5, 1)")
        if not 0.0 < self.confidence <= 1.0:
            raise InvalidParameter("confidence", self.confidence, "use a probability in (0, 1]")

    def at_budget(self, k: int) -> AdaptiveConsistency:
        return replace(self, n_max=k)

    def settled(self, answers: Sequence[str | None]) -> bool:
        """Whether the vote over `answers` is settled by the Beta criterion."""
        counts = [*sorted(Counter(a for a in answers if a is not None).values(), reverse=True), 0, 0]
        return leader_probability(counts[0], counts[1]) > self.threshold

    def stopping_point(self, answers: Sequence[str | None]) -> int:
        """How many of `answers` (in order) the rule consumes before stopping: at most n_max and len(answers)."""
        limit = min(self.n_max, len(answers))
        used = 0
        while used < limit:
            used = min(used + self.round_size, limit)
            if self.settled(answers[:used]):
                break
        return used

    async def confident(self, verifier: Verifier | None, problem: Problem, cands: list[Candidate]) -> bool:
        """Whether the verifier's best score for the vote's leading answer reaches `confidence`."""
        if verifier is None:
            return False
        scores = await verifier.score(problem, [c.text for c in cands])
        leader, _ = majority_vote([c.answer for c in cands], [c.mean_logprob for c in cands])
        best = max((s.value for c, s in zip(cands, scores, strict=True) if c.answer == leader), default=0.0)
        return leader is not None and best >= self.confidence

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        from ponder.strategies.best_of_n import make_verifier

        verifier = make_verifier(self.verifier, problem, backend, ledger) if self.verifier is not None else None
        policy = ledger.meter(backend, "policy")
        cands: list[Candidate] = []
        trace: list[dict[str, object]] = []
        exhausted = False
        while len(cands) < self.n_max:
            size = min(self.round_size, self.n_max - len(cands))
            try:
                gens = await policy.generate(self.messages(problem),
                                             self.params(size, offset=len(cands), logprobs=self.logprobs))
            except BudgetExhausted:
                exhausted = True
                break
            cands += [candidate(g, problem=problem) for g in gens]
            done = self.settled([c.answer for c in cands])
            try:
                sure = not done and await self.confident(verifier, problem, cands)
            except BudgetExhausted:
                exhausted = True
                break
            trace.append({"round": len(trace), "samples": len(cands), "settled": done, "confident": sure})
            done = done or sure
            if cut_by_budget(ledger, gens, self.max_tokens):
                exhausted = True
                break
            if done:
                break
        answer, votes = majority_vote([c.answer for c in cands], [c.mean_logprob for c in cands])
        return result(self.name, ledger, answer=answer, candidates=cands, votes=votes, exhausted=exhausted,
                      trace=trace)


def _stopping_point(k: int, answers: Sequence[str | None]) -> int:
    return AdaptiveConsistency(n_max=k).stopping_point(list(answers))


AdaptiveConsistency.pooled = (Pooled("adaptive_consistency", ("cot",), majority, stop=_stopping_point),)
