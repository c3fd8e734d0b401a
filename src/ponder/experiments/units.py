"""Work units of a sweep, and `run_unit`: how one unit is executed on a backend.

A unit is a picklable frozen dataclass; `run_unit(unit, backend)` is a plain module-level coroutine, so any
executor (in-process asyncio, a Ray actor) can run it. Units never touch the store: they return a UnitResult
and the sweep driver alone writes it.

- PoolUnit: N samples of one pool for one problem, drawn by ONE generate(n=N) call with seed = the unit's base
  seed (sample i gets base + i, so the pool is the same whichever executor draws it). Every smaller budget is
  later derived from this pool without generating again.
- SearchUnit: one strategy at one budget for one problem (greedy CoT, beam search, budget forcing, ...).
- JudgeUnit: one result on an open problem against the problem's baseline answer, judged in both orders by the
  judge backend (the policy's own unless the sweep names another); the judge's tokens are the evaluation's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ponder.backends.overrides import Overrides, WithOverrides
from ponder.experiments.judged import OPEN_RUBRIC, judge_both_orders
from ponder.experiments.records import JudgmentRow, ResultRow, SampleRow
from ponder.ledger import Ledger
from ponder.registry import STRATEGIES
from ponder.strategies.base import at_budget
from ponder.strategies.pooling import split_pool
from ponder.tasks.base import grade, grade_result
from ponder.types import Generation, Problem, Result, Usage
from ponder.verifiers.features import from_token_logprobs

Key = tuple[Any, ...]


@dataclass(frozen=True)
class PoolUnit:
    """Draw the `n` samples of pool `pool` for one problem."""

    problem: Problem
    pool: str
    """The registered sampler strategy that draws it, e.g. "cot" (chains of thought) or "program_aided", tagged
    `@T=<t>` when the sweep draws pools at several temperatures."""
    n: int
    seed: int
    """Base seed: sample i is drawn with seed + i."""
    settings: tuple[tuple[str, Any], ...]
    """Fields of the sampler strategy (temperature, max_tokens, system prompt)."""
    self_eval: bool = False
    """Also score each sample with the self-evaluation verifier (for best-of-N curves)."""
    sampler: tuple[tuple[str, Any], ...] = ()
    """Sampler fields set by the sweep (top_p, top_k, min_p, penalties); unset ones are the model's defaults."""

    @property
    def key(self) -> Key:
        return ("pool", self.problem.id, self.pool)


@dataclass(frozen=True)
class SearchUnit:
    """Run strategy `strategy` at budget `budget` on one problem, once."""

    problem: Problem
    strategy: str
    budget: int
    settings: tuple[tuple[str, Any], ...]
    """Strategy fields set by the sweep (seed, max_tokens, system prompt), applied where the strategy has them."""
    sampler: tuple[tuple[str, Any], ...] = ()
    """Sampler fields set by the sweep, applied to every call the strategy makes."""

    @property
    def key(self) -> Key:
        return ("result", self.problem.id, self.strategy, self.budget)


@dataclass(frozen=True)
class JudgeUnit:
    """Judge the response of `strategy` at `budget` to an open problem against the baseline's, both orders."""

    problem: Problem
    strategy: str
    budget: int
    response: str
    baseline: str
    rubric: str = OPEN_RUBRIC

    @property
    def key(self) -> Key:
        return ("judgment", self.problem.id, self.strategy, self.budget)


Unit = PoolUnit | SearchUnit | JudgeUnit


@dataclass(frozen=True)
class UnitResult:
    """What running a unit produced: a whole pool, one result row, or one judgment."""

    key: Key
    samples: tuple[SampleRow, ...] = ()
    result: ResultRow | None = None
    judgment: JudgmentRow | None = None


def build_strategy(name: str, settings: Mapping[str, Any], budget: int = 1) -> Any:
    """The registered strategy `name` with those `settings` it has as fields, scaled to `budget`."""
    factory = STRATEGIES.get(name)
    names = {f.name for f in dataclasses.fields(factory)} if dataclasses.is_dataclass(factory) else set()
    return at_budget(factory(**{k: v for k, v in settings.items() if k in names}), budget)


async def run_unit(unit: Unit, backend: object, judge: object | None = None) -> UnitResult:
    """Execute one unit on `backend` (not metered by the caller: each unit keeps its own ledger); a JudgeUnit runs
    on `judge`, or on `backend` when None (the model judges itself)."""
    if isinstance(unit, PoolUnit):
        return UnitResult(unit.key, samples=await _draw_pool(unit, backend))
    if isinstance(unit, JudgeUnit):
        return UnitResult(unit.key, judgment=await _judge(unit, backend if judge is None else judge))
    return UnitResult(unit.key, result=await _run_search(unit, backend))


