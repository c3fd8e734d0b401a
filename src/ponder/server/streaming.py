"""Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`.

A streamed request runs its plan in a task; the Tap sends text as it is decoded: thinking as `reasoning_content`
deltas (as vLLM and DeepSeek do), and the answer as `content` deltas for strategies that decode it last
(a strategy's `streams_answer`). For the others the answer is known only when solve() returns; it is sent then, with SSE
comments (`: keep-alive`) meanwhile. The last chunk carries finish_reason and the `ponder` block; with
`stream_options.include_usage` a usage chunk with no choices follows, as OpenAI sends it.

Before answering at all, the stream waits briefly for the first text or for the solve to end, so that a backend
that is down still gets its proper status (503, 504) rather than an error event. An error after the response
has started is sent as a `data: {"error": ...}` event, which the openai SDK raises. When the client goes away,
Starlette stops the generator and the solve task is cancelled, freeing its slots in the backend; the response
(`SolveStream`) ends only once the solve has, so the request counts in flight until its sandboxes are dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ponder.ledger import PriceTable
from ponder.server.errors import from_exception
from ponder.server.metrics import Metrics
from ponder.server.responses import Outcome, new_id, ponder_block, usage_body
from ponder.server.routing import Plan
from ponder.server.solving import run_plan

_END = object()


def _event(body: Any) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class StreamRun:
    """One streamed request: the solve task, its queue of deltas, and the chunks made from them."""

    def __init__(self, plan: Plan, backend: Any, prices: PriceTable | None, metrics: Metrics, chat: bool,
                 include_usage: bool, keepalive_s: float) -> None:
        self.plan, self.backend, self.metrics = plan, backend, metrics
        self.chat, self.include_usage, self.keepalive_s = chat, include_usage, keepalive_s
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: dict[int, str] = {}
        """Content sent so far, per choice."""
        self.task = asyncio.create_task(run_plan(plan, backend, prices, self._sink))
        self.ready = asyncio.Event()
        """Set by the first delta or the end of the solve."""
        self.task.add_done_callback(self._done)

    def _done(self, _: object) -> None:
        self.queue.put_nowait(_END)
        self.ready.set()

    def _sink(self, choice: int, channel: str, text: str) -> None:
        self.queue.put_nowait((choice, channel, text))
        self.ready.set()

    async def first(self) -> None:
        """Wait for the first delta or the end of the solve (at most keepalive_s); raise if the solve failed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), self.keepalive_s)
        if self.task.done() and not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]

    def close(self) -> None:
        if not self.task.done():
            self.task.cancel()

    async def aclose(self) -> None:
        """Cancel the solve and wait until it has ended (a cancelled sandbox dies first), through cancellation too."""
        self.close()
        with anyio.CancelScope(shield=True):
            while not self.task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([self.task])

    # -- chunks ---------------------------------------------------------------------------------------------------
    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return _event({"id": self.id, "object": obj, "created": self.created, "model": self.plan.model,
                       "choices": choices, **extra})

    def _delta(self, index: int, channel: str, text: str) -> bytes:
        if not self.chat:
            if channel != "content":
                return b""
            return self._chunk([{"index": index, "text": text, "finish_reason": None, "logprobs": None}])
        key = "reasoning_content" if channel == "reasoning" else "content"
        return self._chunk([{"index": index, "delta": {key: text}, "finish_reason": None, "logprobs": None}])

    def _finish(self, outcome: Outcome) -> list[bytes]:
        out = []
        content = outcome.parts()[1]
        sent = self.sent.get(outcome.index, "")
        if content.startswith(sent) and len(content) > len(sent):
            out.append(self._delta(outcome.index, "content", content[len(sent):]))
        key = "delta" if self.chat else "text"
        last: dict[str, Any] = {"index": outcome.index, key: {} if self.chat else "",
                                "finish_reason": outcome.finish_reason, "logprobs": None}
        out.append(self._chunk([last]))
        return out

    async def events(self) -> AsyncIterator[bytes]:
        """The SSE byte stream; cancels the solve if the consumer stops early."""
        try:
            if self.chat:
                n = len(self.plan.problems) * self.plan.n
                for i in range(n):
                    yield self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None, "logprobs": None}])
            while True:
                try:
                    item = await asyncio.wait_for(self.queue.get(), self.keepalive_s)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if item is _END:
                    break
                index, channel, text = item
                if channel == "content":
                    self.sent[index] = self.sent.get(index, "") + text
                chunk = self._delta(index, channel, text)
                if chunk:
                    yield chunk
            async for chunk in self._tail():
                yield chunk
        finally:
            self.close()

    async def _tail(self) -> AsyncIterator[bytes]:
        try:
            outcomes = self.task.result()
        except Exception as exc:  # the response has started: report the error as an event
            yield _event(from_exception(exc).body())
            yield b"data: [DONE]\n\n"
            return
        for o in outcomes:
            self.metrics.observe_solve(self.plan.label, o.ledger.usage_by_role)
            for chunk in self._finish(o):
                yield chunk
        seconds = time.perf_counter() - self.started
        yield self._chunk([], ponder=ponder_block(self.plan, outcomes, self.backend, seconds))
        if self.include_usage:
            yield self._chunk([], usage=usage_body(outcomes, self.plan.n))
        yield b"data: [DONE]\n\n"


class SolveStream(StreamingResponse):
    """A StreamRun's SSE response. It returns only once the solve has ended, so the gate counts the request in
    flight until its work (sandboxes included) is over, even when the client left early."""

    def __init__(self, run: StreamRun) -> None:
        super().__init__(run.events(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.run.aclose()
