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


def at_budget(strategy: Strategy, k: int) -> Strategy:
    """The strategy's hyperparameters at budget k (k samples' worth of compute), for sweeps.

    Each strategy dataclass defines `at_budget(k)`: self_consistency n=k, best_of_n n=k, adaptive_consistency
    n_max=k, beam_search k beams in all, budget_forcing k x its base thinking budget, revision k rounds in all,
    tournament n=k, program_aided n=k. A strategy without one (cot) ignores k.
    """
    scale = getattr(strategy, "at_budget", None)
    return scale(k) if callable(scale) else strategy
