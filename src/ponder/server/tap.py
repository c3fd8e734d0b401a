"""A backend wrapper that lets one choice's text out as it is decoded, without the strategy knowing.

The server hands `Tap(backend, ...)` to `strategy.solve`, so every call the strategy makes (through its metered
backend) passes here. The tap applies the request's `stop` and sampler fields (top_p, top_k, min_p, penalties)
to each call and, when the request streams, forwards the text of single-generation calls to a sink as
`(choice, channel, text)`:

- a call whose assistant prefix has an unclosed `<think>` is thinking: its text goes out as "reasoning";
- any other call goes out as "content", but only for strategies whose last call is the answer (`streams_answer`);
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

from ponder.backends.overrides import Overrides
from ponder.types import Generation, Message, SamplingParams

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
Sink = Callable[[int, str, str], None]


def in_thinking(prefix: str) -> bool:
    """True when `prefix` opens a thinking block it does not close."""
    return prefix.rfind(THINK_OPEN) > prefix.rfind(THINK_CLOSE)


def split_thinking(text: str) -> tuple[str | None, str]:
    """(thinking, answer) of a final text: the inside of its <think> block, and what follows the block
    (thinking is None when there is no block)."""
    if THINK_CLOSE not in text:
        head = text.lstrip()
        if head.startswith(THINK_OPEN):  # cut off while thinking: all of it is thinking, and there is no answer yet
            return head[len(THINK_OPEN):].strip("\n"), ""
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


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is the start of `tag` (a tag cut between two deltas)."""
    return next((k for k in range(min(len(text), len(tag) - 1), 0, -1) if tag.startswith(text[-k:])), 0)


class ThinkSplitter:
    """Routes a generation that opens with its own `<think>` block (a model that thinks natively): the inside goes
    out as reasoning, the rest as content, with tags cut between deltas held back until they are whole."""

    def __init__(self) -> None:
        self.state, self.pending = "start", ""

    def feed(self, delta: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self.pending += delta
        while self.pending:
            if self.state == "start":
                head = self.pending.lstrip()
                if len(head) < len(THINK_OPEN) and THINK_OPEN.startswith(head):
                    return out  # whitespace or a partial tag: wait for more
                self.state = "think" if head.startswith(THINK_OPEN) else "answer"
                if self.state == "think":
                    self.pending = head[len(THINK_OPEN):].lstrip("\n")
            elif self.state == "think":
                cut = self.pending.find(THINK_CLOSE)
                if cut < 0:
                    keep = _partial_suffix(self.pending, THINK_CLOSE)
                    out.append(("reasoning", self.pending[: len(self.pending) - keep]))
                    self.pending = self.pending[len(self.pending) - keep:]
                    return [(c, t) for c, t in out if t]
                out.append(("reasoning", self.pending[:cut]))
                self.pending, self.state = self.pending[cut + len(THINK_CLOSE):], "after"
            elif self.state == "after":  # the answer starts at its first visible character, as split_thinking's
                self.pending = self.pending.lstrip()
                self.state = "answer" if self.pending else "after"
            else:
                out.append(("content", self.pending))
                self.pending = ""
        return [(c, t) for c, t in out if t]


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
        return self.overrides.apply(params)

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
        on_delta = self._delta_handler(channel, prefix)
        stream_generate = getattr(self.inner, "stream_generate", None)
        if callable(stream_generate):
            return await stream_generate(messages, params, prefix, on_delta=on_delta)
        gens = await self.inner.generate(messages, params, prefix)
        on_delta(gens[0].text)
        return gens

    def _delta_handler(self, channel: str, prefix: str) -> Callable[[str], None]:
        """Where a call's deltas go: its channel, or, for an answer that may open its own <think>, a splitter."""
        if channel == "reasoning" or THINK_CLOSE in prefix or self.sent["content"]:
            return lambda delta: self._emit(channel, delta)
        splitter = ThinkSplitter()

        def route(delta: str) -> None:
            for ch, text in splitter.feed(delta):
                self._emit(ch, text)
        return route
