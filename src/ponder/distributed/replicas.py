"""A pool of backend replicas on Ray actors, and `RayReplicaBackend`: the Backend that routes to the least loaded.

`ReplicaPool` starts K `Replica` actors from one BackendSpec, waits until each has opened its backend, and keeps
the driver's view of them: which are alive and how many calls each has in flight. The sweep's RayExecutor and
the server's RayReplicaBackend both draw on it. A replica whose process dies is marked dead; the call it was
running is tried again on a survivor (a seeded call gives the same answer wherever it runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ponder.distributed.actors import BackendSpec, Replica
from ponder.distributed.runtime import code_digest, ray_module
from ponder.errors import BackendError, InvalidParameter, PonderError
from ponder.types import Generation, Message, ModelInfo, SamplerDefaults, SamplingParams

DRIVER_CODE = code_digest()
"""The ponder code this driver runs, fixed when ponder.distributed is first imported."""


def actor_died(exc: BaseException) -> bool:
    """True for Ray's "the actor's process is gone" errors (as opposed to an error raised by the call)."""
    return isinstance(exc, ray_module().exceptions.RayActorError)


def unwrap(exc: BaseException, what: str) -> BaseException:
    """The ponder error a remote call raised, or a BackendError that names it (Ray wraps remote errors)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, PonderError):
        return cause
    if isinstance(exc, PonderError):
        return exc
    return BackendError(f"{what} failed on a Ray worker: {cause or exc}")


class ReplicaPool:
    """K actors, each holding one replica opened from `spec`; the driver tracks their liveness and load."""

    def __init__(self, spec: BackendSpec, replicas: int = 2, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 resources: dict[str, float] | None = None) -> None:
        if not isinstance(replicas, int) or replicas < 1:
            raise InvalidParameter("replicas", replicas, "use a whole number >= 1")
        ray = ray_module()
        # No restarts: a restarted actor would be a new replica the driver knows nothing about. SPREAD: one node's
        # loss takes as few replicas as possible with it.
        actor = ray.remote(Replica).options(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or {},
                                            max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD")
        self.spec = spec
        self.actors = [actor.remote(spec) for _ in range(replicas)]
        self.alive = [True] * replicas
        self.load = [0] * replicas
        """Calls in flight on each replica, as the driver sent them."""
        try:
            first, *others = self.gather("open")
            if any(other != first for other in others):  # e.g. another file under the same name on some node
                raise BackendError(f"the replicas of {spec.spec!r} opened different models or run different ponder "
                                   f"code ({[first, *others]}); give every node the same model file and ponder")
            if first.code != DRIVER_CODE:
                raise BackendError(f"the replicas run other ponder code ({first.code}) than this driver "
                                   f"({DRIVER_CODE}), so they would store other rows: install the same ponder on "
                                   "every node, or restart the driver if ponder's source changed since it started")
        except BaseException:
            self.close()
            raise
        self.model: str = first.model
        self.info: ModelInfo | None = first.info
        self.deterministic: bool = first.deterministic
        """Every replica decodes each request alone (they all opened the same spec, so they agree)."""
        self.sampler_defaults: SamplerDefaults | None = first.sampler_defaults
        """What the replicas fill unset sampler fields with (so a sweep records the chain they sample with)."""

    def gather(self, method: str) -> list[Any]:
        """Call `method` on every live replica and wait for all; a replica's error is raised as ponder's."""
        try:
            return ray_module().get([getattr(self.actors[i], method).remote() for i in self.live])
        except Exception as exc:
            raise unwrap(exc, f"{method} on a replica") from None

    def pids(self) -> list[int]:
        """Each live replica's process id (for the fault-tolerance test)."""
        return self.gather("pid")

    @property
    def live(self) -> list[int]:
        return [i for i, ok in enumerate(self.alive) if ok]

    def mark_dead(self, index: int) -> None:
        self.alive[index] = False

    def least_loaded(self, limit: int | None = None) -> int | None:
        """The live replica with the fewest calls in flight (below `limit`), or None."""
        free = [i for i in self.live if limit is None or self.load[i] < limit]
        return min(free, key=lambda i: (self.load[i], i)) if free else None

    def no_replica_left(self) -> BackendError:
        return BackendError(f"every Ray replica of {self.spec.spec!r} died; check the workers' logs "
                            "(ray logs / /tmp/ray/session_latest/logs) and run again or resume the sweep")

    async def call(self, method: str, *args: Any) -> Any:
        """Call `method` on the least-loaded replica; if its process dies, on another."""
        while True:
            index = self.least_loaded()
            if index is None:
                raise self.no_replica_left()
            self.load[index] += 1
            ref = getattr(self.actors[index], method).remote(*args)
            try:
                return await ref
            except asyncio.CancelledError:  # the caller gave up (a client went away): stop the replica's work too
                ray_module().cancel(ref)
                raise
            except Exception as exc:
                if not actor_died(exc):
                    raise unwrap(exc, method) from None
                self.mark_dead(index)
            finally:
                self.load[index] -= 1

    def close(self) -> None:
        """Close every replica's backend and end its actor."""
        ray = ray_module()
        closing = [a.close.remote() for i, a in enumerate(self.actors) if self.alive[i]]
        if closing:  # give each engine a moment to stop cleanly; a stuck one is killed below anyway
            ray.wait(closing, num_returns=len(closing), timeout=10)
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.alive = [False] * len(self.actors)


