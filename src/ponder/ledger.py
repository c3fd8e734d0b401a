"""Metering, limits and cost: the Ledger counts every call, by role, and enforces the Budget in one place.

A strategy never counts by hand. It calls `ledger.meter(backend, role)` and uses what it gets back; each call
through that wrapper is checked against the budget first (max_tokens is clamped to what the token budget has
left), then timed and charged. FLOPs and bytes moved live in `compute.py`; dollars come from a PriceTable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.types import Generation, Message, MeterRole, SamplingParams, Usage


@dataclass(frozen=True)
class Budget:
    """Limits for one solve. None means unlimited. Tokens are generated tokens, all roles together."""

    tokens: int | None = None
    calls: int | None = None
    usd: float | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("tokens", "calls", "usd", "seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidParameter(f"budget {name}", value, "use a positive limit, or leave it unset")


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input_per_m: float
    cached_per_m: float
    output_per_m: float


# Public list prices per million tokens; data with a date, so users can override it.
DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "o4-mini": Price(1.10, 0.275, 4.40),
}
DEFAULT_PRICES_DATE = "2025-06-01"
# A 2-vCPU cloud VM on demand (the size ponder's local numbers are measured on).
DEFAULT_HARDWARE_USD_PER_HOUR = 0.085


@dataclass(frozen=True)
class PriceTable:
    """Token prices per model, plus an hourly hardware price for models run locally."""

    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    date: str = DEFAULT_PRICES_DATE
    hardware_usd_per_hour: float = DEFAULT_HARDWARE_USD_PER_HOUR

    def __post_init__(self) -> None:
        if self.hardware_usd_per_hour < 0:
            raise InvalidParameter("hardware_usd_per_hour", self.hardware_usd_per_hour, "use a price >= 0")

    def with_price(self, model: str, price: Price) -> PriceTable:
        return PriceTable({**self.prices, model: price}, self.date, self.hardware_usd_per_hour)

    def is_priced(self, model: str) -> bool:
        return model in self.prices

    def cost(self, model: str, usage: Usage, busy_seconds: float | None = None) -> float:
        """Dollars for `usage`: by tokens for a priced model, else by hardware time (busy_seconds or usage's)."""
        price = self.prices.get(model)
        if price is None:
            seconds = usage.seconds if busy_seconds is None else busy_seconds
            return seconds / 3600.0 * self.hardware_usd_per_hour
        fresh = usage.prompt_tokens - usage.cached_tokens
        return (
            fresh * price.input_per_m + usage.cached_tokens * price.cached_per_m
            + usage.completion_tokens * price.output_per_m
        ) / 1e6


class Ledger:
    """Counts usage by role and refuses calls once the budget is spent."""

    def __init__(self, budget: Budget | None = None, prices: PriceTable | None = None, model: str = "") -> None:
        self.budget = budget or Budget()
        self.prices = prices or PriceTable()
        self.model = model
        self._by_role: dict[str, Usage] = {}
        self.generations = 0
        """Generations returned so far (n per call)."""
        self.opening: Usage | None = None
        """The prompt and cached tokens of the first call: the request's own prompt, which n choices share."""
        self._started = time.monotonic()
        self._in_flight = 0
        self._busy_since = 0.0
        self._busy = 0.0

    # -- metering -------------------------------------------------------------------------------------
    def meter(self, backend: object, role: MeterRole = "policy", thinking: bool = False) -> MeteredBackend:
        """Wrap `backend` so every call is checked and charged to `role` (and counted as thinking if asked)."""
        inner = backend.inner if isinstance(backend, MeteredBackend) else backend
        if not self.model:
            self.model = getattr(inner, "model", "")
        return MeteredBackend(inner, self, role, thinking)

    def charge(self, role: str, usage: Usage) -> None:
        self._by_role[role] = self._by_role.get(role, Usage()) + usage

    # -- reading --------------------------------------------------------------------------------------
    @property
    def usage_by_role(self) -> dict[str, Usage]:
        return dict(self._by_role)

    @property
    def total(self) -> Usage:
        total = Usage()
        for u in self._by_role.values():
            total = total + u
        return total

    @property
    def busy_seconds(self) -> float:
        """Wall-clock seconds during which at least one call was in flight."""
        extra = time.monotonic() - self._busy_since if self._in_flight else 0.0
        return self._busy + extra

    @property
    def usd(self) -> float:
        return self.prices.cost(self.model, self.total, self.busy_seconds)

    def remaining_tokens(self) -> int | None:
        if self.budget.tokens is None:
            return None
        return self.budget.tokens - self.total.completion_tokens

    def check(self) -> None:
        """Raise BudgetExhausted if any limit is already reached."""
        b, total = self.budget, self.total
        if b.tokens is not None and total.completion_tokens >= b.tokens:
            raise BudgetExhausted("tokens", b.tokens, total.completion_tokens)
        if b.calls is not None and total.calls >= b.calls:
            raise BudgetExhausted("calls", b.calls, total.calls)
        if b.usd is not None and self.usd >= b.usd:
            raise BudgetExhausted("usd", b.usd, self.usd)
        elapsed = time.monotonic() - self._started
        if b.seconds is not None and elapsed >= b.seconds:
            raise BudgetExhausted("seconds", b.seconds, elapsed)

    def clamp(self, params: SamplingParams) -> SamplingParams:
        """Shrink max_tokens so that n generations cannot overrun the token budget."""
        left = self.remaining_tokens()
        if left is None or params.max_tokens * params.n <= left:
            return params
        per_sample = left // params.n
        if per_sample < 1:
            raise BudgetExhausted("tokens", self.budget.tokens or 0, self.total.completion_tokens)
        return params.with_(max_tokens=per_sample)

    def _enter(self) -> None:
        if self._in_flight == 0:
            self._busy_since = time.monotonic()
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._busy += time.monotonic() - self._busy_since


class MeteredBackend:
    """A backend seen through a ledger: same `generate`, but checked, clamped, timed and charged."""

    def __init__(self, inner: object, ledger: Ledger, role: str, thinking: bool) -> None:
        self.inner, self.ledger, self.role, self.thinking = inner, ledger, role, thinking
        self.model: str = getattr(inner, "model", "")

    def __getattr__(self, name: str) -> object:  # expose info, supports_n, ... of the inner backend
        return getattr(self.inner, name)

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, prefix: str = ""
    ) -> list[Generation]:
        self.ledger.check()
        params = self.ledger.clamp(params)
        self.ledger._enter()
        start = time.monotonic()
        try:
            gens = await self.inner.generate(messages, params, prefix)  # type: ignore[attr-defined]
        finally:
            self.ledger._leave()
        usage = Usage(calls=1, seconds=time.monotonic() - start)
        for g in gens:
            usage = usage + g.usage
        if self.thinking:
            usage = usage + Usage(thinking_tokens=sum(g.completion_tokens for g in gens))
        self.ledger.generations += len(gens)
        if self.ledger.opening is None:
            self.ledger.opening = Usage(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens)
        self.ledger.charge(self.role, usage)
        return gens
