"""OpenAIBackend through httpx.MockTransport: wire mapping, n fallback, prefix modes, retries, streaming and API
key hygiene. Real sockets (fault server, llama-cpp-python server) are in test_openai_live.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ponder.backends.openai import OpenAIBackend
from ponder.backends.openai_wire import chatml
from ponder.errors import (
    BackendError,
    ContextOverflow,
    InvalidParameter,
    UpstreamError,
)
from ponder.ledger import Ledger
from ponder.types import SamplingParams, user

SENTINEL = "sk-SENTINEL-do-not-leak-4242"
MSGS = user("What is 2+2?")


def completion(texts: list[str], usage: dict[str, Any] | None = None, **choice: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"choices": [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop", **choice}
        for i, t in enumerate(texts)]}
    if usage is not None:
        body["usage"] = usage
    return body


class Recorder:
    """A MockTransport handler that records requests and answers with `answer(request, index)`."""

    def __init__(self, answer: Callable[[httpx.Request, int], httpx.Response]) -> None:
        self.answer, self.requests = answer, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request, len(self.requests) - 1)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


def backend(handler: Any, **kw: Any) -> OpenAIBackend:
    kw.setdefault("backoff", 0.0)
    return OpenAIBackend("http://test/v1", "m", transport=httpx.MockTransport(handler), **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- mapping ------------------------------------------------------------------------------------------------------

def test_request_fields_and_response_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    lp = {"content": [{"token": "4", "logprob": -0.1, "top_logprobs": [{"token": "4", "logprob": -0.1},
                                                                        {"token": "5", "logprob": -2.5}]},
                      {"token": ".", "logprob": -0.3, "top_logprobs": []}]}
    body = completion(["4."], {"prompt_tokens": 11, "completion_tokens": 2,
                               "prompt_tokens_details": {"cached_tokens": 6}}, logprobs=lp)
    body["choices"][0]["finish_reason"] = "length"
    rec = Recorder(lambda r, i: httpx.Response(200, json=body))
    params = SamplingParams(max_tokens=7, temperature=0.3, top_p=0.9, stop=("\n",), seed=5, logprobs=True,
                            top_logprobs=2)
    (g,) = run(backend(rec).generate(MSGS, params))
    sent = rec.bodies()[0]
    assert rec.requests[0].url.path == "/v1/chat/completions"
    assert rec.requests[0].headers["authorization"] == f"Bearer {SENTINEL}"
    assert sent == {"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 7,
                    "temperature": 0.3, "top_p": 0.9, "stop": ["\n"], "seed": 5, "logprobs": True, "top_logprobs": 2}
    assert (g.text, g.finish_reason, g.completion_tokens) == ("4.", "length", 2)
    assert (g.usage.prompt_tokens, g.usage.completion_tokens, g.usage.cached_tokens) == (11, 2, 6)
    assert g.logprobs is not None and [t.token for t in g.logprobs] == ["4", "."]
    assert g.logprobs[0].top == {"4": -0.1, "5": -2.5}


def test_no_key_means_no_authorization_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rec = Recorder(lambda r, i: httpx.Response(200, json=completion(["a"], {"prompt_tokens": 1,
                                                                            "completion_tokens": 1})))
    run(backend(rec).generate(MSGS, SamplingParams()))
    assert "authorization" not in rec.requests[0].headers


def test_n_honoured_in_one_request_and_usage_split() -> None:
    rec = Recorder(lambda r, i: httpx.Response(200, json=completion(
        ["aaaa", "bbbbbbbbbbbb"], {"prompt_tokens": 9, "completion_tokens": 8})))
    b = backend(rec)
    gens = run(b.generate(MSGS, SamplingParams(n=2)))
    assert len(rec.requests) == 1 and rec.bodies()[0]["n"] == 2
    assert b.supports_n is True
    assert [g.usage.prompt_tokens for g in gens] == [9, 0]  # the shared prompt is charged once
    assert [g.completion_tokens for g in gens] == [2, 6]  # split by text length, summing to the server's total


def test_n_ignored_falls_back_to_fan_out_once_and_remembers() -> None:
    rec = Recorder(lambda r, i: httpx.Response(200, json=completion(
        [f"s{i}"], {"prompt_tokens": 3, "completion_tokens": 1})))
    b = backend(rec)
    gens = run(b.generate(MSGS, SamplingParams(n=3, seed=7)))
    assert gens[0].text == "s0" and len(gens) == 3
    assert b.supports_n is False
    first, *rest = rec.bodies()
    assert first["n"] == 3 and first["seed"] == 7
    assert sorted(r["seed"] for r in rest) == [8, 9] and all("n" not in r for r in rest)
    rec.requests.clear()
    gens = run(b.generate(MSGS, SamplingParams(n=2, seed=1)))  # now fans out straight away
    assert len(gens) == 2 and len(rec.requests) == 2
    assert sorted(r["seed"] for r in rec.bodies()) == [1, 2]


def test_n_refused_with_a_400_falls_back_to_fan_out() -> None:
    def answer(r: httpx.Request, i: int) -> httpx.Response:
        if json.loads(r.content).get("n"):  # llama-server: n may not exceed its slot count
            return httpx.Response(400, json={"error": {"code": 400, "type": "invalid_request_error", "message":
                                                       "Field 'n': Value must be between 1 <= value <= 1, but got 2"}})
        return httpx.Response(200, json=completion([f"s{i}"], {"prompt_tokens": 3, "completion_tokens": 1}))
    rec = Recorder(answer)
    b = backend(rec)
    gens = run(b.generate(MSGS, SamplingParams(n=2, seed=7)))
    assert len(gens) == 2 and b.supports_n is False and len(rec.requests) == 3
    assert sorted(r["seed"] for r in rec.bodies()[1:]) == [7, 8]
    rec2 = Recorder(lambda r, i: httpx.Response(400, json={"error": {"message": "Field 'temperature': bad"}}))
    with pytest.raises(UpstreamError, match="temperature"):  # another 400 is the caller's to see, not fanned out
        run(backend(rec2).generate(MSGS, SamplingParams(n=2)))
    assert len(rec2.requests) == 1


def test_usage_missing_is_estimated_not_zero() -> None:
    rec = Recorder(lambda r, i: httpx.Response(200, json=completion(["twelve chars"])))
    b = backend(rec)
    (g,) = run(b.generate(user("x" * 40), SamplingParams()))
    assert g.usage.prompt_tokens == 10 and g.completion_tokens == 3
    assert b.usage_estimated == 1


def test_completions_logprobs_format_counts_tokens() -> None:
    body = {"choices": [{"index": 0, "text": " 6, 7", "finish_reason": "length",
                         "logprobs": {"tokens": [" ", "6", ",", " 7"], "token_logprobs": [-0.1, -0.2, -0.3, -0.4],
                                      "top_logprobs": [{" ": -0.1}, {"6": -0.2, "7": -3.0}, {",": -0.3},
                                                       {" 7": -0.4}]}}]}
    rec = Recorder(lambda r, i: httpx.Response(200, json=body))
    b = backend(rec, prefix_mode="completions", render=chatml)
    (g,) = run(b.generate(MSGS, SamplingParams(logprobs=True, top_logprobs=2), prefix="4, 5,"))
    assert rec.requests[0].url.path == "/v1/completions"
    assert rec.bodies()[0]["prompt"].endswith("<|im_start|>assistant\n4, 5,")
    assert rec.bodies()[0]["logprobs"] == 2
    assert g.completion_tokens == 4 and g.logprobs is not None and g.logprobs[1].top == {"6": -0.2, "7": -3.0}
    assert b.usage_estimated == 1


def test_metered_backend_charges_the_servers_usage() -> None:
    rec = Recorder(lambda r, i: httpx.Response(200, json=completion(
        ["a", "b"], {"prompt_tokens": 20, "completion_tokens": 4})))
    ledger = Ledger()
    run(ledger.meter(backend(rec)).generate(MSGS, SamplingParams(n=2)))
    total = ledger.total
    assert (total.prompt_tokens, total.completion_tokens, total.calls) == (20, 4, 1)


# -- continuing a prefix ------------------------------------------------------------------------------------------

def _ok(r: httpx.Request, i: int) -> httpx.Response:
    return httpx.Response(200, json=completion([" 6"], {"prompt_tokens": 4, "completion_tokens": 1}))


@pytest.mark.parametrize(("mode", "extra"), [
    ("continue_final_message", {"continue_final_message": True, "add_generation_prompt": False}),
    ("assistant_prefill", {}),
])
def test_prefix_as_trailing_assistant_message(mode: str, extra: dict[str, Any]) -> None:
    rec = Recorder(_ok)
    (g,) = run(backend(rec, prefix_mode=mode).generate(MSGS, SamplingParams(), prefix="4, 5,"))
    sent = rec.bodies()[0]
    assert sent["messages"][-1] == {"role": "assistant", "content": "4, 5,"}
    assert {k: sent[k] for k in extra} == extra
    assert "continue_final_message" in sent if extra else "continue_final_message" not in sent
    assert g.text == " 6"


def test_prefix_mode_none_names_servers_that_can() -> None:
    rec = Recorder(_ok)
    with pytest.raises(BackendError, match="vLLM and SGLang"):
        run(backend(rec, prefix_mode="none").generate(MSGS, SamplingParams(), prefix="so"))
    assert rec.requests == []
    run(backend(rec, prefix_mode="none").generate(MSGS, SamplingParams()))  # without a prefix it is fine


def _models(owner: str, post: Callable[[httpx.Request, int], httpx.Response] = _ok) -> Recorder:
    def answer(r: httpx.Request, i: int) -> httpx.Response:
        if r.method == "GET":
            return httpx.Response(200, json={"data": [{"id": "m", "owned_by": owner}]})
        return post(r, i)
    return Recorder(answer)


@pytest.mark.parametrize(("owner", "render", "path", "mode"), [
    ("vllm", None, "/v1/chat/completions", "continue_final_message"),
    ("llamacpp", None, "/v1/chat/completions", "assistant_prefill"),
    ("me", chatml, "/v1/completions", "completions"),
])
def test_auto_prefix_mode_from_owned_by(owner: str, render: Any, path: str, mode: str) -> None:
    rec = _models(owner)
    b = backend(rec, render=render)
    run(b.generate(MSGS, SamplingParams(), prefix="a"))
    run(b.generate(MSGS, SamplingParams(), prefix="b"))
    assert [r.method for r in rec.requests] == ["GET", "POST", "POST"]  # /models asked once
    assert rec.requests[1].url.path == path and b.prefix_mode == mode


def test_auto_on_openai_or_templateless_llama_cpp_python_refuses_a_prefix() -> None:
    for owner in ("openai", "me"):
        with pytest.raises(BackendError, match="cannot continue"):
            run(backend(_models(owner)).generate(MSGS, SamplingParams(), prefix="a"))


def test_auto_unknown_server_falls_back_to_assistant_prefill_on_400() -> None:
    def post(r: httpx.Request, i: int) -> httpx.Response:
        if "continue_final_message" in json.loads(r.content):
            return httpx.Response(400, json={"error": {"message": "unknown field continue_final_message"}})
        return _ok(r, i)
    rec = _models("someone", post)
    b = backend(rec)
    (g,) = run(b.generate(MSGS, SamplingParams(), prefix="4, 5,"))
    assert g.text == " 6" and b.prefix_mode == "assistant_prefill"
    assert len(rec.bodies()) == 2


# -- retries ------------------------------------------------------------------------------------------------------

def test_429_then_200_retries_once() -> None:
    rec = Recorder(lambda r, i: httpx.Response(429, json={"error": {"message": "slow down"}}) if i == 0 else _ok(r, i))
    (g,) = run(backend(rec).generate(MSGS, SamplingParams()))
    assert g.text == " 6" and len(rec.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_never_retried(status: int) -> None:
    rec = Recorder(lambda r, i: httpx.Response(status, json={"error": {"message": f"nope {status}"}}))
    with pytest.raises(UpstreamError, match=f"nope {status}") as info:
        run(backend(rec).generate(MSGS, SamplingParams()))
    assert info.value.status == status and len(rec.requests) == 1


def test_5xx_retries_are_bounded() -> None:
    rec = Recorder(lambda r, i: httpx.Response(503, text="overloaded"))
    with pytest.raises(UpstreamError, match="503: overloaded") as info:
        run(backend(rec, max_retries=2).generate(MSGS, SamplingParams()))
    assert info.value.status == 503 and len(rec.requests) == 3


def test_retry_after_is_honoured() -> None:
    rec = Recorder(lambda r, i: httpx.Response(429, headers={"Retry-After": "0.3"}) if i == 0 else _ok(r, i))
    start = time.monotonic()
    run(backend(rec, backoff=0.0).generate(MSGS, SamplingParams()))
    assert time.monotonic() - start >= 0.3 and len(rec.requests) == 2


def test_backoff_is_jittered_and_capped() -> None:
    from ponder.backends.retry import RetryPolicy
    policy = RetryPolicy(backoff=1.0, max_backoff=5.0)
    waits = [policy.delay(k) for k in range(8) for _ in range(20)]
    assert all(0.0 <= w <= 5.0 for w in waits) and len(set(waits)) > 100
    assert policy.delay(0, retry_after=2.0) >= 2.0 and policy.delay(0, retry_after=99.0) == 5.0


def test_context_overflow_is_its_own_error() -> None:
    msg = "Requested tokens (5000) exceed context window of 2048"
    error = {"error": {"message": msg, "code": "context_length_exceeded"}}
    rec = Recorder(lambda r, i: httpx.Response(400, json=error))
    with pytest.raises(ContextOverflow, match="exceed context window"):
        run(backend(rec).generate(MSGS, SamplingParams()))
    assert len(rec.requests) == 1


def test_concurrency_limit_holds() -> None:
    state = {"now": 0, "peak": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return _ok(request, 0)

    async def many() -> None:
        b = backend(handler, max_concurrency=2)
        await asyncio.gather(*(b.generate(MSGS, SamplingParams()) for _ in range(7)))
    run(many())
    assert state["peak"] == 2


def test_bad_settings_are_named() -> None:
    with pytest.raises(InvalidParameter, match="prefix_mode"):
        OpenAIBackend("http://x/v1", "m", prefix_mode="sideways")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter, match="max_concurrency"):
        OpenAIBackend("http://x/v1", "m", max_concurrency=0)


# -- the API key --------------------------------------------------------------------------------------------------

def test_api_key_never_reaches_errors_repr_or_logs(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PONDER_TEST_KEY", SENTINEL)

    def echo(r: httpx.Request, i: int) -> httpx.Response:  # a careless server that echoes the header back
        status = 500 if i % 2 == 0 else 401
        return httpx.Response(status, json={"error": {"message": f"bad auth {r.headers['authorization']}"}})

    rec = Recorder(echo)
    b = backend(rec, api_key_env="PONDER_TEST_KEY", max_retries=1)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamError) as info:
        run(b.generate(MSGS, SamplingParams()))
    assert rec.requests[0].headers["authorization"] == f"Bearer {SENTINEL}"  # it was sent...
    assert "bad auth Bearer ***" in str(info.value)  # ...and scrubbed from what came back
    seen = [str(info.value), repr(info.value), repr(b), str(vars(b)), caplog.text]
    assert caplog.text and all(SENTINEL not in s for s in seen)


# -- streaming ----------------------------------------------------------------------------------------------------

def test_stream_yields_deltas() -> None:
    events = [{"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": "Hel"}}]},
              {"choices": [{"delta": {"content": "lo"}}]}]
    sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    rec = Recorder(lambda r, i: httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"}))

    async def collect() -> list[str]:
        return [d async for d in backend(rec).stream(MSGS, SamplingParams())]
    assert run(collect()) == ["Hel", "lo"]
    assert rec.bodies()[0]["stream"] is True
    with pytest.raises(InvalidParameter, match="n=1"):
        run(backend(rec).stream(MSGS, SamplingParams(n=2)).__anext__())


def test_auto_asks_models_once_under_concurrency() -> None:
    rec = _models("vllm")

    async def many() -> None:
        b = backend(rec)
        await asyncio.gather(*(b.generate(MSGS, SamplingParams(), prefix="p") for _ in range(5)))
    run(many())
    assert [r.method for r in rec.requests].count("GET") == 1


def test_stream_retries_before_the_first_byte() -> None:
    sse = 'data: {"choices": [{"delta": {"content": "ok"}}]}\n\ndata: [DONE]\n\n'
    rec = Recorder(lambda r, i: httpx.Response(503) if i == 0 else httpx.Response(200, text=sse))

    async def collect(b: OpenAIBackend) -> list[str]:
        return [d async for d in b.stream(MSGS, SamplingParams())]
    assert run(collect(backend(rec))) == ["ok"] and len(rec.requests) == 2


@pytest.mark.parametrize("offset", [0, 280, 290, 470, 480, 490, 495, 499, 540, 560, 580, 590, 595, 599, 640])
def test_a_key_at_any_truncation_boundary_never_shows_in_part(offset: int) -> None:
    from ponder.backends.retry import RetryPolicy, Scrubber, send_with_retries

    key = "sk-" + "A1b2C3d4E5f6G7h8I9j0" * 2
    body = {"error": {"message": "x" * offset + f"bad key {key} given" + "y" * 40}}

    async def send() -> httpx.Response:
        return httpx.Response(401, json=body)

    with pytest.raises(UpstreamError) as info:
        asyncio.run(send_with_retries(send, RetryPolicy(max_retries=0), Scrubber(lambda: key), "POST /x"))
    text = str(info.value)
    assert not any(key[i:i + 6] in text for i in range(len(key) - 5)), text[-80:]
