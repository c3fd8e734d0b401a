"""The Ray actor that holds one backend replica, and the picklable spec it opens that replica from.

An actor is created with a `BackendSpec` (a catalogue name, a .gguf path, an http(s) URL, or "scripted" with its
options), not with a backend: a llama.cpp context cannot be pickled, and each replica must own its engine. The
actor opens its replica in `open()` (so a bad path comes back as a ponder error, not a dead actor) and then runs
work units (`ponder.experiments.units.run_unit`, the sweep's one code path) and plain `generate` calls (serving).
It is an async actor: several units run at once on its event loop, so its local engine batches their decode steps.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ponder.distributed.runtime import code_digest
from ponder.experiments.units import Unit, UnitResult, run_unit
from ponder.types import Generation, Message, ModelInfo, SamplerDefaults, SamplingParams


@dataclass(frozen=True)
class BackendSpec:
    """How an actor opens its backend replica: `open_backend(spec, **options)`, or `factory()` when given."""

    spec: str
    """"scripted", "http(s)://host/v1#model", a catalogue name, or a .gguf path (as `--model` takes)."""
    options: tuple[tuple[str, Any], ...] = ()
    """Constructor options (n_threads=1, n_ctx=..., script=..., latency=...); every value must pickle."""
    factory: Callable[[], Any] | None = None
    """A picklable zero-argument callable returning a backend, for backends `open_backend` does not know."""

    @classmethod
    def of(cls, spec: str, **options: Any) -> BackendSpec:
        return cls(str(spec), tuple(sorted(options.items())))

    def open(self) -> Any:
        if self.factory is not None:
            return self.factory()
        from ponder.backends.factory import open_backend

        return open_backend(self.spec, **dict(self.options))


@dataclass(frozen=True)
class Identity:
    """What the driver needs to know of a replica's model: its name and shapes (sha256 included, for provenance)."""

    model: str
    info: ModelInfo | None
    code: str = ""
    """The replica's ponder version and source digest (runtime.code_digest), compared with the driver's."""
    deterministic: bool = False
    """The replica decodes each request alone (`deterministic=True`), as a deterministic sweep needs."""
    sampler_defaults: SamplerDefaults | None = None
    """What the replica fills a request's unset sampler fields with (a local model's recommended sampler)."""


class Replica:
    """One backend replica in its own process. Wrapped with `ray.remote` by ReplicaPool (so ray stays optional)."""

    def __init__(self, spec: BackendSpec) -> None:
        code_digest()  # the code this process runs, fixed now
        self.spec = spec
        self.backend: Any = None

    async def open(self) -> Identity:
        """Open the replica; return its model's identity, with the sha256 the sweep records as provenance."""
        from ponder.experiments.sweep import model_identity

        if self.backend is None:
            self.backend = self.spec.open()
        ident = model_identity(self.backend)
        info = ident["model_info"]
        return Identity(ident["model_name"], ModelInfo(**info) if info is not None else None, code_digest(),
                        bool(getattr(self.backend, "deterministic", False)),
                        getattr(self.backend, "sampler_defaults", None))

    async def pid(self) -> int:
        """This actor's process id (the fault-tolerance test kills it with SIGKILL)."""
        return os.getpid()

    async def attribute(self, name: str) -> Any:
        """An attribute of the replica's backend (counters such as `stats` or `cancelled`), or None."""
        return getattr(self.backend, name, None)

    async def run_unit(self, unit: Unit) -> UnitResult:
        return await run_unit(unit, self.backend)

    async def generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "") -> list[Generation]:
        return await self.backend.generate(messages, params, prefix)

    async def stream_generate(self, messages: Sequence[Message], params: SamplingParams,
                              prefix: str = "") -> AsyncIterator[str | list[Generation]]:
        """Text deltas as they are decoded, then the finished generations (exact usage) as the last item."""
        stream_generate = getattr(self.backend, "stream_generate", None)
        if not callable(stream_generate):
            yield await self.backend.generate(messages, params, prefix)
            return
        deltas: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.ensure_future(stream_generate(messages, params, prefix, on_delta=deltas.put_nowait))
        try:
            while not (task.done() and deltas.empty()):
                getter = asyncio.ensure_future(deltas.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            yield task.result()
        finally:
            task.cancel()

    async def clear_cache(self) -> None:
        """Forget the engine's cached prefixes, if it keeps any (benchmarks start each run cold)."""
        clear = getattr(self.backend, "clear_cache", None)
        if callable(clear):
            clear()

    async def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            closing = close()
            if inspect.isawaitable(closing):  # the HTTP backend closes its client asynchronously
                await closing
        self.backend = None

