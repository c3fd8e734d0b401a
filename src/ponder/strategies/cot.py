"""Chain of thought: one sample, greedy by default. The baseline every other strategy must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ponder.errors import BudgetExhausted
from ponder.ledger import Ledger
from ponder.strategies.common import Sampled, candidate, cut_by_budget, result
from ponder.types import Problem, Result


@dataclass(frozen=True, kw_only=True)
class ChainOfThought(Sampled):
    """One step-by-step answer (Wei et al. 2022, "Chain-of-Thought Prompting Elicits Reasoning")."""

    name: ClassVar[str] = "cot"
    paper: ClassVar[str] = "Wei et al. 2022, Chain-of-Thought Prompting (arXiv:2201.11903)"
    streams_answer: ClassVar[bool] = True
    """Its last policy call is the answer itself, so the server can stream the answer as it is decoded."""
    judged_baseline: ClassVar[bool] = True
    """Its greedy answer is what every strategy's answer to an open problem is judged against."""

    temperature: float = 0.0
    """0 = greedy decoding, the usual single-sample baseline (Wei et al. 2022); > 0 samples once."""

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        policy = ledger.meter(backend, "policy")
        try:
            (gen,) = await policy.generate(self.messages(problem), self.params(1))
        except BudgetExhausted:
            return result(self.name, ledger, answer=None, exhausted=True)
        cand = candidate(gen, problem=problem)
        return result(self.name, ledger, answer=cand.answer, candidates=[cand], text=gen.text,
                      votes={cand.answer: 1.0} if cand.answer is not None else {},
                      exhausted=cut_by_budget(ledger, [gen], self.max_tokens))
