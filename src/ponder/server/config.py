"""The server's settings: limits, auth, and what `reasoning_effort` means ; set by `ponder serve`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ponder.errors import InvalidParameter
from ponder.ledger import PriceTable


@dataclass(frozen=True)
class Effort:
    """What one `reasoning_effort` level runs: a strategy, its params, and optionally at_budget(k)."""

    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)
    k: int | None = None
    """When set, the strategy is scaled with ponder.strategies.at_budget(strategy, k)."""


DEFAULT_EFFORTS: Mapping[str, Effort] = MappingProxyType({
    "none": Effort("cot"),
    "minimal": Effort("cot"),
    "low": Effort("cot"),
    "medium": Effort("self_consistency", {"n": 4}),
    "high": Effort("self_consistency", {"n": 8}),
})
"""On a prompt with answers to compare (ponder.kind "math" or "code"): more samples to vote over."""
DEFAULT_OPEN_EFFORTS: Mapping[str, Effort] = MappingProxyType({
    "none": Effort("cot"),
    "minimal": Effort("cot"),
    "low": Effort("budget_forcing", {}, 1),
    "medium": Effort("budget_forcing", {}, 2),
    "high": Effort("budget_forcing", {}, 4),
})
"""On an open prompt (the default kind of a chat): longer thinking (128 x k tokens, s1 budget forcing), since
open answers cannot be compared for equality and a vote over them means nothing."""


@dataclass(frozen=True)
class ServerConfig:
    """How `ponder serve` behaves. Limits are per request unless said otherwise."""

    model_name: str | None = None
    """The model id shown in /v1/models and responses; None: the backend's own name."""
    api_key_env: str | None = None
    """Environment variable holding the server's own key; None: no auth. Its value is read once, never logged."""
    pass_through_key: bool = False
    """With no server key of its own, send each client's bearer key on to the upstream server instead of the
    key in the backend's environment variable; a client that sends none gets a 401. Never logged."""
    pass_through_fallback: bool = False
    """With pass_through_key: serve a client that sends no key with the operator's own key (opt-in: anyone who can
    reach the server then spends it)."""
    max_concurrency: int = 64
    """Generation requests in flight at once; more are refused with 429 and Retry-After."""
    retry_after_s: int = 1
    """The Retry-After seconds sent with a 429."""
    max_body_bytes: int = 1_000_000
    """Request bodies larger than this are refused with 413."""
    max_n: int = 16
    """Most choices per request (n x prompts); more is a 400."""
    default_max_tokens: int = 512
    """max_tokens of a plain request that gives none."""
    max_samples: int = 64
    """Ceiling of every count a request may set on its strategy (n, n_max, beam_width, expansions, max_steps,
    rounds, K of STRATEGY-K): more is a 400 naming the field."""
    max_request_tokens: int = 65536
    """Generated tokens one request may spend in all (every choice and role); also the ceiling of any *_tokens
    field. A larger ponder.budget.tokens is a 400; a request that gives none is capped here."""
    max_sandbox_seconds: float = 10.0
    """Ceiling of a strategy's sandbox time per program (timeout_s)."""
    efforts: Mapping[str, Effort] = field(default_factory=lambda: DEFAULT_EFFORTS)
    """reasoning_effort level -> the compute it buys on a math or code prompt."""
    open_efforts: Mapping[str, Effort] = field(default_factory=lambda: DEFAULT_OPEN_EFFORTS)
    """reasoning_effort level -> the compute it buys on an open prompt; a level only `efforts` has (the
    operator's "auto" policy) applies to every prompt."""
    strict_model: bool = False
    """True: a request for another model than this server's is a 404. False: every model name is served."""
    keepalive_s: float = 10.0
    """While a streamed request waits for a multi-sample strategy, an SSE comment is sent this often."""
    verifiers: Mapping[str, str] = field(default_factory=dict)
    """Verifiers the operator loaded with a file, by the name clients use: {"learned": "learned:scorer.json"}."""
    prices: PriceTable | None = None
    """Prices for the `ponder.usd` figure; None: ponder's default table."""

    def __post_init__(self) -> None:
        for name in ("max_concurrency", "max_body_bytes", "max_n", "default_max_tokens", "retry_after_s",
                     "max_samples", "max_request_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidParameter(name, value, "use a whole number >= 1")
        if not self.keepalive_s > 0:
            raise InvalidParameter("keepalive_s", self.keepalive_s, "use a positive number of seconds")
        if not self.efforts:
            raise InvalidParameter("efforts", self.efforts, "map at least one reasoning_effort level to a strategy")
