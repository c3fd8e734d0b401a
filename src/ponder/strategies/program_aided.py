"""Program-aided reasoning: the model writes a Python program, the sandbox runs it, its printed result is the answer.

With n > 1 the programs' results are put to a majority vote (PAL's and Program of Thoughts' self-consistency
variant). `extract_program` and `run_program` are pure enough for the sweep to reuse on a stored pool.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from dataclasses import dataclass, replace
from typing import ClassVar

from ponder.answers import normalize
from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.ledger import Ledger
from ponder.sandbox import compiles, run_python_async
from ponder.strategies.common import Sampled, at_least, candidate, cut_by_budget, result
from ponder.strategies.pooling import Pooled, majority
from ponder.strategies.self_consistency import majority_vote
from ponder.types import Generation, Problem, Result

PROGRAM_PROMPT = (
    "Solve the problem by writing a short Python program. Use variables with meaningful names, compute the "
    "answer step by step, and finish with print(answer), printing only the final value. "
    "Reply with one ```python code block and nothing else."
)

_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_OUTPUT_TAIL = 300


def extract_program(text: str) -> str | None:
    """The program in `text`: the last fenced code block (an unclosed one counts, as a cut-off reply), else the
    longest tail of the text's lines that compiles as Python and prints (models sometimes drop the fence but keep
    a line of prose above the code). A program that defines solution() but prints nothing gets a print."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    source = blocks[-1] if blocks else _code_tail(text)
    if source is None or not source.strip():
        return None
    if "print(" not in source and re.search(r"^def solution\(\s*\)", source, re.MULTILINE):
        source = source.rstrip() + "\n\nprint(solution())\n"  # PAL's prompt style: a solution() that returns
    return textwrap.dedent(source).strip() + "\n"


def _code_tail(text: str) -> str | None:
    lines = text.splitlines()
    for start in range(len(lines)):
        source = "\n".join(lines[start:])
        if ("print(" in source or "def solution" in source) and compiles(source):
            return source
    return None


async def run_program(source: str, *, timeout_s: float = 5.0) -> str | None:
    """Run `source` in the sandbox; the normalised last line it printed, or None if it failed or printed nothing."""

    out = await run_python_async(source, timeout_s=timeout_s)
    if out.timed_out or out.killed or out.returncode != 0:
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return normalize(lines[-1]) if lines else None


@dataclass(frozen=True, kw_only=True)
class ProgramAided(Sampled):
    """Write a program, run it, vote over results (Gao et al. 2022, PAL; Chen et al. 2022, Program of Thoughts)."""

    name: ClassVar[str] = "program_aided"
    pooled: ClassVar[tuple[Pooled, ...]] = (Pooled("program_aided", ("program_aided",), majority),)
    problem_kinds: ClassVar[tuple[str, ...]] = ("math",)
    """It computes a value: a sweep refuses it on other tasks."""
    paper: ClassVar[str] = ("Gao et al. 2022, PAL: Program-aided Language Models (arXiv:2211.10435); "
                            "Chen et al. 2022, Program of Thoughts Prompting (arXiv:2211.12588)")

    n: int = 5
    """Programs to sample; their printed results are put to a majority vote (PAL and PoT both report gains from
    self-consistency over programs, sampling at T=0.7 and 0.4)."""
    temperature: float = 0.7
    """Sampling temperature of the programs (PAL's majority-vote setting)."""
    system: str = PROGRAM_PROMPT
    """The system prompt asking for one Python program that prints the answer (PoT-style, zero-shot)."""
    timeout_s: float = 5.0
    """Seconds each program may run in the sandbox before it is killed and casts no vote."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("n", self.n, 1)
        if not self.timeout_s > 0:
            raise InvalidParameter("timeout_s", self.timeout_s, "use a positive number of seconds")

    def at_budget(self, k: int) -> ProgramAided:
        return replace(self, n=k)

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        if problem.kind != "math":
            raise InvalidParameter("problem kind", problem.kind,
                                   "program_aided computes a value; use it on math problems, or use self_consistency")
        policy = ledger.meter(backend, "policy")
        try:
            gens = await policy.generate(self.messages(problem), self.params(self.n, logprobs=True))
        except BudgetExhausted:
            return result(self.name, ledger, answer=None, exhausted=True)
        programs = [extract_program(g.text) for g in gens]
        outputs = await asyncio.gather(*(self._run(p) for p in programs))
        # the program's printed result is the answer, never a number from the program text
        cands = [replace(candidate(g), answer=out) for g, out in zip(gens, outputs, strict=True)]
        answer, votes = majority_vote([c.answer for c in cands], [c.mean_logprob for c in cands])
        trace = [{"sample": i, "program": p is not None, "result": out}
                 for i, (p, out) in enumerate(zip(programs, outputs, strict=True))]
        return result(self.name, ledger, answer=answer, candidates=cands, votes=votes, trace=trace,
                      exhausted=cut_by_budget(ledger, gens, self.max_tokens))

    async def _run(self, program: str | None) -> str | None:
        return None if program is None else await run_program(program, timeout_s=self.timeout_s)

    async def pool_answer(self, problem: Problem, gen: Generation) -> tuple[str | None, str | None]:
        """(answer, what to grade) of one pool sample: the program's printed result, graded as a value."""
        value = await self._run(extract_program(gen.text))
        return value, value
