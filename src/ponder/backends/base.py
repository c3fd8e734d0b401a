"""The Backend protocol, and the one fan-out fallback for backends that cannot return n > 1.

A backend turns (messages, sampling params, assistant prefix) into n generations. It knows nothing about
strategies, verifiers or budgets: the ledger wraps it (`Ledger.meter`) to count and limit every call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from ponder.types import Generation, Message, ModelInfo, SamplingParams


@runtime_checkable
class Backend(Protocol):
    model: str
    """The model's name as the backend reports it."""

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, prefix: str = ""
    ) -> list[Generation]:
        """Return params.n generations for the chat `messages`.

        `prefix` is assistant text the model continues (a beam step, a forced "Wait"): the returned text
        excludes it. Generations of one call share one prefill; the prompt's usage is charged to the first.
        """
        ...


def model_info(backend: object) -> ModelInfo | None:
    """The backend's ModelInfo, if it exposes one (`backend.info`)."""
    info = getattr(backend, "info", None)
    return info if isinstance(info, ModelInfo) else None


async def fan_out(
    one: Callable[[SamplingParams], Awaitable[list[Generation]]], params: SamplingParams
) -> list[Generation]:
    """Run `one` n times concurrently with n=1 and seeds seed+i: the fallback for servers without n > 1."""
    if params.n == 1:
        return await one(params)
    calls = [one(params.with_(n=1, seed=params.sample_seed(i))) for i in range(params.n)]
    results = await asyncio.gather(*calls)
    return [g for r in results for g in r]
