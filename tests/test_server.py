"""`ponder serve` through the official openai client, against a real uvicorn server on 127.0.0.1.

The backend is the scripted one, so every answer, vote and token count is known in advance. `LiveServer` (also
used by the other test_server_* files) runs uvicorn in a thread on a free port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from ponder.backends.scripted import ScriptedBackend, ScriptedCall, count_tokens
from ponder.server import ServerConfig, create_app

THOUGHT = "Two and two make four."
MODEL = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app: object) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields the base URL (…/v1)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def arithmetic(call: ScriptedCall, i: int) -> str:
    """Thinking when asked to think, a short answer after thinking, and voted answers otherwise (4,4,5,4,5,...)."""
    if "</think>" in call.prefix:
        return " 4"
    if call.prefix.startswith("<think>"):
        return THOUGHT
    if call.params.max_tokens == 1 and call.params.logprobs:  # a self-evaluation question
        return "Yes"
    return f"So the answer is {5 if i % 3 == 2 else 4}."


@pytest.fixture(scope="module")
def backend() -> ScriptedBackend:
    return ScriptedBackend(arithmetic, model=MODEL)


@pytest.fixture(scope="module")
def client(backend: ScriptedBackend) -> Iterator[openai.OpenAI]:
    with live_server(create_app(backend)) as url:
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)


def ask(client: openai.OpenAI, **kwargs: object) -> object:
    return client.chat.completions.create(model=kwargs.pop("model", MODEL),  # type: ignore[call-overload]
                                          messages=[{"role": "user", "content": "What is 2+2?"}], **kwargs)


def test_plain_request_is_one_cot_call_with_the_clients_settings(client, backend) -> None:
    before = len(backend.calls)
    reply = ask(client, temperature=0.3, max_tokens=50, seed=7, stop=["zzz"])
    call = backend.calls[before]
    assert len(backend.calls) == before + 1
    assert (call.params.temperature, call.params.max_tokens, call.params.seed) == (0.3, 50, 7)
    assert "zzz" in call.params.stop
    assert [m.role for m in call.messages] == ["user"]  # no system prompt of ours on a plain request
    assert reply.choices[0].message.content == "So the answer is 4."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == count_tokens("So the answer is 4.")
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0
    assert reply.model_extra["ponder"]["strategy"] == "cot"


def test_n_gives_independent_choices(client) -> None:
    reply = ask(client, n=3, seed=1)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.completion_tokens == 3 * count_tokens("So the answer is 4.")


def test_n_counts_the_prompt_once_like_one_call_with_n_samples(client) -> None:
    one = ask(client, seed=1)
    three = ask(client, n=3, seed=1)
    assert three.usage.prompt_tokens == one.usage.prompt_tokens > 0  # as self_consistency-3's one call with n=3
    assert three.usage.total_tokens == three.usage.prompt_tokens + three.usage.completion_tokens
    assert three.usage.prompt_tokens_details.cached_tokens <= three.usage.prompt_tokens


def test_reasoning_effort_selects_the_configured_strategy(client) -> None:
    # a math prompt: self_consistency n=4 by default
    reply = ask(client, reasoning_effort="medium", extra_body={"ponder": {"kind": "math"}})
    block = reply.model_extra["ponder"]
    assert block["strategy"] == "self_consistency" and block["params"]["n"] == 4
    assert block["choices"][0]["votes"] == {"4": 3.0, "5": 1.0}
    assert reply.choices[0].message.content == "So the answer is 4."
    per_sample = count_tokens("So the answer is 4.")
    assert reply.usage.completion_tokens == 4 * per_sample
    # the three samples not returned are reasoning tokens
    assert reply.usage.completion_tokens_details.reasoning_tokens == 3 * per_sample


def test_model_name_carries_the_strategy_and_its_budget(client) -> None:
    reply = ask(client, model=f"self_consistency-6:{MODEL}")
    block = reply.model_extra["ponder"]
    assert block["strategy"] == "self_consistency" and block["params"]["n"] == 6
    assert len(block["choices"][0]["candidates"]) == 6
    assert block["choices"][0]["votes"] == {"4": 4.0, "5": 2.0}


def test_extra_body_gives_full_control_and_usage_counts_the_verifier(client) -> None:
    reply = ask(client, extra_body={"ponder": {"strategy": "best_of_n", "params": {"n": 3},
                                               "budget": {"tokens": 1000}}})
    block = reply.model_extra["ponder"]
    assert block["strategy"] == "best_of_n" and block["budget"]["tokens"] == 1000
    roles = block["usage_by_role"]
    assert set(roles) == {"policy", "verifier"}
    assert roles["verifier"]["completion_tokens"] == 3  # one "Yes" per candidate
    assert reply.usage.completion_tokens == roles["policy"]["completion_tokens"] + 3
    assert reply.usage.prompt_tokens == roles["policy"]["prompt_tokens"] + roles["verifier"]["prompt_tokens"]


def test_budget_forcing_returns_thinking_apart_from_the_answer(client) -> None:
    reply = ask(client, extra_body={"ponder": {"strategy": "budget_forcing"}})
    message = reply.choices[0].message
    assert message.content == "4"
    assert message.model_extra["reasoning_content"] == THOUGHT
    assert reply.usage.completion_tokens_details.reasoning_tokens == count_tokens(THOUGHT)


def test_streaming_sends_thinking_as_reasoning_content_then_the_answer(client) -> None:
    stream = ask(client, stream=True, stream_options={"include_usage": True},
                 extra_body={"ponder": {"strategy": "budget_forcing", "params": {"min_thinking_tokens": 8}}})
    kinds, reasoning, content, finish, usage = [], "", "", None, None
    for chunk in stream:  # the SDK stops at [DONE]
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            if extra.get("reasoning_content"):
                reasoning += extra["reasoning_content"]
                kinds.append("reasoning")
            if choice.delta.content:
                content += choice.delta.content
                kinds.append("content")
            finish = choice.finish_reason or finish
    assert kinds.index("content") > kinds.index("reasoning")
    assert "content" not in kinds[: kinds.index("content")] and "reasoning" not in kinds[kinds.index("content"):]
    assert reasoning == f"{THOUGHT}\nWait{THOUGHT}"  # the forced "Wait" is streamed too (min_thinking_tokens)
    assert content == "4" and finish == "stop"
    assert usage is not None and usage.completion_tokens == 2 * count_tokens(THOUGHT) + 1


def test_reasoning_effort_on_an_open_prompt_thinks_longer_and_streams_the_thinking(client, backend) -> None:
    levels = {}
    for level in ("low", "high"):  # a chat is an open prompt unless it says ponder.kind
        before = len(backend.calls)
        reply = ask(client, reasoning_effort=level)
        block = reply.model_extra["ponder"]
        assert block["strategy"] == "budget_forcing" and reply.choices[0].message.content == "4"
        assert reply.choices[0].message.model_extra["reasoning_content"] == THOUGHT
        levels[level] = backend.calls[before].params.max_tokens  # the first thinking call's cap
    assert levels == {"low": 128, "high": 512}  # 128 x k thinking tokens
    before = len(backend.calls)
    ask(client, reasoning_effort="low", max_tokens=40)  # the client's cap holds for the answer after thinking
    assert backend.calls[-1].prefix.endswith("</think>\n\n") and backend.calls[-1].params.max_tokens == 40
    assert len(backend.calls) == before + 2
    stream = ask(client, stream=True, reasoning_effort="medium")
    chunks = [c.choices[0].delta for c in stream if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in chunks) == THOUGHT
    assert "".join(d.content or "" for d in chunks) == "4"


def test_streaming_a_voting_strategy_sends_the_final_answer(client) -> None:
    stream = ask(client, stream=True, reasoning_effort="high", extra_body={"ponder": {"kind": "math"}})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "So the answer is 4."


def test_streaming_plain_request_streams_tokens(client) -> None:
    pieces = [c.choices[0].delta.content for c in ask(client, stream=True) if c.choices and c.choices[0].delta.content]
    assert len(pieces) == count_tokens("So the answer is 4.")
    assert "".join(pieces) == "So the answer is 4."


def test_completions_endpoint(client) -> None:
    reply = client.completions.create(model=MODEL, prompt=["2+2?", "3+1?"], n=2)
    assert len(reply.choices) == 4 and all(c.text == "So the answer is 4." for c in reply.choices)


def test_unknown_strategy_is_a_400_listing_the_valid_ones(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, extra_body={"ponder": {"strategy": "self_consistancy"}})
    message = caught.value.body["message"]
    assert "self_consistancy" in message and "self_consistency" in message and "budget_forcing" in message
    with pytest.raises(openai.BadRequestError):
        ask(client, model=f"nope-4:{MODEL}")


def test_unknown_param_is_a_400_naming_it(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, extra_body={"ponder": {"strategy": "self_consistency", "params": {"beams": 3}}})
    assert "beams" in caught.value.body["message"] and "temperature" in caught.value.body["message"]
    assert caught.value.body["param"] == "ponder.params"


def test_unknown_reasoning_effort_lists_the_levels(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, reasoning_effort="extreme")
    assert "medium" in caught.value.body["message"]


def test_models_lists_the_served_model_and_the_strategies(client) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert "budget_forcing" in models.data[0].model_extra["ponder"]["strategies"]
    assert client.models.retrieve(f"self_consistency-8:{MODEL}").id == f"self_consistency-8:{MODEL}"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")


def test_server_key_is_required_and_checked(backend, monkeypatch) -> None:
    monkeypatch.setenv("PONDER_TEST_KEY", "sesame-123")
    app = create_app(backend, config=ServerConfig(api_key_env="PONDER_TEST_KEY"))
    with live_server(app) as url:
        good = openai.OpenAI(base_url=url, api_key="sesame-123", max_retries=0)
        assert ask(good).choices[0].message.content == "So the answer is 4."
        with pytest.raises(openai.AuthenticationError):
            ask(openai.OpenAI(base_url=url, api_key="sesame-124", max_retries=0))
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # health stays open


def test_over_max_concurrency_is_a_429_with_retry_after() -> None:
    slow = ScriptedBackend(lambda call, i: "ok", model=MODEL, latency=1.0)
    app = create_app(slow, config=ServerConfig(max_concurrency=1, retry_after_s=3))
    with live_server(app) as url:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=url, timeout=10) as http:
            first = threading.Thread(target=lambda: http.post("/chat/completions", json=body))
            first.start()
            time.sleep(0.3)
            refused = http.post("/chat/completions", json=body)
            first.join()
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError), httpx.Client(base_url=url, timeout=10) as http:  # the SDK too
            blocker = threading.Thread(target=lambda: http.post("/chat/completions", json=body))
            blocker.start()
            time.sleep(0.3)
            try:
                ask(openai.OpenAI(base_url=url, api_key="x", max_retries=0))
            finally:
                blocker.join()


def test_oversized_body_is_a_413(backend) -> None:
    app = create_app(backend, config=ServerConfig(max_body_bytes=2000))
    with live_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 5000}])
        assert caught.value.status_code == 413
        assert caught.value.body["code"] == "request_too_large"


TINY = Path.home() / ".cache" / "ponder" / "models" / "smollm2-135m.gguf"


@pytest.mark.slow
@pytest.mark.skipif(not TINY.exists(), reason="the tiny model is not pulled")
def test_tiny_real_model_through_the_sdk() -> None:
    from ponder.backends.llamacpp import LlamaCppBackend

    with LlamaCppBackend(TINY, n_ctx=2048, n_seq_max=4) as engine, live_server(create_app(engine)) as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=300)
        reply = ask(client, max_tokens=8, temperature=0)
        assert reply.choices[0].message.content.strip()
        assert 0 < reply.usage.completion_tokens <= 8
        pieces = [c.choices[0].delta.content for c in ask(client, max_tokens=8, temperature=0, stream=True)
                  if c.choices and c.choices[0].delta.content]
        assert len(pieces) > 1  # token by token (LlamaCppBackend.stream_generate)
        assert "".join(pieces) == reply.choices[0].message.content  # greedy: the same text, streamed
        voted = ask(client, model="self_consistency-2:smollm2", max_tokens=8)
        assert voted.usage.completion_tokens > reply.usage.completion_tokens - 1
        assert len(voted.model_extra["ponder"]["choices"][0]["candidates"]) == 2
        thinking = ask(client, stream=True, extra_body={"ponder": {"strategy": "budget_forcing", "params": {
            "max_thinking_tokens": 8, "answer_max_tokens": 4}}})
        deltas = [(c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in thinking if c.choices]
        assert len([d for d in deltas if d]) > 1  # the engine's thinking arrives as it is decoded


def test_streaming_n_choices_and_completions(client) -> None:
    texts: dict[int, str] = {}
    finished = set()
    for chunk in ask(client, stream=True, n=2):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert texts == {0: "So the answer is 4.", 1: "So the answer is 4."} and finished == {0, 1}
    stream = client.completions.create(model=MODEL, prompt="2+2?", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "So the answer is 4."
