"""Running a Plan: every choice is one `strategy.solve` with a fresh Ledger, all concurrently.

This is the library's own path (the same strategies, ledger and backends); the server adds nothing to a solve
but the Tap. Each choice has its own ledger and so its own budget, as max_tokens is per choice in OpenAI's API.
If one choice fails, the others are cancelled and the first error is raised; cancelling the caller (a client
that went away) cancels every solve, and the backends free their slots. A plan returns or raises only once every
sandbox it started is dead (ponder.sandbox.sandbox_scope), so the request counts in flight until then.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ponder.ledger import Ledger, PriceTable
from ponder.sandbox import sandbox_scope
from ponder.server.responses import Outcome
from ponder.server.routing import Plan
from ponder.server.tap import Sink, Tap


async def _one(plan: Plan, index: int, problem: Any, backend: Any, prices: PriceTable | None,
               sink: Sink | None) -> Outcome:
    strategy = plan.for_choice(index % plan.n)
    ledger = Ledger(plan.budget, prices, model=getattr(backend, "model", ""))
    tap = Tap(backend, plan.overrides, sink, index, plan.live_content)
    result = await strategy.solve(problem, tap, ledger)
    return Outcome(index, result, ledger)


async def run_plan(plan: Plan, backend: Any, prices: PriceTable | None = None,
                   sink: Sink | None = None) -> list[Outcome]:
    """The outcomes of every choice (problem-major, n per problem), in index order."""
    async with sandbox_scope():
        return await _run_jobs(plan, backend, prices, sink)


async def _run_jobs(plan: Plan, backend: Any, prices: PriceTable | None, sink: Sink | None) -> list[Outcome]:
    jobs = [(p_i * plan.n + i, problem) for p_i, problem in enumerate(plan.problems) for i in range(plan.n)]
    if len(jobs) == 1:  # the common case, without a task group's overhead
        return [await _one(plan, 0, jobs[0][1], backend, prices, sink)]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_one(plan, idx, problem, backend, prices, sink)) for idx, problem in jobs]
    except BaseExceptionGroup as group_error:
        raise _first(group_error) from None
    return [t.result() for t in tasks]


def _first(error: BaseExceptionGroup) -> BaseException:
    """The first leaf exception of a (possibly nested) exception group."""
    inner = error.exceptions[0]
    return _first(inner) if isinstance(inner, BaseExceptionGroup) else inner
