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


def as_verifier(v: Verifier | Callable[..., object]) -> Verifier:
    if isinstance(v, Verifier):
        return v
    if callable(v):
        return CallableVerifier(v)
    raise TypeError(f"expected a Verifier or a callable, got {type(v).__name__}")
