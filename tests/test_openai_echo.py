"""Servers that echo an assistant prefill (llama-server) and servers that do not, through httpx.MockTransport:
the backend returns the continuation only, learns which kind of server it talks to, and never cuts text from a
server that does not echo. The live check against llama-server is in test_llama_server_live.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from ponder.backends.echo import PENDING, EchoFilter, echo_end, strip_echo
from ponder.backends.openai import OpenAIBackend
from ponder.backends.openai_wire import chatml
from ponder.types import SamplingParams, user

MSGS = user("What is 17 * 24?")
PARAMS = SamplingParams(max_tokens=16)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Server:
    """A fake chat server: replies `continuations` in turn, after the prefill when `echo` (as `shown(prefix)`)."""

    def __init__(self, *continuations: str, echo: bool, shown: Any = None, n: int = 1) -> None:
        self.continuations, self.echo, self.n = list(continuations), echo, n
        self.shown = shown or (lambda prefix: prefix)
        self.calls = 0

    def _texts(self, request: httpx.Request) -> list[str]:
        body = json.loads(request.content)
        prefill = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "assistant" else ""
        text = self.continuations[min(self.calls, len(self.continuations) - 1)]
        self.calls += 1
        head = self.shown(prefill) if self.echo else ""
        return [head + text] * self.n

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        texts = self._texts(request)
        if body.get("stream"):
            text = texts[0]
            pieces = [text[i:i + 3] for i in range(0, len(text), 3)]  # the echo split across events
            events = [{"choices": [{"delta": {"content": p}}]} for p in pieces]
            events.append({"choices": [{"delta": {}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
            sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                   for i, t in enumerate(texts)]
        return httpx.Response(200, json={"choices": choices, "usage": {"prompt_tokens": 9, "completion_tokens": 4}})


def backend(server: Server, **kw: Any) -> OpenAIBackend:
    kw.setdefault("prefix_mode", "assistant_prefill")
    return OpenAIBackend("http://test/v1", "m", transport=httpx.MockTransport(server), backoff=0.0, **kw)


# -- finding the echo ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "prefix", "rest"), [
    ("<think>\nLet me", "<think>\n", "Let me"),  # byte-exact
    ("Wait, so", " Wait,", " so"),  # the detokenizer dropped the prefill's leading space
    (" <think>\nHm", "<think>\n", "Hm"),  # ... or added one
    ("Step 1: add.\n\nStep 2", "Step 1: add.\n\n", "Step 2"),
    ("Step 1: add.\nStep 2", "Step 1: add.\n\n", "Step 2"),  # a whitespace run came back shorter
    ("So  the answer", "So the", " answer"),  # ... or longer
    ("<think>Hm", "<think>\n", "Hm"),  # the template trimmed the prefill's trailing newline
])
def test_an_echo_is_found_with_whitespace_matched_loosely(text: str, prefix: str, rest: str) -> None:
    assert strip_echo(text, prefix) == (rest, True)


@pytest.mark.parametrize(("text", "prefix"), [
    ("Let me think", "<think>\n"), ("<thin", "<think>\n"), ("", "<think>\n"), ("Step 2: carry", "Step 1: add."),
    ("<THINK>\nHm", "<think>\n"),
])
def test_a_reply_that_does_not_start_with_the_prefix_is_left_whole(text: str, prefix: str) -> None:
    assert strip_echo(text, prefix) == (text, False)


def test_a_partial_reply_that_could_still_be_the_echo_is_pending() -> None:
    assert echo_end("<thi", "<think>\n", final=False) == PENDING
    assert echo_end("<think>", "<think>\n", final=False) == PENDING  # the newline may still come
    assert echo_end("<think>\nA", "<think>\n", final=False) == len("<think>\n")
    assert echo_end("Let", "<think>\n", final=False) is None


@pytest.mark.parametrize(("pieces", "out", "echoed"), [
    (["<th", "ink", ">\nLet", " me"], ["", "", "Let", " me"], True),
    (["Let", " me"], ["Let", " me"], False),  # passed on at once: not held back
    (["<th", "is"], ["", "<this"], False),  # held only while it could be the echo
])
def test_the_stream_filter_holds_back_only_a_possible_echo(pieces: list[str], out: list[str], echoed: bool) -> None:
    f = EchoFilter("<think>\n")
    assert [f.feed(p) for p in pieces] == out and f.finish() == "" and f.echoed is echoed


def test_a_stream_that_ends_inside_the_echo_gives_nothing_more() -> None:
    f = EchoFilter("<think>\n")
    assert f.feed("<think>") == "" and f.finish() == "" and f.echoed is True


# -- the backend, against a server that echoes and one that does not ---------------------------------------------

def test_an_echoing_server_returns_the_continuation_only() -> None:
    server = Server("17 * 24 = 408.\n</think>", "Wait, 408.", echo=True)
    b = backend(server)
    (g,) = run(b.generate(MSGS, PARAMS, prefix="<think>\n"))
    assert g.text == "17 * 24 = 408.\n</think>" and b.echoes_prefix is True
    (g,) = run(b.generate(MSGS, PARAMS, prefix="<think>\n17 * 24 = 408.\n</think>\n"))
    assert g.text == "Wait, 408." and g.completion_tokens == 4


def test_a_server_that_does_not_echo_keeps_every_continuation_whole() -> None:
    # the second continuation happens to begin with the prefix's own words: it must not be cut
    server = Server("Let me see.", "<think>\nagain", echo=False)
    b = backend(server)
    (g,) = run(b.generate(MSGS, PARAMS, prefix="<think>\n"))
    assert g.text == "Let me see." and b.echoes_prefix is False
    (g,) = run(b.generate(MSGS, PARAMS, prefix="<think>\n"))
    assert g.text == "<think>\nagain"


def test_an_echo_with_a_dropped_leading_space_is_cut() -> None:
    server = Server(" 5, 6", echo=True, shown=lambda p: p.lstrip())  # SentencePiece-style detokenization
    (g,) = run(backend(server).generate(MSGS, PARAMS, prefix=" 1, 2, 3, 4,"))
    assert g.text == " 5, 6"


def test_every_choice_of_an_echoing_server_is_cut() -> None:
    server = Server("A", echo=True, n=2)
    gens = run(backend(server).generate(MSGS, PARAMS.with_(n=2), prefix="Step 1:"))
    assert [g.text for g in gens] == ["A", "A"]


def test_a_whitespace_only_prefix_decides_nothing() -> None:
    server = Server("\nStep 2", echo=False)
    b = backend(server)
    (g,) = run(b.generate(MSGS, PARAMS, prefix="\n"))
    assert g.text == "\nStep 2" and b.echoes_prefix is None  # an echo of "\n" looks like a leading newline


def test_a_learnt_echo_that_a_reply_contradicts_is_unlearnt() -> None:
    server = Server("Step 1: go", "Step 9", echo=False)
    b = backend(server)
    run(b.generate(MSGS, PARAMS, prefix="Step 1:"))  # the model repeated the prefix: taken for an echo
    assert b.echoes_prefix is True
    (g,) = run(b.generate(MSGS, PARAMS, prefix="Step 1:"))
    assert g.text == "Step 9" and b.echoes_prefix is False


def test_echoes_prefix_can_be_given() -> None:
    (g,) = run(backend(Server("<think>\nx", echo=False), echoes_prefix=False).generate(MSGS, PARAMS, "<think>\n"))
    assert g.text == "<think>\nx"
    b = backend(Server("x", "y", echo=False), echoes_prefix=True)
    assert [run(b.generate(MSGS, PARAMS, "\n"))[0].text for _ in range(2)] == ["x", "y"]
    assert b.echoes_prefix is True  # given, so kept


def test_the_completions_api_is_never_cut() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"index": 0, "text": "1, 2, 3, 4, 5", "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    b = OpenAIBackend("http://test/v1", "m", transport=httpx.MockTransport(answer), prefix_mode="completions",
                      render=chatml)
    (g,) = run(b.generate(MSGS, PARAMS, prefix="1, 2,"))
    assert g.text == "1, 2, 3, 4, 5" and b.echoes_prefix is None


def test_streaming_from_an_echoing_server_shows_the_continuation_only() -> None:
    b = backend(Server("<think>\n17 * 24", "more", echo=True))
    shown: list[str] = []

    async def both() -> tuple[str, str]:
        streamed = "".join([d async for d in b.stream(MSGS, PARAMS, prefix="So far: <think>\n")])
        (g,) = await b.stream_generate(MSGS, PARAMS, prefix="So far: <think>\n", on_delta=shown.append)
        return streamed, g.text
    streamed, text = run(both())
    assert streamed == "<think>\n17 * 24" and text == "".join(shown) == "more" and b.echoes_prefix is True


def test_streaming_from_a_server_that_does_not_echo_is_untouched() -> None:
    b = backend(Server("So far: yes", echo=False))

    async def collect() -> str:
        return "".join([d async for d in b.stream(MSGS, PARAMS, prefix="<think>\n")])
    assert run(collect()) == "So far: yes" and b.echoes_prefix is False
