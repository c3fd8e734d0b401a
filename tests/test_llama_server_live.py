"""The prefix modes against llama.cpp's own `llama-server` (a real upstream, as a user runs it) with the tiny model.

llama-server answers a trailing assistant message with the prefill and its continuation in `content`; the backend
must return the continuation only, so budget forcing's thinking holds one "<think>" and a beam step is not the
beam's text again. The binary is the one `ponder models build-server` caches; the tests skip, saying why, when
it is not built, and build it here (several minutes) only when PONDER_BUILD_LLAMA_SERVER=1.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from _servers import TINY_MODEL
from ponder.backends.factory import open_backend
from ponder.backends.openai import OpenAIBackend
from ponder.errors import ModelError
from ponder.models import llama_server
from ponder.strategies.base import solve
from ponder.strategies.beam_search import BeamSearch
from ponder.strategies.budget_forcing import BudgetForcing
from ponder.types import Generation, Message, Problem, SamplingParams

pytestmark = pytest.mark.slow

QUESTION = "What is 17 * 24?"


def _binary() -> Path:
    if found := llama_server.cached():
        return found
    if os.environ.get("PONDER_BUILD_LLAMA_SERVER") != "1":
        pytest.skip(f"llama-server is not built ({llama_server.binary_path()} is missing): run `ponder models "
                    "build-server` once (several minutes), or set PONDER_BUILD_LLAMA_SERVER=1 to build it here")
    if missing := llama_server.missing_tools():
        pytest.skip(f"llama-server cannot be built here: {' and '.join(missing)} not found on PATH")
    try:
        return llama_server.build()
    except ModelError as exc:
        pytest.skip(f"llama-server could not be built: {exc}")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    if not TINY_MODEL.exists():
        pytest.skip(f"{TINY_MODEL} is not pulled")
    # one slot: every request reuses the same cached prompt, so greedy replies compare exactly
    with llama_server.running(TINY_MODEL, binary=_binary(), n_ctx=4096, parallel=1) as base:
        yield base


class Recording:
    """A backend wrapper that keeps (prefix, texts) of every generate call."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.model, self.calls = inner, inner.model, []

    async def generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "") -> list[Generation]:
        gens = await self.inner.generate(messages, params, prefix)
        self.calls.append((prefix, [g.text for g in gens]))
        return gens

    def prefixed(self) -> list[tuple[str, list[str]]]:
        return [(p, texts) for p, texts in self.calls if p.strip()]


def _no_echo(rec: Recording) -> None:
    for prefix, texts in rec.prefixed():
        for text in texts:
            assert not text.lstrip().startswith(prefix.strip()), (prefix, text)


def test_the_server_echoes_the_prefill_and_the_backend_returns_the_continuation_only(url: str) -> None:
    msgs = (Message("user", "Count from 1 to 10."),)
    prefix = "1, 2, 3, 4,"
    body = {"model": "m", "messages": [*[m.to_dict() for m in msgs], {"role": "assistant", "content": prefix}],
            "max_tokens": 8, "temperature": 0.0, "seed": 1}
    for _ in range(2):  # the second reply comes from the warm prompt cache, as the backend's will
        raw = httpx.post(f"{url}/chat/completions", json=body, timeout=120).json()["choices"][0]["message"]["content"]
    b = OpenAIBackend(url, "m", timeout=120)
    params = SamplingParams(max_tokens=8, temperature=0.0, seed=1)

    async def both() -> tuple[str, str]:
        (g,) = await b.generate(msgs, params, prefix)
        return g.text, "".join([d async for d in b.stream(msgs, params, prefix)])
    text, streamed = asyncio.run(both())
    assert b.prefix_mode == "assistant_prefill"  # auto: owned_by "llamacpp"
    assert b.echoes_prefix is raw.startswith(prefix)  # learnt from the reply, whichever way the server behaves
    assert raw == (prefix if b.echoes_prefix else "") + text and not text.startswith(prefix)
    assert streamed == text  # the stream's first delta carries the echo too


def test_budget_forcing_thinks_inside_one_think_tag(url: str) -> None:
    rec = Recording(open_backend(f"{url}#smollm2", timeout=120))
    strategy = BudgetForcing(min_thinking_tokens=24, max_thinking_tokens=48, max_waits=1, answer_max_tokens=16,
                             seed=1)
    result = asyncio.run(solve(strategy, Problem("p", QUESTION, answer="408"), rec))
    assert result.text.startswith("<think>\n") and result.text.count("<think>") == 1, result.text
    assert result.text.count("</think>") == 1 and len(rec.prefixed()) >= 2
    _no_echo(rec)


def test_beam_search_steps_are_not_repeated(url: str) -> None:
    rec = Recording(open_backend(f"{url}#smollm2", timeout=120))
    strategy = BeamSearch(beam_width=2, expansions=2, max_steps=3, max_step_tokens=24, seed=3,
                          verifier=lambda problem, texts: [0.5] * len(texts))
    result = asyncio.run(solve(strategy, Problem("p", QUESTION, answer="408"), rec))
    assert rec.prefixed(), rec.calls  # a second step continued a beam
    _no_echo(rec)  # a step is new text, not the beam so far again
    for cand in result.candidates:
        first = cand.text.split("\n\n", 1)[0]
        assert not cand.text.startswith(f"{first}\n\n{first}"), cand.text  # the doubling the issue showed
