"""Which pools a learned verifier learns from and agrees with: the strategies' side of `ponder verifier`.

The verifier scores chains of thought (the pool of `cot`, which best-of-N and self-consistency draw from) and
checks them against program-aided answers to the same problem (the pool of `program_aided`). Naming them here
keeps strategy names inside strategies/: the experiments and verifiers layers ask this module.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ponder.strategies.cot import ChainOfThought
from ponder.strategies.program_aided import ProgramAided
from ponder.types import Message, Problem

CANDIDATE_POOL = ChainOfThought.name
"""The pool whose samples are the candidates a learned verifier scores."""
AGREEMENT_POOL = ProgramAided.name
"""The pool whose answers a candidate's program_agreement feature is measured against."""


def candidate_messages(problem: Problem) -> tuple[Message, ...]:
    """The prompt a candidate of the candidate pool was drawn with (its default system prompt)."""
    return ChainOfThought().messages(problem)


async def agreement_answers(problem: Problem, backend: Any, n: int) -> list[str | None]:
    """`n` program-aided answers to `problem`, drawn on `backend` (the caller meters it)."""
    programs = ProgramAided(n=n)
    gens = await backend.generate(programs.messages(problem), programs.params(n))
    answers = await asyncio.gather(*(programs.pool_answer(problem, g) for g in gens))
    return [a for a, _ in answers]
