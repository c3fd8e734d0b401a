"""What the sampling strategies share: the sampling fields, the default prompt, and turning generations into a Result.

It owns no algorithm. Votes live in self_consistency.py, verifier selection in best_of_n.py, stopping rules in
adaptive_consistency.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ponder.answers import answer_of
from ponder.errors import InvalidParameter
from ponder.ledger import Ledger
from ponder.tasks.base import graded_as_math
from ponder.types import Candidate, Generation, Message, Problem, Result, SamplingParams

SYSTEM_PROMPT = (
    "Solve the problem step by step. "
    "End with a final line of the form 'The answer is N.' where N is the final answer."
)


@dataclass(frozen=True, kw_only=True)
class Sampled:
    """Fields every sampling strategy has: how one generation is sampled."""

    answer_logprobs: ClassVar[bool] = True
    """The chosen response is one generation, so its token log-probabilities can be returned (the server's
    `logprobs`); a strategy that stitches its answer from several calls says False."""

    temperature: float = 0.8
    """Softmax temperature; 0 means greedy. Voting needs diversity (Wang et al. 2022 sample at T=0.5-0.7)."""
    max_tokens: int = 512
    """Most tokens per generation; the Qwen models need about 512 on GSM8K."""
    seed: int | None = None
    """Base seed: sample i is drawn with seed + i, so a run is reproducible and pools can be subsampled."""
    system: str = SYSTEM_PROMPT
    """The system prompt: step-by-step reasoning (Wei et al. 2022, chain of thought) ending in 'The answer is N.'"""

    def __post_init__(self) -> None:
        SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature)  # validates both, naming them

    def params(self, n: int = 1, *, offset: int = 0, logprobs: bool = False) -> SamplingParams:
        """The sampling params for n samples, the first with seed + offset."""
        seed = None if self.seed is None else self.seed + offset
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, n=n, seed=seed,
                              logprobs=logprobs)

    def messages(self, problem: Problem) -> tuple[Message, ...]:
        return problem.messages(self.system or None)

    async def pool_answer(self, problem: Problem, gen: Generation) -> tuple[str | None, str | None]:
        """(answer, what to grade) of one sample drawn into a pool with this strategy's prompt. A cut-off sample
        has no answer: its last number is noise that would neither vote nor count as right."""
        if gen.finish_reason == "length":
            return None, None
        from ponder.tasks.base import answer as answer_of_problem

        return answer_of_problem(problem, gen.text), gen.text


def at_least(name: str, value: Any, low: int) -> None:
    """Raise InvalidParameter unless `value` is a whole number >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidParameter(name, value, f"use a whole number >= {low}")


def candidate(gen: Generation, answer: str | None = None, score: float | None = None,
              problem: Problem | None = None) -> Candidate:
    """A Candidate row for one generation; the answer is extracted from its text unless given.

    A generation cut off by max_tokens has no extracted answer: its last number is noise that would poison a vote.
    For a `problem` the math verifier grades only a number or an expression is an answer, as in the grade.
    """
    if answer is None and gen.finish_reason != "length":
        answer = answer_for(problem, gen.text)
    return Candidate(
        text=gen.text,
        answer=answer,
        score=score,
        finish_reason=gen.finish_reason,
        completion_tokens=gen.completion_tokens,
        mean_logprob=gen.mean_logprob,
        logprobs=gen.logprobs,
    )


def answer_for(problem: Problem | None, text: str) -> str | None:
    """The normalised answer of `text`; for a problem the math verifier grades, only a number or an expression.
    An open response with no answer line (an essay) is its own answer, so a selection can choose it."""
    found = answer_of(text, math=problem is not None and graded_as_math(problem))
    if found is None and problem is not None and problem.kind == "open":
        return text.strip() or None
    return found


def cut_by_budget(ledger: Ledger, gens: Sequence[Generation], max_tokens: int) -> bool:
    """True when the ledger cut a generation short: marked "budget", or, under a token budget, stopped by length
    before `max_tokens` (the ledger shrinks max_tokens to what the budget has left)."""
    clamped = ledger.budget.tokens is not None
    return any(
        g.finish_reason == "budget" or (clamped and g.finish_reason == "length" and g.completion_tokens < max_tokens)
        for g in gens
    )


def text_of(candidates: Sequence[Candidate], answer: str | None) -> str:
    """The text of the first candidate that gave `answer` (the chosen response), else ""."""
    return next((c.text for c in candidates if answer is not None and c.answer == answer), "")


def result(name: str, ledger: Ledger, *, answer: str | None, candidates: Iterable[Candidate] = (),
           votes: Mapping[str, float] | None = None, text: str | None = None, exhausted: bool = False,
           trace: Iterable[Mapping[str, Any]] = ()) -> Result:
    """The Result of a strategy run; usage always comes from the ledger, never from counting by hand."""
    cands = tuple(candidates)
    return Result(
        answer=answer,
        text=text_of(cands, answer) if text is None else text,
        strategy=name,
        candidates=cands,
        votes=dict(votes or {}),
        usage_by_role=ledger.usage_by_role,
        budget_exhausted=exhausted,
        trace=tuple(trace),
    )