async def _judge(unit: JudgeUnit, backend: object) -> JudgmentRow:
    from ponder.verifiers.judge import JudgeVerifier

    if not unit.response.strip() or not unit.baseline.strip():
        # Nothing to read on one side (cut off, out of budget): the other wins, or a tie when neither answered.
        p = 0.5 if unit.response.strip() == unit.baseline.strip() else float(bool(unit.response.strip()))
        return JudgmentRow(unit.problem.id, unit.strategy, unit.budget, p, 1.0 - p)
    ledger = Ledger(model=getattr(backend, "model", ""))
    start = time.monotonic()
    verdict = await judge_both_orders(JudgeVerifier(ledger.meter(backend, "judge"), rubric=unit.rubric),
                                      unit.problem, unit.response, unit.baseline)
    return JudgmentRow(unit.problem.id, unit.strategy, unit.budget, verdict.response_first, verdict.baseline_first,
                       dict(ledger.usage_by_role), time.monotonic() - start)


async def _draw_pool(unit: PoolUnit, backend: object) -> tuple[SampleRow, ...]:
    sampler = dataclasses.replace(build_strategy(split_pool(unit.pool)[0], dict(unit.settings)), seed=unit.seed)
    ledger = Ledger(model=getattr(backend, "model", ""))
    start = time.monotonic()
    # Log-probabilities break vote ties in the curves as in the deployed strategies; the pool's sampler rides on top.
    params = Overrides.of(dict(unit.sampler)).apply(sampler.params(unit.n, logprobs=True))
    gens = await ledger.meter(backend, "policy").generate(sampler.messages(unit.problem), params)
    call_seconds = time.monotonic() - start
    graded = await asyncio.gather(*(_answer_and_grade(unit.problem, sampler, g) for g in gens))
    evals = await asyncio.gather(*(_verify(unit.problem, g.text, backend) for g in gens)) if unit.self_eval else ()
    rows = []
    for i, (gen, (answer, correct)) in enumerate(zip(gens, graded, strict=True)):
        usage = {"policy": gen.usage + Usage(calls=int(i == 0), seconds=call_seconds / len(gens))}
        score = None
        if evals:
            score, usage["verifier"] = evals[i]
        features = from_token_logprobs(gen.logprobs, gen.finish_reason == "length", gen.completion_tokens)
        rows.append(SampleRow(unit.problem.id, unit.pool, i, unit.seed + i, gen.text, answer, correct, score,
                              gen.finish_reason, usage, sum(u.seconds for u in usage.values()), gen.mean_logprob,
                              dict(features.values)))
    return tuple(rows)


async def _answer_and_grade(problem: Problem, sampler: Any, gen: Generation) -> tuple[str | None, bool]:
    """The sample's answer as its pool's sampler strategy reads it, and whether it is right."""
    answer, graded = await sampler.pool_answer(problem, gen)
    return answer, graded is not None and await grade(problem, graded)


async def _verify(problem: Problem, text: str, backend: object) -> tuple[float, Usage]:
    """The verifier score of one sample and what scoring it cost (its own ledger, role "verifier"): self-evaluation,
    or on an open problem the judge's 1-10 score (the verifier an open sweep gives best_of_n)."""
    from ponder.verifiers.base import build_verifier

    ledger = Ledger(model=getattr(backend, "model", ""))
    verifier = build_verifier("judge" if problem.kind == "open" else "self_eval", ledger.meter(backend, "verifier"))
    (score,) = await verifier.score(problem, [text])
    return score.value, ledger.usage_by_role.get("verifier", Usage())


async def _run_search(unit: SearchUnit, backend: object) -> ResultRow:
    strategy = build_strategy(unit.strategy, dict(unit.settings), unit.budget)
    if unit.sampler:
        backend = WithOverrides(backend, Overrides.of(dict(unit.sampler)))
    ledger = Ledger(model=getattr(backend, "model", ""))
    start = time.monotonic()
    result = await strategy.solve(unit.problem, backend, ledger)
    seconds = time.monotonic() - start
    correct = await grade_result(unit.problem, result.answer, result.text)
    trace = {"steps": [dict(t) for t in result.trace], "votes": dict(result.votes),
             "candidates": len(result.candidates)}
    return ResultRow(unit.problem.id, unit.strategy, unit.budget, result.answer, correct, _finish(result),
                     result.budget_exhausted, dict(result.usage_by_role), seconds, trace, result.text)


def _finish(result: Result) -> str:
    """The chosen candidate's finish reason ("length" marks a cut-off answer)."""
    chosen = next((c for c in result.candidates if c.text == result.text), None)
    if chosen is None and result.candidates:
        chosen = result.candidates[0]
    if chosen is not None:
        return chosen.finish_reason
    return "budget" if result.budget_exhausted else "stop"

