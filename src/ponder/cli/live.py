"""A live line on stderr while one solve runs: calls and samples done, tokens generated, the rate, the time.

It owns reading the counters and drawing them; it ignores what the strategy does. Tokens come from the ledger
(finished calls) or, for a local engine, from its decode counter, which moves while a long generation is still
running, so that a user sees work happening in the 60-80 s a vote of eight can take.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from ponder.ledger import Ledger

REFRESH_S = 0.5


@dataclass(frozen=True)
class Tick:
    """What the live line shows at one moment."""

    calls: int
    samples: int
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"thinking: {self.calls} calls, {self.samples} samples done, {self.tokens:,} tokens, "
                f"{self.rate:.1f} tok/s, {self.seconds:.0f} s")


def tick(ledger: Ledger, backend: Any, decoded_before: int, started: float) -> Tick:
    """The counters now: the engine's decode counter (live) where there is one, else the ledger's finished calls."""
    total = ledger.total
    decoded = decoded_so_far(backend) - decoded_before
    return Tick(total.calls, ledger.generations, max(total.completion_tokens, decoded), time.monotonic() - started)


def decoded_so_far(backend: Any) -> int:
    """The local engine's `stats["decoded_tokens"]` (a property of LlamaCppBackend); 0 for other backends."""
    stats = getattr(backend, "stats", None)
    return int(stats.get("decoded_tokens", 0)) if isinstance(stats, Mapping) else 0


@contextlib.asynccontextmanager
async def live_line(console: Console, ledger: Ledger, backend: Any, enabled: bool = True) -> AsyncIterator[None]:
    """Show `tick`'s line on `console` (transient: it is gone when the solve ends) while the body runs."""
    if not enabled:
        yield
        return
    before, started = decoded_so_far(backend), time.monotonic()
    with console.status(tick(ledger, backend, before, started).line()) as status:

        async def refresh() -> None:
            while True:
                await asyncio.sleep(REFRESH_S)
                status.update(tick(ledger, backend, before, started).line())

        task = asyncio.create_task(refresh())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
