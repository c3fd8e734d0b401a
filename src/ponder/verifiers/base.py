"""The Verifier protocol, and the adapter that makes a plain callable a verifier (as TRL's RewardFunc)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ponder.types import Problem, Score


@runtime_checkable
class Verifier(Protocol):
    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        """One Score per candidate, in order."""
        ...


class CallableVerifier:
    """Wraps fn(problem, candidates) -> list[float | Score] (sync or async) as a Verifier."""

    def __init__(self, fn: Callable[..., object]) -> None:
        self.fn = fn

    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        out = self.fn(problem, list(candidates))
        if inspect.isawaitable(out):
            out = await out
        return [s if isinstance(s, Score) else Score(float(s)) for s in out]  # type: ignore[union-attr]


def verifier_name(spec: str) -> str:
    """The registry name of a spec: "learned:scorer.json" -> "learned"."""
    return spec.partition(":")[0]


def build_verifier(spec: str, backend: object) -> Verifier:
    """The registered verifier named by `spec` ("NAME" or "NAME:PATH"), built on `backend` when its factory takes
    one, and given the PATH when its factory takes a `path` (a learned scorer file)."""
    from ponder.errors import InvalidParameter
    from ponder.registry import VERIFIERS

    name, _, arg = spec.partition(":")
    factory = VERIFIERS.get(name)
    try:
        wanted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        wanted = {}  # type: ignore[assignment]
    kwargs: dict[str, object] = {"backend": backend} if "backend" in wanted else {}
    if arg:
        if "path" not in wanted:
            raise InvalidParameter("verifier", spec, f"the {name} verifier takes no argument: use {name!r}")
        kwargs["path"] = arg
    return factory(**kwargs)


def as_verifier(v: Verifier | Callable[..., object]) -> Verifier:
    if isinstance(v, Verifier):
        return v
    if callable(v):
        return CallableVerifier(v)
    raise TypeError(f"expected a Verifier or a callable, got {type(v).__name__}")
