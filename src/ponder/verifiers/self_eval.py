"""Self-evaluation: the policy model's own P(correct), read from the log-probability of "Yes".

The model is asked whether a (possibly partial) solution is correct so far, for one token at temperature 0, with
the top alternatives' log-probabilities. P(Yes) = p(yes) / (p(yes) + p(no)), summed over spellings ("Yes", " yes",
"YES"). It stands in for a process reward model when none is available (Xie et al. 2023 "self-evaluation guided
beam search"; Kadavath et al. 2022 "Language models (mostly) know what they know").

The verifier uses whatever backend it is given. Inside a strategy that backend is `ledger.meter(backend,
"verifier")`, so its tokens are metered under role "verifier"; pass a metered backend yourself when you use it
directly and want it counted.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence

from ponder.answers import answer_of
from ponder.types import Generation, Message, Problem, SamplingParams, Score

SELF_EVAL_PROMPT = (
    "Here is a problem and a proposed solution. The solution may be partial (unfinished).\n\n"
    "Problem:\n{question}\n\nProposed solution:\n{solution}\n\n"
    "Is this solution correct so far and on the right track? Answer with one word: Yes or No."
)
"""Fields: {question}, {solution}."""

ASK = SamplingParams(max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=5)
"""One token, greedy, with the five most likely alternatives."""


def choice_probability(gen: Generation, first: str, second: str) -> float | None:
    """P(first) / (P(first) + P(second)) at the first generated token; None when neither can be seen.

    Tokens match case-insensitively after stripping spaces. When only one choice is among the top alternatives,
    the other's probability is bounded by the least likely listed alternative, and that bound is used.
    """
    first, second = first.lower(), second.lower()
    if gen.logprobs:
        tok = gen.logprobs[0]
        top = dict(tok.top) or {tok.token: tok.logprob}
        p1, p2 = _mass(top, first), _mass(top, second)
        if p1 or p2:
            bound = min(math.exp(min(top.values())), max(0.0, 1.0 - sum(math.exp(v) for v in top.values())))
            p1, p2 = p1 or bound, p2 or bound
            return p1 / (p1 + p2) if p1 + p2 > 0 else 0.5
    word = re.match(r"[\W_]*([^\W_]*)", gen.text.lower())
    said = word.group(1) if word else ""
    return 1.0 if said == first else 0.0 if said == second else None


def _mass(top: dict[str, float], word: str) -> float:
    return sum(math.exp(lp) for t, lp in top.items() if t.strip().lower() == word)


class SelfEvalVerifier:
    """Scores a candidate by the model's own P(Yes) that it is correct (so far)."""

    def __init__(self, backend: object, prompt_template: str = SELF_EVAL_PROMPT) -> None:
        self.backend = backend
        self.prompt_template = prompt_template

    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        return list(await asyncio.gather(*(self._ask(problem, c) for c in candidates)))

    async def score_steps(self, problem: Problem, partial_solution_text: str, delimiter: str = "\n\n") -> list[Score]:
        """A score for each step prefix of a solution (steps split on `delimiter`): a process reward per step."""
        steps = [s for s in partial_solution_text.split(delimiter) if s.strip()]
        prefixes = [delimiter.join(steps[: i + 1]) for i in range(len(steps))]
        return await self.score(problem, prefixes)

    async def _ask(self, problem: Problem, solution: str) -> Score:
        prompt = self.prompt_template.format(question=problem.question, solution=solution)
        (gen,) = await self.backend.generate([Message("user", prompt)], ASK)  # type: ignore[attr-defined]
        p = choice_probability(gen, "yes", "no")
        answer = None if problem.kind == "code" else answer_of(solution)
        if p is None:
            return Score(0.5, answer, f"no Yes/No in the self-evaluation reply {gen.text!r}: scored 0.5")
        return Score(p, answer, f"P(yes)={p:.3f}")
