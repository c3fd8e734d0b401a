"""Judged comparison for open tasks: a response against a fixed baseline, both orders, ties half.

A judge (verifiers/judge.py `compare`, on any backend) gives P(first response better). Each order becomes a
preference: 1 when it prefers the first, 0 the second, 0.5 when it cannot tell (P exactly 0.5: a tie or a reply
that named neither). The response's score against the baseline is the mean of its preference when shown first and
one minus the baseline's when the baseline is shown first, so a judge that always prefers one position scores
every response exactly 0.5: position bias cancels. What is left of it is reported, with how often the judge
agrees with itself across the two orders.

This module owns the verdict and its arithmetic; it ignores which answers are compared (the sweep's) and who
pays for the judge's tokens (the caller meters its backend under its own role).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ponder.experiments.estimators import bootstrap_ci
from ponder.types import Problem

OPEN_RUBRIC = "how well each answers what was asked: insight, accuracy, clarity and fit to the request"
"""What the judge weighs on open problems (correctness alone does not decide an essay)."""


def baseline_strategy() -> str:
    """The registered strategy whose answer every other one is judged against (it declares `judged_baseline`:
    the model's direct answer, greedy)."""
    from ponder.registry import STRATEGIES

    return next(n for n in STRATEGIES.names() if getattr(STRATEGIES.get(n), "judged_baseline", False))


class PairJudge(Protocol):
    async def compare(self, problem: Problem, a: str, b: str) -> float:
        """P(a is better than b)."""
        ...


def preference(p_first: float) -> float:
    """One order's verdict: 1 (first better), 0 (second better) or 0.5 (cannot tell)."""
    return 1.0 if p_first > 0.5 else 0.0 if p_first < 0.5 else 0.5


@dataclass(frozen=True)
class Verdict:
    """Both orders of one response against its baseline."""

    response_first: float
    """P(first better) with the response shown first."""
    baseline_first: float
    """P(first better) with the baseline shown first."""

    @property
    def score(self) -> float:
        """The response's win against the baseline, in {0, 0.25, 0.5, 0.75, 1}: ties and disagreements half."""
        return (preference(self.response_first) + 1.0 - preference(self.baseline_first)) / 2.0

    @property
    def preference(self) -> float:
        """The judge's own probability that the response is better, averaged over the two orders: a judge that adds
        a constant to whichever answer comes first shifts both orders alike, and the bias cancels. It keeps what a
        judge too position-bound to flip its verdict still says through its probabilities."""
        return (self.response_first + 1.0 - self.baseline_first) / 2.0

    @property
    def consistent(self) -> bool:
        """Did the two orders name the same winner (or both a tie)?"""
        return preference(self.response_first) == 1.0 - preference(self.baseline_first)

    @property
    def first_preferences(self) -> tuple[float, float]:
        return preference(self.response_first), preference(self.baseline_first)


async def judge_both_orders(judge: PairJudge, problem: Problem, response: str, baseline: str) -> Verdict:
    a, b = await asyncio.gather(judge.compare(problem, response, baseline), judge.compare(problem, baseline, response))
    return Verdict(float(a), float(b))


@dataclass(frozen=True)
class WinRate:
    win_rate: float
    ci: tuple[float, float]
    """Bootstrap interval over prompts."""
    position_bias: float
    """Mean preference for whichever response came first, less 0.5: 0 is none, 0.5 always the first."""
    self_agreement: float
    """Share of prompts whose two orders named the same winner."""
    n: int
    mean_p_first: float = math.nan
    """Mean P(first better) over every judged call, less 0.5: the position bias in the judge's probabilities."""


def win_rate(verdicts: Sequence[Verdict], seed: int = 0) -> WinRate:
    if not verdicts:
        return WinRate(math.nan, (math.nan, math.nan), math.nan, math.nan, 0)
    scores = [v.score for v in verdicts]
    firsts = [p for v in verdicts for p in v.first_preferences]
    probs = [p for v in verdicts for p in (v.response_first, v.baseline_first)]
    return WinRate(sum(scores) / len(scores), bootstrap_ci(scores, seed), sum(firsts) / len(firsts) - 0.5,
                   sum(v.consistent for v in verdicts) / len(verdicts), len(verdicts),
                   sum(probs) / len(probs) - 0.5)
