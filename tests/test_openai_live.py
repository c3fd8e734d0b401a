"""OpenAIBackend against real sockets: a fault-injecting local server (500s, 429s, hangs, dropped connections),
and, marked slow, the real llama-cpp-python server (`python -m llama_cpp.server`) with the tiny model."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from _servers import TINY_MODEL, FaultServer, free_port, llama_cpp_server
from ponder.backends.openai import OpenAIBackend
from ponder.backends.openai_wire import chatml
from ponder.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ponder.types import Message, SamplingParams, user

MSGS = user("What is 2+2?")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- faults from a real socket ------------------------------------------------------------------------------------

def _fault_backend(url: str, **kw: Any) -> OpenAIBackend:
    kw.setdefault("timeout", 2.0)
    return OpenAIBackend(url, "fake", max_retries=kw.pop("max_retries", 2), backoff=0.01, **kw)


def test_fault_500_twice_then_ok() -> None:
    with FaultServer(["500", "500", "ok"]) as server:
        (g,) = run(_fault_backend(server.url).generate(MSGS, SamplingParams()))
    assert g.text == "hello there" and g.usage.prompt_tokens == 5 and server.requests == 3


@pytest.mark.parametrize(("action", "error", "status"), [
    ("500", UpstreamError, 500), ("429", UpstreamError, 429), ("drop", UpstreamError, None),
    ("refuse", UpstreamError, None),
])
def test_fault_retries_are_bounded(action: str, error: type[Exception], status: int | None) -> None:
    with FaultServer([action]) as server:
        start = time.monotonic()
        with pytest.raises(error) as info:
            run(_fault_backend(server.url).generate(MSGS, SamplingParams()))
        elapsed = time.monotonic() - start
    assert server.requests == 3 and getattr(info.value, "status", None) == status
    assert not isinstance(info.value, UpstreamTimeout) and elapsed < 2.0


def test_fault_hang_times_out() -> None:
    with FaultServer(["hang"], hang_s=3.0) as server:
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="timed out"):
            run(_fault_backend(server.url, timeout=0.3, max_retries=1).generate(MSGS, SamplingParams()))
        elapsed = time.monotonic() - start
    assert server.requests == 2 and elapsed < 1.5


def test_fault_nothing_listening_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        run(_fault_backend(url, max_retries=1).generate(MSGS, SamplingParams()))


# -- the real llama-cpp-python server (slow) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_url() -> Any:
    if not TINY_MODEL.exists():
        pytest.skip(f"{TINY_MODEL} is not pulled")
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python's server extra")
    with llama_cpp_server() as url:
        yield url


@pytest.mark.slow
def test_real_server_n_fallback_usage_and_seed(llama_url: str) -> None:
    b = OpenAIBackend(llama_url, "smollm2", timeout=120)
    params = SamplingParams(max_tokens=8, temperature=0.8, n=2, seed=11)
    msgs = user("Name a colour.")
    gens = run(b.generate(msgs, params))
    assert len(gens) == 2 and b.supports_n is False  # llama-cpp-python ignores n
    assert all(0 < g.completion_tokens <= 8 for g in gens) and b.usage_estimated == 0
    assert all(g.usage.prompt_tokens > 5 for g in gens)  # each fanned-out request paid its own prefill
    # The server's first, cold-cache prefill differs numerically from later cached ones, so compare two warm calls.
    again, third = run(b.generate(msgs, params)), run(b.generate(msgs, params))
    assert [g.text for g in again] == [g.text for g in third]  # seed + i per generation reproduces the request


@pytest.mark.slow
def test_real_server_stream_matches_generate(llama_url: str) -> None:
    b = OpenAIBackend(llama_url, "smollm2", timeout=120)
    params = SamplingParams(max_tokens=8, temperature=0.0)
    msgs = (Message("user", "Say hello."),)

    async def both() -> tuple[str, str]:
        streamed = "".join([d async for d in b.stream(msgs, params)])
        (g,) = await b.generate(msgs, params)
        return streamed, g.text
    streamed, text = run(both())
    assert streamed and streamed == text


@pytest.mark.slow
def test_real_server_prefix_continues_through_completions(llama_url: str) -> None:
    b = OpenAIBackend(llama_url, "smollm2", timeout=120, render=chatml)
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=True)
    (g,) = run(b.generate(user("Count from 1 to 10."), params, prefix="1, 2, 3, 4,"))
    assert b.prefix_mode == "completions"  # auto: owned_by "me" -> the completions API with the template
    assert g.text.lstrip().startswith("5") and g.logprobs is not None and len(g.logprobs) == g.completion_tokens


def test_a_stream_broken_after_its_first_event_is_reported_not_retried() -> None:
    got: list[str] = []

    async def partial(b: OpenAIBackend) -> None:
        async for d in b.stream(MSGS, SamplingParams()):
            got.append(d)
    with FaultServer(["sse_drop"]) as server, pytest.raises(UpstreamError, match="mid-stream"):
        run(partial(_fault_backend(server.url)))
    assert got == ["hel"] and server.requests == 1  # what was shown is kept; a half-shown stream is not retried


@pytest.mark.slow
def test_real_llama_cpp_python_opens_a_new_turn_after_a_trailing_assistant_message(llama_url: str) -> None:
    """Why auto picks the completions API there: its chat endpoint closes the prefill turn and opens another."""
    msgs = (Message("system", "You count."), Message("user", "Count from 1 to 10."))
    params = SamplingParams(max_tokens=1, temperature=0.0)

    async def prompt_tokens(mode: str) -> int:
        b = OpenAIBackend(llama_url, "smollm2", timeout=120, prefix_mode=mode, render=chatml)  # type: ignore[arg-type]
        (g,) = await b.generate(msgs, params, prefix="1, 2, 3, 4,")
        return g.usage.prompt_tokens
    prefill, completions = run(prompt_tokens("assistant_prefill")), run(prompt_tokens("completions"))
    # "<|im_end|>\n<|im_start|>assistant\n" was added after the prefix: a new turn, not a continuation
    assert prefill - completions >= 4, (prefill, completions)
