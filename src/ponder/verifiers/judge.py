"""LLM-as-a-judge over any backend: a 1-10 score per response, and pairwise preferences for tournaments.

`score` asks for a short justification ending in a strict "Score: N" line and parses it robustly (the last
"Score: N", then "N/10", then a reply that is only a number). A reply that cannot be parsed gets
`unparseable_score` (0.0 by default: a response the judge did not vouch for is not ranked above ones it scored
low; the reply is kept in Score.detail). `compare` asks which of two responses is better in one token and returns
P(A) from the log-probabilities of "A" and "B" (0.5 when the reply says neither). Position bias is the caller's to
cancel, by judging both orders (as the tournament strategy does; Zheng et al. 2023).

The judge uses whatever backend it is given; strategies pass one metered under role "judge" or "verifier".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from ponder.answers import answer_of
from ponder.types import Message, Problem, SamplingParams, Score
from ponder.verifiers.self_eval import ASK, choice_probability

DEFAULT_RUBRIC = "correctness first, then completeness and clarity"

JUDGE_PROMPT = (
    "You are a strict judge. Rate the response to the task below from 1 (worst) to 10 (best), judging "
    "{rubric}.\n\nTask:\n{question}\n\nResponse:\n{response}\n\n"
    "Give one or two sentences of reasons, then end with a line of the form \"Score: N\" where N is 1 to 10."
)
COMPARE_PROMPT = (
    "You are a strict judge. Which response answers the task better, judging {rubric}?\n\n"
    "Task:\n{question}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Answer with exactly one letter: A or B."
)
JUDGE_PARAMS = SamplingParams(max_tokens=256, temperature=0.0)

_SCORE_LINE = re.compile(r"score\s*(?:\*\*)?\s*[:=]\s*(?:\*\*)?\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\b)?", re.IGNORECASE)
_OUT_OF_TEN = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE)
_ONLY_NUMBER = re.compile(r"\s*\**\s*(\d+(?:\.\d+)?)\s*\**\s*\.?\s*")


def parse_judge_score(reply: str) -> float | None:
    """The 1-10 score in a judge's reply, or None when there is none (or it is out of range)."""
    for pattern in (_SCORE_LINE, _OUT_OF_TEN):
        found = pattern.findall(reply)
        if found:
            return _in_range(float(found[-1]))
    only = _ONLY_NUMBER.fullmatch(reply)
    return _in_range(float(only.group(1))) if only else None


def _in_range(x: float) -> float | None:
    return x if 1.0 <= x <= 10.0 else None


class JudgeVerifier:
    """Scores responses with a judge model: value = (N - 1) / 9 for "Score: N"."""

    def __init__(self, backend: object, rubric: str = DEFAULT_RUBRIC, unparseable_score: float = 0.0,
                 params: SamplingParams = JUDGE_PARAMS) -> None:
        self.backend = backend
        self.rubric = rubric
        self.unparseable_score = unparseable_score
        self.params = params

    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        return list(await asyncio.gather(*(self._judge(problem, c) for c in candidates)))

    async def compare(self, problem: Problem, a: str, b: str) -> float:
        """P(a is better than b) in [0, 1], from the judge's one-letter choice."""
        prompt = COMPARE_PROMPT.format(rubric=self.rubric, question=problem.question, a=a, b=b)
        (gen,) = await self.backend.generate([Message("user", prompt)], ASK)  # type: ignore[attr-defined]
        p = choice_probability(gen, "a", "b")
        return 0.5 if p is None else p

    async def _judge(self, problem: Problem, response: str) -> Score:
        prompt = JUDGE_PROMPT.format(rubric=self.rubric, question=problem.question, response=response)
        (gen,) = await self.backend.generate([Message("user", prompt)], self.params)  # type: ignore[attr-defined]
        answer = None if problem.kind == "code" else answer_of(response)
        n = parse_judge_score(gen.text)
        if n is None:
            return Score(self.unparseable_score, answer, f"unparseable judge reply: {gen.text[-200:]!r}")
        return Score((n - 1.0) / 9.0, answer, f"judge score {n:g}/10")
