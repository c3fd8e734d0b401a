"""Server errors: OpenAI's error shape and the right status for each failure, upstream mode, keys kept out of logs,
a disconnecting client cancelling its solve, metrics, and the routing rules."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import openai
import pytest

from _servers import FaultServer, free_port
from ponder.backends.openai import OpenAIBackend
from ponder.backends.scripted import ScriptedBackend, count_tokens
from ponder.errors import ContextOverflow, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ponder.server import ServerConfig, create_app
from ponder.server.routing import split_model
from test_server import MODEL, ask, live_server

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "2+2?"}]}


class Failing:
    """A backend whose every call raises `error`."""

    model = MODEL

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def generate(self, messages, params, prefix=""):
        raise self.error


def post(app: object, path: str = "/v1/chat/completions", body: object = CHAT, **kwargs: object) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if isinstance(body, (bytes, str)):
                return await client.post(path, content=body, **kwargs)  # type: ignore[arg-type]
            return await client.post(path, json=body, **kwargs)  # type: ignore[arg-type]
    return asyncio.run(go())


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error


@pytest.mark.parametrize(("error", "status", "code"), [
    (UpstreamUnavailable("connection refused"), 503, "upstream_unavailable"),
    (UpstreamTimeout("no answer in 60s"), 504, "upstream_timeout"),
    (UpstreamError("HTTP 500 from upstream", status=500), 502, "upstream_error"),
    (UpstreamError("HTTP 401 from upstream", status=401), 502, "upstream_error"),
    (UpstreamError("HTTP 404 from upstream", status=404), 404, "upstream_error"),
    (ContextOverflow("prompt of 9000 tokens does not fit 8192"), 400, "context_length_exceeded"),
    (RuntimeError("secret internals"), 500, "internal_error"),
])
def test_backend_failures_map_to_statuses(error: BaseException, status: int, code: str) -> None:
    app = create_app(Failing(error))
    body = assert_openai_error(post(app), status)
    assert body["code"] == code
    if status == 500:
        assert "secret internals" not in body["message"]


def test_streamed_request_to_a_dead_backend_still_gets_its_status() -> None:
    app = create_app(Failing(UpstreamUnavailable("refused")))
    assert_openai_error(post(app, body={**CHAT, "stream": True}), 503)


@pytest.mark.parametrize(("body", "status"), [
    (b"{not json", 400),
    ({"model": MODEL}, 400),
    ({**CHAT, "messages": []}, 400),
    ({**CHAT, "temperature": -1}, 400),
    ({**CHAT, "n": 0}, 400),
    ({**CHAT, "top_k": "many"}, 400),
    ({**CHAT, "top_k": -2}, 400),
    ({**CHAT, "min_p": 1.5}, 400),
    ({**CHAT, "repetition_penalty": 0}, 400),
    ({**CHAT, "presence_penalty": 3}, 400),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400),
    ({**CHAT, "response_format": {"type": "json_object"}}, 400),
    ({**CHAT, "logit_bias": {"1": 5}}, 400),
    ({**CHAT, "logprobs": True, "stream": True}, 400),
    ({**CHAT, "top_logprobs": 2}, 400),
    ({**CHAT, "logprobs": True, "ponder": {"strategy": "budget_forcing"}}, 400),
    ({**CHAT, "n": 17}, 400),
    ({**CHAT, "stop": [""]}, 400),
    ({**CHAT, "ponder": {"strategy": "cot", "params": {"max_tokens": -3}}}, 400),
    ({**CHAT, "ponder": {"strategy": "cot", "params": {"temperature": "hot"}}}, 400),
    ({**CHAT, "ponder": {"strategy": "cot", "budget": {"tokens": 0}}}, 400),
    ({**CHAT, "ponder": {"strategy": "cot", "budget": {"tokens": 10**9}}}, 400),
    ({**CHAT, "model": "self_consistency-99999999999999999999:tiny"}, 400),
    ({**CHAT, "ponder": {"strategy": "beam_search", "params": {"beam_width": 1000000}}}, 400),
    ({**CHAT, "ponder": {"strategy": "adaptive_consistency", "params": {"n_max": 10**6}}}, 400),
    ({**CHAT, "ponder": {"strategy": "budget_forcing", "params": {"max_thinking_tokens": 10**8}}}, 400),
    ({**CHAT, "ponder": {"strategy": "program_aided", "params": {"timeout_s": 1e9}}}, 400),
    ({**CHAT, "ponder": {"strategy": "self_consistency", "params": {"seed": "x"}}}, 400),
    ({**CHAT, "ponder": {"strategy": "cot", "params": {"system": 5}}}, 400),
    ({**CHAT, "max_tokens": 10**7}, 400),
    ({**CHAT, "ponder": {"strategy": "compute_optimal", "params": {"policy": "/etc/passwd"}}}, 400),
    ({**CHAT, "reasoning_effort": "high", "ponder": {"params": {"policy": "/etc/hostname"}}}, 400),
    ({**CHAT, "ponder": {"strategy": "compute_optimal"}}, 400),
    ({**CHAT, "model": "cot-0:tiny"}, 400),
])
def test_bad_requests_are_4xx_in_openai_shape(body: object, status: int) -> None:
    app = create_app(ScriptedBackend(lambda call, i: "The answer is 4.", model=MODEL))
    assert_openai_error(post(app, body=body, headers={"content-type": "application/json"}), status)


def test_unknown_paths_and_methods_are_openai_shaped() -> None:
    app = create_app(ScriptedBackend(["x"]))
    assert_openai_error(post(app, path="/v1/embeddings"), 404)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get("/v1/chat/completions")
    assert_openai_error(asyncio.run(get()), 405)


def test_strict_model_is_a_404_for_another_model() -> None:
    app = create_app(ScriptedBackend(lambda call, i: "4", model=MODEL), config=ServerConfig(strict_model=True))
    assert post(app).status_code == 200
    assert post(app, body={**CHAT, "model": f"self_consistency-2:{MODEL}"}).status_code == 200
    assert assert_openai_error(post(app, body={**CHAT, "model": "gpt-4o"}), 404)["code"] == "model_not_found"


def test_budget_that_runs_out_returns_the_best_answer_marked_length() -> None:
    app = create_app(ScriptedBackend(lambda call, i: "one two three four five six The answer is 4.", model=MODEL))
    reply = post(app, body={**CHAT, "ponder": {"strategy": "self_consistency", "params": {"n": 2},
                                               "budget": {"tokens": 6}}}).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["ponder"]["budget_exhausted"] is True
    assert reply["usage"]["completion_tokens"] <= 6


def test_model_name_syntax() -> None:
    assert split_model("self_consistency-8:qwen2.5-coder-1.5b") == ("self_consistency", 8, "qwen2.5-coder-1.5b")
    assert split_model("budget_forcing:m") == ("budget_forcing", None, "m")
    assert split_model("mistral:7b") == (None, None, "mistral:7b")  # not a strategy: an Ollama-style model name
    assert split_model("typo-4:m") == ("typo", 4, "m")  # looks like one: reported as an unknown strategy
    assert split_model("qwen2.5-coder-1.5b") == (None, None, "qwen2.5-coder-1.5b")


def test_upstream_mode_proxies_and_applies_strategies() -> None:
    with FaultServer(["ok"]) as upstream:
        backend = OpenAIBackend(upstream.url, "fake", max_retries=0, timeout=5, prefix_mode="none")
        with live_server(create_app(backend)) as url:
            client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
            assert ask(client).choices[0].message.content == "hello there"
            voted = ask(client, model="self_consistency-3:fake")
            assert voted.usage.completion_tokens == 3 * 2  # the fake upstream reports 2 completion tokens a call
        assert upstream.requests >= 4


def test_upstream_mode_streams_token_by_token_with_exact_usage() -> None:
    reply = "So the answer is 4."
    with live_server(create_app(ScriptedBackend(lambda call, i: reply, model="up"))) as upstream_url:
        backend = OpenAIBackend(upstream_url, "up", max_retries=0, timeout=5, prefix_mode="none")
        with live_server(create_app(backend)) as url:
            client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
            chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["So ", "the ", "answer ", "is ", "4."]  # as the upstream decoded them
    usage = next(c.usage for c in chunks if c.usage is not None)
    assert usage.completion_tokens == count_tokens(reply)
    assert backend.usage_estimated == 0  # the upstream's own usage, from its last chunk


def test_upstream_failures_through_the_sdk() -> None:
    with FaultServer(["hang"], hang_s=2.0) as hanging, FaultServer(["429"]) as limited:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        for base, error in ((hanging.url, openai.APIStatusError), (dead, openai.APIStatusError),
                            (limited.url, openai.RateLimitError)):
            backend = OpenAIBackend(base, "fake", max_retries=0, timeout=0.5, prefix_mode="none")
            with live_server(create_app(backend)) as url:
                with pytest.raises(error) as caught:
                    ask(openai.OpenAI(base_url=url, api_key="x", max_retries=0))
                expected = {hanging.url: 504, dead: 503, limited.url: 429}[base]
                assert caught.value.status_code == expected


def test_keys_never_reach_logs_or_responses(monkeypatch, caplog) -> None:
    server_key, upstream_key = "SENTINEL-server-8f3a", "SENTINEL-upstream-77c1"
    monkeypatch.setenv("PONDER_SERVER_KEY", server_key)
    monkeypatch.setenv("PONDER_UPSTREAM_KEY", upstream_key)
    caplog.set_level(logging.DEBUG)
    texts = []
    with FaultServer(["500"]) as upstream:
        backend = OpenAIBackend(upstream.url, "fake", api_key_env="PONDER_UPSTREAM_KEY", max_retries=0,
                                timeout=5, prefix_mode="none")
        app = create_app(backend, config=ServerConfig(api_key_env="PONDER_SERVER_KEY"))
        auth = {"authorization": f"Bearer {server_key}"}
        texts.append(post(app, headers=auth).text)  # upstream 500 -> 502
        texts.append(post(app, headers={"authorization": "Bearer wrong"}).text)  # 401
        broken = create_app(Failing(RuntimeError(f"boom {upstream_key}")),
                            config=ServerConfig(api_key_env="PONDER_SERVER_KEY"))
        texts.append(post(broken, headers=auth).text)  # 500, traceback logged server-side
    assert json.loads(texts[0])["error"]["code"] == "upstream_error"
    assert json.loads(texts[1])["error"]["type"] == "authentication_error"
    assert "internal error" in caplog.text  # the 500 was logged...
    for text in [*texts, caplog.text]:
        assert server_key not in text
    assert all(upstream_key not in t for t in texts)  # ...but nothing of it reached a response


def test_server_refuses_to_start_without_its_key(monkeypatch) -> None:
    monkeypatch.delenv("PONDER_MISSING_KEY", raising=False)
    with pytest.raises(ValueError, match="PONDER_MISSING_KEY"):
        create_app(ScriptedBackend(["x"]), config=ServerConfig(api_key_env="PONDER_MISSING_KEY"))


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_solve(stream: bool) -> None:
    slow = ScriptedBackend(lambda call, i: "late", model=MODEL, latency=30.0)
    app = create_app(slow, config=ServerConfig(keepalive_s=0.2))
    with live_server(app) as url:
        body = {**CHAT, "stream": stream, "reasoning_effort": "medium", "ponder": {"kind": "math"}}
        with httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=0.6)) as c:
            if stream:  # read the first event (the role chunk or a keep-alive), then hang up
                with c.stream("POST", "/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    next(response.iter_lines())
            else:  # give up waiting for the whole answer
                with pytest.raises(httpx.ReadTimeout):
                    c.post("/chat/completions", json=body)
        deadline = time.monotonic() + 5
        while slow.cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.cancelled == 1  # the one backend call (n=4 shares it) was cancelled, not left running
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
        assert health["in_flight"] == 0


def test_metrics_count_requests_tokens_and_strategies() -> None:
    app = create_app(ScriptedBackend(lambda call, i: "The answer is 4.", model=MODEL))
    post(app)
    post(app, body={**CHAT, "reasoning_effort": "medium", "ponder": {"kind": "math"}})
    post(app, body={**CHAT, "ponder": {"strategy": "nope"}})

    async def get() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return (await c.get("/metrics")).text
    text = asyncio.run(get())
    assert 'ponder_requests_total{endpoint="/v1/chat/completions",status="200"} 2' in text
    assert 'ponder_requests_total{endpoint="/v1/chat/completions",status="400"} 1' in text
    assert 'ponder_strategy_requests_total{strategy="self_consistency"} 1' in text
    assert 'ponder_tokens_total{role="policy",kind="completion"} 20' in text  # 4 tokens x (1 + 4 samples)
    assert 'ponder_request_seconds_count{endpoint="/v1/chat/completions"} 3' in text


def test_pass_through_key_reaches_the_upstream_and_no_log(monkeypatch, caplog) -> None:
    client_key = "SENTINEL-client-key-5e1d"
    monkeypatch.setenv("UPSTREAM_OWN_KEY", client_key)  # the upstream (itself a ponder server) wants this key
    monkeypatch.delenv("PROXY_HAS_NO_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    upstream_app = create_app(ScriptedBackend(lambda call, i: "The answer is 4.", model="up"),
                              config=ServerConfig(api_key_env="UPSTREAM_OWN_KEY"))
    with live_server(upstream_app) as upstream_url:
        backend = OpenAIBackend(upstream_url, "up", api_key_env="PROXY_HAS_NO_KEY", max_retries=0, timeout=5,
                                prefix_mode="none")
        with live_server(create_app(backend, config=ServerConfig(pass_through_key=True))) as url:
            good = openai.OpenAI(base_url=url, api_key=client_key, max_retries=0)
            assert ask(good).choices[0].message.content == "The answer is 4."
            streamed = "".join(c.choices[0].delta.content or "" for c in ask(good, stream=True) if c.choices)
            assert streamed == "The answer is 4."
            with pytest.raises(openai.AuthenticationError) as caught:
                ask(openai.OpenAI(base_url=url, api_key="not-the-key", max_retries=0))
            assert "not-the-key" not in str(caught.value.body)
        without = create_app(backend)  # pass-through off: the proxy's own (missing) key is used, and refused
        assert post(without, headers={"authorization": f"Bearer {client_key}"}).status_code == 502
    assert client_key not in caplog.text


def test_sampler_fields_reach_every_backend_call_and_harmless_extras_are_accepted() -> None:
    seen = []

    def answer(call, i):
        seen.append(call.params)
        return "The answer is 4."

    app = create_app(ScriptedBackend(answer, model=MODEL))
    body = {**CHAT, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.05, "presence_penalty": 0.5,
            "frequency_penalty": 0.25, "top_p": 0.8, "user": "u1", "metadata": {"a": "b"}, "tool_choice": "none",
            "ponder": {"strategy": "self_consistency", "params": {"n": 3}}}
    r = post(app, body=body)
    assert r.status_code == 200, r.text
    assert seen and all((p.top_k, p.min_p, p.repetition_penalty, p.presence_penalty, p.frequency_penalty, p.top_p)
                        == (20, 0.05, 1.05, 0.5, 0.25, 0.8) for p in seen)


def test_an_unhonoured_field_is_named_in_the_400() -> None:
    app = create_app(ScriptedBackend(lambda call, i: "The answer is 4.", model=MODEL))
    error = assert_openai_error(post(app, body={**CHAT, "response_format": {"type": "json_object"}}), 400)
    assert error["param"] == "response_format" and "response_format" in error["message"]


def test_logprobs_of_the_chosen_answer_are_returned_in_both_shapes() -> None:
    app = create_app(ScriptedBackend(lambda call, i: "The answer is 4.", model=MODEL))
    chat = post(app, body={**CHAT, "logprobs": True, "top_logprobs": 2}).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == chat["choices"][0]["message"]["content"]
    assert all(t["logprob"] <= 0 and isinstance(t["top_logprobs"], list) for t in content)
    text = post(app, "/v1/completions", {"model": MODEL, "prompt": "2+2?", "logprobs": 1}).json()["choices"][0]
    assert "".join(text["logprobs"]["tokens"]) == text["text"]
    assert len(text["logprobs"]["token_logprobs"]) == len(text["logprobs"]["text_offset"])


def test_a_size_over_the_servers_ceiling_names_the_field_the_limit_and_the_flag() -> None:
    app = create_app(ScriptedBackend(lambda call, i: "The answer is 4.", model=MODEL),
                     config=ServerConfig(max_samples=8, max_request_tokens=4000))
    body = {**CHAT, "ponder": {"strategy": "beam_search", "params": {"beam_width": 9}}}
    error = assert_openai_error(post(app, body=body), 400)
    assert error["param"] == "ponder.params.beam_width" and "8" in error["message"] and "--max-samples" in \
        error["message"]
    from ponder.server.routing import chat_problems, plan
    from ponder.server.schemas import ChatCompletionRequest

    req = ChatCompletionRequest.model_validate({**CHAT, "n": 4})
    assert plan(req, chat_problems(req), MODEL, ServerConfig(max_request_tokens=4000)).budget.tokens == 1000
