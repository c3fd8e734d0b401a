"""A deterministic backend that replays a script and records its calls: the test double of every layer above.

Tokens are whitespace-delimited pieces (`\\S+\\s*`), so max_tokens, stop strings and usage behave like a real
engine's, predictably. Nothing here is random. `latency` makes each call take that long (a slow engine, for
cancellation and load tests); `stream` and `stream_generate` hand out the pieces one by one, as an engine decodes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ponder.errors import BackendError
from ponder.types import Generation, Message, ModelInfo, SamplingParams, TokenLogprob, Usage

_PIECE = re.compile(r"\s*\S+\s*|\s+")
_YIELD_EVERY = 32
"""Samples rendered between two yields to the event loop (small n, the common case, never yields)."""


def count_tokens(text: str) -> int:
    """The scripted tokenizer's count: whitespace-delimited pieces."""
    return len(_PIECE.findall(text))


@dataclass(frozen=True)
class Reply:
    """One scripted generation, with optional log-probabilities."""

    text: str
    logprob: float = -0.5
    """Log-probability given to every token."""
    top_logprobs: Mapping[str, float] = field(default_factory=dict)
    """Alternatives reported at the first position (what self-evaluation reads)."""


@dataclass(frozen=True)
class ScriptedCall:
    """What the backend was asked, as recorded."""

    messages: tuple[Message, ...]
    params: SamplingParams
    prefix: str

    @property
    def last_user(self) -> str:
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


Script = Sequence[str | Reply] | Callable[[ScriptedCall, int], str | Reply]


class ScriptedBackend:
    """Replays `script`: a list consumed in order, or a function of (call, index within the call)."""

    def __init__(self, script: Script, model: str = "scripted", info: ModelInfo | None = None,
                 supports_n: bool = True, latency: float = 0.0) -> None:
        self.model = model
        self.latency = latency
        """Seconds each call waits before answering (0: answer at once)."""
        self.cancelled = 0
        """Calls cancelled while waiting (a client that went away)."""
        self.info = info or ModelInfo(name=model, n_params=1_000_000, n_layers=2, d_model=64,
                                      n_heads=4, n_kv_heads=4, head_dim=16, n_ctx_train=4096)
        self.calls: list[ScriptedCall] = []
        self.supports_n = supports_n
        self.deterministic = callable(script)
        """A function of the call replies alike in any order (deterministic sweeps accept it); a list, by order."""
        self._script = script
        self._queue: Iterator[str | Reply] | None = iter(script) if not callable(script) else None

    def _next(self, call: ScriptedCall, i: int) -> Reply:
        if self._queue is None:
            item = self._script(call, i)  # type: ignore[operator]
        else:
            item = next(self._queue, None)
            if item is None:
                raise BackendError("the scripted backend ran out of replies: add more to its script")
        return item if isinstance(item, Reply) else Reply(item)

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, prefix: str = ""
    ) -> list[Generation]:
        if self.latency > 0:
            try:
                await asyncio.sleep(self.latency)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        call = ScriptedCall(tuple(messages), params, prefix)
        self.calls.append(call)
        prompt_tokens = sum(count_tokens(m.content) for m in messages) + count_tokens(prefix)
        out = []
        for i in range(params.n):
            if i and i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a large n must not hold the event loop (the server's /health runs on it)
            out.append(self._render(self._next(call, i), params, prompt_tokens if i == 0 else 0))
        return out

    async def stream_generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "",
                              on_delta: Callable[[str], None] | None = None) -> list[Generation]:
        """`generate`, handing each token of the (single) generation to `on_delta` as it is "decoded"."""
        gens = await self.generate(messages, params.with_(n=1), prefix)
        for piece in _PIECE.findall(gens[0].text):
            if on_delta is not None:
                on_delta(piece)
            await asyncio.sleep(0)  # let the consumer run between tokens, as a real engine would
        return gens

    async def stream(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "") -> AsyncIterator[str]:
        """The tokens of one generation, one by one."""
        gens = await self.generate(messages, params.with_(n=1), prefix)
        for piece in _PIECE.findall(gens[0].text):
            yield piece

    @staticmethod
    def _render(reply: Reply, params: SamplingParams, prompt_tokens: int) -> Generation:
        text, finish = reply.text, "stop"
        cut = [text.index(s) for s in params.stop if s in text]
        if cut:
            text = text[: min(cut)]
        pieces = _PIECE.findall(text)
        if len(pieces) > params.max_tokens:
            pieces, finish = pieces[: params.max_tokens], "length"
            text = "".join(pieces)
        logprobs = None
        if params.logprobs:
            logprobs = tuple(
                TokenLogprob(p, reply.logprob, dict(reply.top_logprobs) if k == 0 else {})
                for k, p in enumerate(pieces)
            )
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(pieces))
        return Generation(text, finish, len(pieces), logprobs, usage)  # type: ignore[arg-type]
