"""Request-level sampling settings applied to every backend call a strategy makes.

A strategy builds its own SamplingParams (temperature, n, max_tokens, seed); the sampler a user chose for the
whole request or sweep (top_k, min_p, penalties, extra stop strings) rides on top of each call. The server's
request fields and a sweep's pool sampler both arrive here, so one SamplingParams samples the same
distribution whichever backend draws it. It owns the merge, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ponder.types import SAMPLER_FIELDS, Generation, Message, SamplingParams, check_sampler


@dataclass(frozen=True)
class Overrides:
    """Settings applied to every call: extra stop strings, and sampler fields that replace the strategy's."""

    stop: tuple[str, ...] = ()
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool = False
    """Ask every call for token log-probabilities (a client asked for them)."""
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        check_sampler(self)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Overrides:
        """From a mapping with any of these fields (others are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

    @property
    def sampler(self) -> dict[str, Any]:
        """The sampler fields that are set."""
        return {f: getattr(self, f) for f in SAMPLER_FIELDS if getattr(self, f) is not None}

    def apply(self, params: SamplingParams) -> SamplingParams:
        if not self.stop and not self.sampler and not self.logprobs:
            return params
        stop = params.stop + tuple(s for s in self.stop if s not in params.stop)
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": max(params.top_logprobs, self.top_logprobs)} \
            if self.logprobs else {}
        return replace(params, stop=stop, **self.sampler, **extra)


class WithOverrides:
    """`inner` with `overrides` applied to every call (a sweep's pool sampler, for instance)."""

    def __init__(self, inner: Any, overrides: Overrides) -> None:
        self.inner, self.overrides = inner, overrides
        self.model: str = getattr(inner, "model", "")

    def __getattr__(self, name: str) -> Any:  # info, supports_n, stats, ... of the inner backend
        return getattr(self.inner, name)

    async def generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "") -> list[Generation]:
        return await self.inner.generate(messages, self.overrides.apply(params), prefix)
