"""Executors: who runs a sweep's work units. The sweep builds the units and writes the store; an executor only
runs units and yields their results back, in completion order.

`InProcessExecutor` keeps several units in flight on one asyncio loop, so the local engine batches their decode
steps. A distributed executor (Ray) implements the same `run` by calling `ponder.experiments.units.run_unit` on
its workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from ponder.errors import InvalidParameter
from ponder.experiments.units import Unit, UnitResult, run_unit


class Executor(Protocol):
    def run(self, units: Sequence[Unit]) -> AsyncIterator[UnitResult]:
        """Run every unit once; yield each result as it finishes. A failing unit stops the run with its error."""
        ...


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class InProcessExecutor:
    """Runs units on one backend in this process, `concurrency` at a time; judging units on `judge` (None: the
    same backend)."""

    def __init__(self, backend: object, concurrency: int = 4, judge: object | None = None) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidParameter("concurrency", concurrency, "use a whole number >= 1")
        self.backend, self.concurrency, self.judge = backend, concurrency, judge

    async def run(self, units: Sequence[Unit]) -> AsyncIterator[UnitResult]:
        todo = iter(units)  # shared by the workers: each unit is taken exactly once
        out: asyncio.Queue[object] = asyncio.Queue()

        async def worker() -> None:
            try:
                for unit in todo:
                    await out.put(await run_unit(unit, self.backend, self.judge))
            except Exception as exc:  # handed to the driver, which stops the sweep with it
                await out.put(_Failed(exc))
            finally:
                await out.put(_DONE)

        workers = [asyncio.create_task(worker()) for _ in range(max(1, min(self.concurrency, len(units))))]
        running = len(workers)
        try:
            while running:
                item = await out.get()
                if item is _DONE:
                    running -= 1
                elif isinstance(item, _Failed):
                    raise item.error
                else:
                    yield item  # type: ignore[misc]
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
