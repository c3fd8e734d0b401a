"""RayExecutor: the sweep's Executor on Ray actors. Only who runs the units changes; the sweep is the same.

Each actor of a ReplicaPool holds one backend replica and runs `ponder.experiments.units.run_unit`, the same
coroutine the InProcessExecutor runs. The driver hands each free slot (`concurrency` per actor) the next unit,
and yields results as they finish (the sweep driver alone writes the store). If an actor's process dies, the
units it had in flight go back to the front of the queue for the survivors. A unit's result either reached the
driver before the death or it did not, so nothing finished is lost; each key is yielded at most once (and the
store's UNIQUE keys would refuse a second copy), so nothing is duplicated. Sampling is seeded per problem and
sample, so which actor draws a unit does not change its samples (up to floating-point batch effects, docs/ray.md,
which a deterministic sweep removes: each replica then decodes every request alone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ponder.distributed.replicas import ReplicaPool, actor_died, unwrap
from ponder.distributed.runtime import ray_module
from ponder.errors import InvalidParameter
from ponder.experiments.units import Key, Unit, UnitResult


@dataclass(frozen=True)
class _Flight:
    """A unit sent to an actor: the unit, the actor's index, and Ray's reference to the result."""

    unit: Unit
    index: int
    ref: Any


class RayExecutor:
    """Runs units on the actors of `pool`, `concurrency` at a time on each (its engine batches them)."""

    def __init__(self, pool: ReplicaPool, concurrency: int = 4,
                 on_actor_death: Callable[[int, int], None] | None = None) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidParameter("concurrency", concurrency, "use a whole number >= 1")
        self.pool, self.concurrency = pool, concurrency
        self.on_actor_death = on_actor_death
        """Called with (actor index, its units in flight) when an actor's process dies."""
        self.rescheduled = 0
        """Units that ran again on another actor because theirs died."""

    async def run(self, units: Sequence[Unit]) -> AsyncIterator[UnitResult]:
        queue: deque[Unit] = deque(units)
        running: dict[asyncio.Future[Any], _Flight] = {}
        yielded: set[Key] = set()
        try:
            while queue or running:
                self._fill(queue, running)
                if not running:
                    raise self.pool.no_replica_left()
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for fut in done:
                    res = self._result(fut, running.pop(fut), queue)
                    if res is not None and res.key not in yielded:
                        yielded.add(res.key)
                        yield res
        finally:
            self._cancel(running)

    def _fill(self, queue: deque[Unit], running: dict[asyncio.Future[Any], _Flight]) -> None:
        """Give every free slot the next unit, least-loaded actor first."""
        while queue:
            index = self.pool.least_loaded(limit=self.concurrency)
            if index is None:
                return
            unit = queue.popleft()
            ref = self.pool.actors[index].run_unit.remote(unit)
            self.pool.load[index] += 1
            running[asyncio.wrap_future(ref.future())] = _Flight(unit, index, ref)

    def _result(self, fut: asyncio.Future[Any], flight: _Flight, queue: deque[Unit]) -> UnitResult | None:
        """The unit's result; None when its actor died (the unit is queued again, first in line)."""
        self.pool.load[flight.index] -= 1
        try:
            return fut.result()
        except Exception as exc:
            if not actor_died(exc):
                raise unwrap(exc, f"unit {flight.unit.key}") from None
        if self.pool.alive[flight.index]:
            self.pool.mark_dead(flight.index)
            if self.on_actor_death is not None:
                self.on_actor_death(flight.index, self.pool.load[flight.index] + 1)
        queue.appendleft(flight.unit)
        self.rescheduled += 1
        return None

    def _cancel(self, running: dict[asyncio.Future[Any], _Flight]) -> None:
        """Stop units still running (the sweep failed or was interrupted); the actors stay up."""
        ray = ray_module()
        for fut, flight in running.items():
            fut.cancel()
            self.pool.load[flight.index] -= 1
            with contextlib.suppress(Exception):  # best effort: the actor may be gone already
                ray.cancel(flight.ref)
        running.clear()
