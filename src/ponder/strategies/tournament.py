"""A judged knockout tournament for open-ended tasks with no checker (writing, advice, summaries).

Sample `n` responses in one call, then pair them off round by round; a judge model decides each match. Every pair
is judged in both orders and the two preferences averaged, which cancels the judge's position bias (Zheng et al.
2023, "Judging LLM-as-a-Judge"). The judge is anything with `async compare(problem, a, b) -> float`, the
probability that `a` is better than `b` (ponder's JudgeVerifier by default, on the backend metered as "judge").
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.ledger import Ledger
from ponder.registry import VERIFIERS
from ponder.strategies.common import answer_for
from ponder.types import Candidate, Generation, Problem, Result, SamplingParams


@runtime_checkable
class PairwiseJudge(Protocol):
    async def compare(self, problem: Problem, a: str, b: str) -> float:
        """P(a is better than b), in [0, 1]."""
        ...


def resolve_judge(spec: object, backend: object) -> PairwiseJudge:
    """A judge from a registry name (built on `backend`), or any object with a `compare` method."""
    if not isinstance(spec, str):
        if not callable(getattr(spec, "compare", None)):
            raise InvalidParameter("judge", spec, "pass a registry name or an object with async compare(problem, a, b)")
        return spec  # type: ignore[return-value]
    factory = VERIFIERS.get(spec)
    try:
        takes_backend = "backend" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_backend = False
    return factory(backend=backend) if takes_backend else factory(backend)


@dataclass(frozen=True)
class Tournament:
    """Sample n responses, then a pairwise knockout judged in both orders; the champion is the answer."""

    name: ClassVar[str] = "tournament"

    n: int = 4
    """Responses sampled (one call, shared prefill); the bracket has ceil(log2 n) rounds."""
    judge: str | PairwiseJudge = "judge"
    """The pairwise judge: a registry name (built on the backend metered as role "judge") or an object with
    `async compare(problem, a, b) -> float` (LLM-as-a-judge, Zheng et al. 2023)."""
    temperature: float = 0.8
    """Sampling temperature of the responses; diversity is what the tournament chooses among."""
    max_tokens: int = 512
    """Most tokens per response."""
    system: str = ""
    """An optional system prompt for the responses."""
    seed: int | None = None
    """Base seed of the responses (response i takes seed + i); None: unseeded."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InvalidParameter("n", self.n, "sample at least one response")

    def at_budget(self, k: int) -> Tournament:
        """k responses (the judge's calls, about 2k, are counted apart under role "judge")."""
        return replace(self, n=max(1, k))

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        policy = ledger.meter(backend, "policy")
        params = SamplingParams(n=self.n, max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed)
        try:
            gens = await policy.generate(problem.messages(self.system or None), params)
        except BudgetExhausted as e:
            trace = ({"event": "budget_exhausted", "during": "sampling", "detail": str(e)},)
            return Result(None, "", self.name, (), {}, ledger.usage_by_role, True, trace)
        judge = resolve_judge(self.judge, ledger.meter(backend, "judge"))
        entrants = _entrants(gens)
        champion, bracket, exhausted = await self._knockout(problem, judge, gens, entrants)
        wins = {i: sum(1 for m in bracket if m.get("winner") == i) for i in range(len(gens))}
        candidates = tuple(
            Candidate(g.text, self._answer(problem, g.text), float(wins[i]), g.finish_reason, g.completion_tokens,
                      g.mean_logprob)
            for i, g in enumerate(gens)
        )
        chosen = candidates[champion]
        votes = {chosen.answer: float(wins[champion])} if chosen.answer else {}
        return Result(chosen.answer, chosen.text, self.name, candidates, votes, ledger.usage_by_role, exhausted,
                      tuple(bracket))

    async def _knockout(
        self, problem: Problem, judge: PairwiseJudge, gens: Sequence[Generation], entrants: list[int]
    ) -> tuple[int, list[dict[str, Any]], bool]:
        """Rounds of pairs (0,1), (2,3), ...; an odd one out gets a bye. If the budget runs out, undecided
        matches go to the earlier entrant and no further round starts. Returns (champion, bracket, exhausted)."""
        bracket: list[dict[str, Any]] = []
        alive, rnd, exhausted = list(entrants), 0, False
        while len(alive) > 1 and not exhausted:
            pairs = [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]
            results = await asyncio.gather(*(self._match(problem, judge, gens[a].text, gens[b].text)
                                             for a, b in pairs), return_exceptions=True)
            winners = []
            for (a, b), res in zip(pairs, results, strict=True):
                if isinstance(res, BudgetExhausted):
                    exhausted = True
                    bracket.append({"round": rnd, "a": a, "b": b, "winner": a, "undecided": True})
                    winners.append(a)
                    continue
                if isinstance(res, BaseException):
                    raise res
                p_ab, p_ba = res
                preference = (p_ab + (1.0 - p_ba)) / 2.0  # both orders: position bias cancels
                winner = a if preference >= 0.5 else b  # a tie goes to the earlier entrant
                bracket.append({"round": rnd, "a": a, "b": b, "p_ab": p_ab, "p_ba": p_ba,
                                "preference": preference, "winner": winner})
                winners.append(winner)
            if len(alive) % 2:
                bracket.append({"round": rnd, "bye": alive[-1]})
                winners.append(alive[-1])
            alive, rnd = winners, rnd + 1
        return alive[0], bracket, exhausted

    @staticmethod
    async def _match(problem: Problem, judge: PairwiseJudge, a: str, b: str) -> tuple[float, float]:
        """Judge the pair in both orders, concurrently: (P(a > b) with a first, P(b > a) with b first)."""
        p_ab, p_ba = await asyncio.gather(judge.compare(problem, a, b), judge.compare(problem, b, a))
        return _probability(p_ab), _probability(p_ba)

    @staticmethod
    def _answer(problem: Problem, text: str) -> str | None:
        """Open problems: the response itself (stripped). Others: the normalised extracted answer."""
        if problem.kind == "open":
            return text.strip() or None
        return answer_for(problem, text)


def _entrants(gens: Sequence[Generation]) -> list[int]:
    """Indices that enter the bracket: complete responses, or all of them if every one was cut off."""
    complete = [i for i, g in enumerate(gens) if g.finish_reason == "stop"]
    return complete or list(range(len(gens)))


def _probability(judged: object) -> float:
    """A judge's verdict as P(first better): a float, or a Score's value."""
    return float(getattr(judged, "value", judged))  # type: ignore[arg-type]