class RayReplicaBackend:
    """The Backend protocol over a ReplicaPool: each call goes to the replica with the fewest calls in flight."""

    def __init__(self, pool: ReplicaPool, session: Any = None) -> None:
        self.pool = pool
        self.session = session
        """The RaySession to close with the pool (None: the caller owns the connection)."""
        self.model = pool.model
        self.info = pool.info
        self.deterministic = pool.deterministic
        """Each replica decodes each request alone, so a call's result does not depend on where it ran."""
        self.sampler_defaults = pool.sampler_defaults
        """The replicas' recommended sampler, so a sweep records the chain they sample with (None: an HTTP server's)."""

    async def generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "") -> list[Generation]:
        return await self.pool.call("generate", tuple(messages), params, prefix)

    async def stream_generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "",
                              on_delta: Callable[[str], None] | None = None) -> list[Generation]:
        """`generate`, with each decoded piece handed to `on_delta` as the replica streams it back."""
        async for item in self._stream(tuple(messages), params, prefix):
            if isinstance(item, str):
                if on_delta is not None:
                    on_delta(item)
            else:
                return item
        raise BackendError("a Ray replica's stream ended without its generations; check the worker's log")

    async def _stream(self, messages: tuple[Message, ...], params: SamplingParams,
                      prefix: str) -> AsyncIterator[str | list[Generation]]:
        pool = self.pool
        index = pool.least_loaded()
        if index is None:
            raise pool.no_replica_left()
        pool.load[index] += 1
        try:
            gen = pool.actors[index].stream_generate.options(num_returns="streaming").remote(messages, params, prefix)
            async for ref in gen:
                yield await ref
        except asyncio.CancelledError:
            ray_module().cancel(gen)
            raise
        except Exception as exc:
            if actor_died(exc):
                pool.mark_dead(index)
            raise unwrap(exc, "stream_generate") from None
        finally:
            pool.load[index] -= 1

    def clear_cache(self) -> None:
        """Forget every replica's cached prefixes (as LlamaCppBackend.clear_cache does for one engine)."""
        self.pool.gather("clear_cache")

    def close(self) -> None:
        """End the replicas, then the Ray connection if this backend made it."""
        try:
            self.pool.close()
        finally:
            if self.session is not None:
                self.session.close()


__all__ = ["BackendSpec", "RayReplicaBackend", "ReplicaPool", "actor_died", "unwrap"]
