"""The tap: a model that thinks natively (`<think>...</think>` in its own output) is split into reasoning and content,
the same way whether the answer is streamed or not, wherever the deltas happen to cut the tags."""

from __future__ import annotations

import random

import openai
import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.server import create_app
from ponder.server.tap import ThinkSplitter, split_thinking
from test_server import live_server

NATIVE = "<think>\nIs it 5? No: 2+2 is 4.\n</think>\n\nThe answer is 4."


@pytest.mark.parametrize("text", [NATIVE, "  <think>a </thin b</think>  c", "No thinking <think> here",
                                  "<think>cut off while thinking", "<think></think>"])
def test_splitter_agrees_with_the_final_split_wherever_deltas_cut(text: str) -> None:
    thinking, answer = split_thinking(text)
    rng = random.Random(text)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(10, len(text) - 1))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        splitter, routed = ThinkSplitter(), []
        for piece in pieces:
            routed += splitter.feed(piece)
        assert "".join(t for ch, t in routed if ch == "content") == answer
        reasoning = "".join(t for ch, t in routed if ch == "reasoning")
        assert reasoning.strip() == (thinking or "").strip()


def test_native_thinking_is_reasoning_content_streamed_or_not() -> None:
    app = create_app(ScriptedBackend(lambda call, i: NATIVE, model="thinker"))
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "2+2?"}]
        whole = client.chat.completions.create(model="thinker", messages=messages).choices[0].message
        assert whole.content == "The answer is 4."
        assert whole.model_extra["reasoning_content"] == "Is it 5? No: 2+2 is 4."
        order, reasoning, content = [], "", ""
        for chunk in client.chat.completions.create(model="thinker", messages=messages, stream=True):
            for choice in chunk.choices:
                extra = (choice.delta.model_extra or {}).get("reasoning_content")
                if extra:
                    reasoning += extra
                    order.append("r")
                if choice.delta.content:
                    content += choice.delta.content
                    order.append("c")
    assert content == whole.content and reasoning.strip() == whole.model_extra["reasoning_content"]
    assert order == sorted(order, reverse=True)  # all reasoning before any content
