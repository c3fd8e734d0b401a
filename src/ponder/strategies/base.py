"""The Strategy protocol and `solve`, the one entry point that runs any strategy under a ledger."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ponder.ledger import Budget, Ledger, PriceTable
from ponder.types import Problem, Result


@runtime_checkable
class Strategy(Protocol):
    name: str

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        """Spend compute on `problem` through `ledger.meter(backend, role)`; never count by hand.

        When the ledger raises BudgetExhausted, return the best answer so far with budget_exhausted=True.
        """
        ...


async def solve(strategy: Strategy, problem: Problem, backend: object, budget: Budget | None = None,
                prices: PriceTable | None = None) -> Result:
    """Run `strategy` on `problem` with a fresh ledger."""
    ledger = Ledger(budget, prices, model=getattr(backend, "model", ""))
    return await strategy.solve(problem, backend, ledger)
