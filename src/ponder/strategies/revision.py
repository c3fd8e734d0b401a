"""Sequential revision: the model critiques and rewrites its own last answer, round after round.

Each round is one generation that sees the question and the previous attempt (Snell et al. 2024's sequential
revisions; Self-Refine's feedback and refine steps folded into one call so a round costs one generation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.ledger import Ledger
from ponder.strategies.common import Sampled, at_least, candidate, cut_by_budget, result
from ponder.strategies.self_consistency import majority_vote
from ponder.types import Candidate, Message, Problem, Result

REVISE_PROMPT = (
    "Check the solution above step by step for mistakes in reasoning or arithmetic. "
    "Then write a corrected, complete solution (or restate it if it was right), "
    "ending with 'The answer is N.'"
)

OPEN_REVISE_PROMPT = (
    "Read the response above critically: what is unclear, wrong, missing or padded? "
    "Then write an improved, complete response to the original request (only the response, no commentary)."
)


@dataclass(frozen=True, kw_only=True)
class Revision(Sampled):
    """Answer, then critique and revise `rounds` times (Madaan et al. 2023; Snell et al. 2024)."""

    name: ClassVar[str] = "revision"
    paper: ClassVar[str] = ("Madaan et al. 2023, Self-Refine (arXiv:2303.17651); "
                            "Snell et al. 2024, Scaling LLM Test-Time Compute Optimally, sequential revisions "
                            "(arXiv:2408.03314)")

    rounds: int = 2
    """Revision rounds after the first answer, one generation each (Self-Refine stops by 4; Snell et al. 2024
    train revisers on chains of up to 4 revisions)."""
    select: Literal["last", "vote"] = "last"
    """The final answer: the last round's (the last that finished, if a later one was cut off), or a majority over
    every round's answer (Snell et al. 2024, Sec. 6 select among the revisions with a vote or verifier)."""
    revise_prompt: str = REVISE_PROMPT
    """The user turn that asks for the critique and the rewrite (Self-Refine's feedback + refine, in one call)."""
    open_revise_prompt: str = OPEN_REVISE_PROMPT
    """The same for an open problem, which has no answer to check: critique and rewrite the response."""
    temperature: float = 0.7
    """Revisions are sampled; Self-Refine decodes at 0.7."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("rounds", self.rounds, 0)
        if self.select not in ("last", "vote"):
            raise InvalidParameter("select", self.select, 'use "last" or "vote"')

    def at_budget(self, k: int) -> Revision:
        return replace(self, rounds=max(k - 1, 0))  # k generations: the first answer and k - 1 revisions

    def conversation(self, problem: Problem, last: str | None) -> tuple[Message, ...]:
        """The prompt of one round: the question, and (after the first) the previous attempt to revise."""
        msgs = self.messages(problem)
        if last is None:
            return msgs
        ask = self.open_revise_prompt if problem.kind == "open" else self.revise_prompt
        return (*msgs, Message("assistant", last), Message("user", ask))

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        policy = ledger.meter(backend, "policy")
        cands: list[Candidate] = []
        trace: list[dict[str, object]] = []
        exhausted = False
        for r in range(self.rounds + 1):
            prompt = self.conversation(problem, cands[-1].text if cands else None)
            try:
                (gen,) = await policy.generate(prompt, self.params(1, offset=r))
            except BudgetExhausted:
                exhausted = True
                break
            cands.append(candidate(gen, problem=problem))
            trace.append({"round": r, "answer": cands[-1].answer, "finish_reason": gen.finish_reason})
            if cut_by_budget(ledger, [gen], self.max_tokens):
                exhausted = True
                break
        return self._final(ledger, cands, trace, exhausted)

    def _final(self, ledger: Ledger, cands: list[Candidate], trace: list[dict[str, object]],
               exhausted: bool) -> Result:
        answers = [c.answer for c in cands]
        if self.select == "vote":
            # a tie goes to the later round: reversing makes "earliest seen" mean "most recent"
            answer, votes = majority_vote(answers[::-1])
            votes = {a: votes[a] for a in dict.fromkeys(a for a in answers if a is not None)}
            text = next((c.text for c in reversed(cands) if c.answer == answer), "")
        else:
            # the last round that finished with an answer: a round cut off by max_tokens or the budget never
            # reached its answer, and the last number in its text is noise
            answered = [c for c in cands if c.answer is not None]
            finished = [c for c in answered if c.finish_reason == "stop"]
            last = (finished or answered or cands or [None])[-1]
            answer, text = (last.answer, last.text) if last else (None, "")
            votes = {answer: 1.0} if answer is not None else {}
        return result(self.name, ledger, answer=answer, candidates=cands, votes=votes, text=text,
                      exhausted=exhausted, trace=trace)
