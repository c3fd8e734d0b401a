"""A backend wrapper that lets one choice's text out as it is decoded, without the strategy knowing.

The server hands `Tap(backend, ...)` to `strategy.solve`, so every call the strategy makes (through its metered
backend) passes here. The tap applies the request's `stop` and `top_p` to each call and, when the request
streams, forwards the text of single-generation calls to a sink as `(choice, channel, text)`:

- a call whose assistant prefix has an unclosed `<think>` is thinking: its text goes out as "reasoning";
- any other call goes out as "content", but only for strategies whose last call is the answer (routing.LIVE_CONTENT);
  for the rest the answer is known only when solve() returns, and the server streams it then.

Text the strategy adds between calls (budget forcing's "Wait", its "Final answer:" primer) is part of the next
call's prefix; the tap sends the part of the prefix not yet sent, so the stream reads as the final text does.

How deltas are obtained: a backend with `stream_generate(messages, params, prefix, on_delta)` (the scripted,
local and HTTP backends) reports each piece as it is decoded and still returns exact Generations (usage,
finish_reason).
Any other backend is called with plain `generate` and its text is sent in one piece when the call ends, so usage
stays exact at the price of coarser streaming.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ponder.server.routing import Overrides
from ponder.types import Generation, Message, SamplingParams

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
Sink = Callable[[int, str, str], None]


def in_thinking(prefix: str) -> bool:
    """True when `prefix` opens a thinking block it does not close."""
    return prefix.rfind(THINK_OPEN) > prefix.rfind(THINK_CLOSE)


def split_thinking(text: str) -> tuple[str | None, str]:
    """(thinking, answer) of a final text: the inside of its <think> block, and what follows the block."""
    if THINK_CLOSE not in text:
        return None, text
    head, _, tail = text.rpartition(THINK_CLOSE)
    thinking = head.split(THINK_OPEN, 1)[-1].strip("\n")
    return thinking, tail.lstrip()


def _common(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Tap:
    """`inner`, seen by one choice's solve: request overrides applied, single-generation text streamed to `sink`."""

    def __init__(self, inner: Any, overrides: Overrides, sink: Sink | None = None, choice: int = 0,
                 live_content: bool = False) -> None:
        self.inner, self.overrides, self.sink = inner, overrides, sink
        self.choice, self.live_content = choice, live_content
        self.model: str = getattr(inner, "model", "")
        self.sent = {"reasoning": "", "content": ""}
        """What each channel has sent so far (as the strategy's text reads, for catching up on prefixes)."""

    def __getattr__(self, name: str) -> Any:  # info, supports_n, ... of the inner backend
        return getattr(self.inner, name)

    def _params(self, params: SamplingParams) -> SamplingParams:
        o = self.overrides
        if not o.stop and o.top_p is None:
            return params
        stop = params.stop + tuple(s for s in o.stop if s not in params.stop)
        return params.with_(stop=stop, top_p=params.top_p if o.top_p is None else o.top_p)

    def _emit(self, channel: str, text: str) -> None:
        if channel == "content" and not self.sent["content"] and self.sent["reasoning"]:
            text = text.lstrip()  # an answer after thinking starts at its first visible character (split_thinking)
        if text and self.sink is not None:
            self.sent[channel] += text
            self.sink(self.choice, channel, text)

    def _catch_up(self, channel: str, prefix: str) -> None:
        """Send the part of the prefix's text for this channel that has not been sent (e.g. a forced "Wait")."""
        if channel == "reasoning":
            own = prefix[prefix.rfind(THINK_OPEN) + len(THINK_OPEN):].lstrip("\n")
        else:
            cut = prefix.rfind(THINK_CLOSE)
            own = prefix[cut + len(THINK_CLOSE):].lstrip() if cut >= 0 else ""
        sent = self.sent[channel]
        if len(own) > _common(sent, own):
            new = own[_common(sent, own):]
            if channel == "content" and not sent:
                new = new.lstrip()
            if new and self.sink is not None:
                self.sent[channel] = own
                self.sink(self.choice, channel, new)

    async def generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "") -> list[Generation]:
        params = self._params(params)
        channel = "reasoning" if in_thinking(prefix) else "content"
        if self.sink is None or params.n != 1 or (channel == "content" and not self.live_content):
            return await self.inner.generate(messages, params, prefix)
        self._catch_up(channel, prefix)
        stream_generate = getattr(self.inner, "stream_generate", None)
        if callable(stream_generate):
            return await stream_generate(messages, params, prefix, on_delta=lambda d: self._emit(channel, d))
        gens = await self.inner.generate(messages, params, prefix)
        self._emit(channel, gens[0].text)
        return gens
