"""Hybrid consistency: one vote over chains of thought and programs together.

A chain of thought and a program fail in different ways (an arithmetic slip against a misread question), so when
the two methods agree on an answer that is strong evidence, and a vote over both beats either alone at equal
samples (Chen et al. 2022 report PoT + CoT self-consistency gains; Zhao et al. 2023 choose between CoT and PAL).
Budget k is k samples of each method, drawn concurrently; the programs run in the sandbox. The vote is the
self-consistency one (ties by summed mean log-probability), over chains first, then programs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import ClassVar

from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.ledger import Ledger
from ponder.strategies.common import SYSTEM_PROMPT, Sampled, candidate, cut_by_budget, result
from ponder.strategies.pooling import Pooled, PoolSample, majority
from ponder.strategies.program_aided import PROGRAM_PROMPT, ProgramAided
from ponder.strategies.self_consistency import majority_vote
from ponder.types import Problem, Result


@dataclass(frozen=True, kw_only=True)
class HybridConsistency(Sampled):
    """Vote over n chains of thought and n programs (Chen et al. 2022, PoT + CoT; Zhao et al. 2023)."""

    name: ClassVar[str] = "hybrid_consistency"
    paper: ClassVar[str] = ("Chen et al. 2022, Program of Thoughts Prompting (arXiv:2211.12588), Sec. 4; "
                            "Zhao et al. 2023, Automatic Model Selection with LLMs for Reasoning (arXiv:2305.14333)")
    pooled: ClassVar[tuple[Pooled, ...]] = (Pooled("hybrid_consistency", ("cot", "program_aided"), majority),)
    problem_kinds: ClassVar[tuple[str, ...]] = ("math",)

    n: int = 4
    """Samples of each method: 2n generations in all."""
    temperature: float = 0.7
    """Sampling temperature of both methods (Qwen2.5's recommended value)."""
    system: str = SYSTEM_PROMPT
    """The chain-of-thought system prompt ('... The answer is N.')."""
    program_system: str = PROGRAM_PROMPT
    """The program system prompt (one ```python block that prints the answer)."""
    timeout_s: float = 5.0
    """Seconds each program may run in the sandbox."""

    def __post_init__(self) -> None:
        self.programs()  # validates n, timeout_s and the sampling fields, naming them

    def at_budget(self, k: int) -> HybridConsistency:
        return replace(self, n=k)

    def programs(self) -> ProgramAided:
        return ProgramAided(n=self.n, temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed,
                            system=self.program_system, timeout_s=self.timeout_s)

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        if problem.kind != "math":
            raise InvalidParameter("problem kind", problem.kind, "hybrid_consistency votes over computed values; "
                                   "use it on math problems, or use self_consistency")
        policy = ledger.meter(backend, "policy")
        programs = self.programs()
        try:
            chains, progs = await asyncio.gather(
                policy.generate(self.messages(problem), self.params(self.n, logprobs=True)),
                policy.generate(programs.messages(problem), programs.params(self.n, logprobs=True)))
        except BudgetExhausted:
            return result(self.name, ledger, answer=None, exhausted=True)
        values = await asyncio.gather(*(programs.pool_answer(problem, g) for g in progs))
        cands = [candidate(g, problem=problem) for g in chains]
        cands += [replace(candidate(g), answer=v) for g, (v, _) in zip(progs, values, strict=True)]
        _, votes = majority_vote([c.answer for c in cands], [c.mean_logprob for c in cands])
        answer = majority([PoolSample.of(c) for c in cands])
        trace = [{"method": "cot" if i < len(chains) else "program", "answer": c.answer} for i, c in enumerate(cands)]
        return result(self.name, ledger, answer=answer, candidates=cands, votes=votes, trace=trace,
                      exhausted=cut_by_budget(ledger, [*chains, *progs], self.max_tokens))
