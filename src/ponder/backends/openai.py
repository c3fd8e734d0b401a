"""A backend for any OpenAI-compatible HTTP server: vLLM, SGLang, llama.cpp's server, Ollama, OpenAI.

Owns the HTTP conversation: a shared httpx client, a concurrency limit, retries (`retry.py`), `n > 1` with its
one fan-out fallback, streaming, and continuing an assistant prefix. The wire format lives in `openai_wire.py`.
It knows nothing of budgets: the ledger wraps it like any backend.

n > 1. Sent as `n`. A server that returns fewer choices (llama-cpp-python ignores `n`) or refuses `n` with a 400
naming it (llama-server allows at most its slot count) is remembered (`supports_n = False`), the missing
generations come from `base.fan_out` (seeds seed+i), and later calls fan out at once. Pass supports_n=False to
skip the probe.

Continuing a prefix (`prefix=`, used by beam search and budget forcing), `prefix_mode`:

    server                       mode                       how
    vLLM, SGLang                 "continue_final_message"   trailing assistant message + continue_final_message=true,
                                                            add_generation_prompt=false
    llama.cpp llama-server,      "assistant_prefill"        trailing assistant message, continued as is
    Ollama, Anthropic-style
    llama-cpp-python server      "completions"              /v1/completions with a prompt rendered by `render`
                                                            (e.g. openai_wire.chatml); its chat endpoint always
                                                            opens a NEW assistant turn after a trailing one
    OpenAI                       "none"                     cannot continue; a prefix raises BackendError

A server may echo the prefix: llama-server answers a trailing assistant message with the prefill AND its
continuation in `content`. Whether it does is learnt from the first reply to a prefix that is more than
whitespace (`echoes_prefix`: True when every choice began with the prefix, whitespace matched loosely, see
`echo.py`), and from then on the echo is cut from every reply, streamed or not, so `text` is the continuation
only. A learnt True that a later reply contradicts becomes False; pass echoes_prefix= to fix it instead.

"auto" (the default) asks /v1/models who owns the model (`owned_by`: vllm, sglang, llamacpp, library/ollama, me,
openai/system) and picks from the table; for an unknown server it tries "continue_final_message" and, on a 400,
falls back to "assistant_prefill" for good.

The API key is read from the environment variable `api_key_env` at each call and goes only into the Authorization
header: it is not stored on the backend, and it is scrubbed from every error message and log line. A key set in
the context variable `REQUEST_KEY` (ponder serve passing a client's own key through) wins over it, for that
request only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from typing import Any

import httpx

from ponder.backends.base import fan_out
from ponder.backends.credentials import split_credentials
from ponder.backends.echo import EchoFilter, strip_echo
from ponder.backends.openai_wire import (
    PREFIX_MODES,
    SERVER_PREFIX_MODES,
    PrefixMode,
    Render,
    build_request,
    parse_response,
    stream_delta,
)
from ponder.backends.retry import RetryPolicy, Scrubber, send_with_retries, shown
from ponder.errors import InvalidParameter, UpstreamError, UpstreamTimeout
from ponder.types import Generation, Message, ModelInfo, SamplingParams

log = logging.getLogger(__name__)

_REFUSED_N = re.compile(r"""['"`]n['"`]|\bn_cmpl\b|\bn must\b""")
"""A 400 about the `n` field: llama-server's "Field 'n': Value must be between 1 <= value <= 2"."""

REQUEST_KEY: ContextVar[str | None] = ContextVar("ponder_request_api_key", default=None)
"""An API key for the current request only (set by the server to pass a client's key upstream)."""


class OpenAIBackend:
    """Generations from an OpenAI-compatible server at `base_url` (ending in /v1), for `model`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        prefix_mode: PrefixMode = "auto",
        supports_n: bool | None = None,
        echoes_prefix: bool | None = None,
        render: Render | None = None,
        info: ModelInfo | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if prefix_mode not in PREFIX_MODES:
            raise InvalidParameter("prefix_mode", prefix_mode, f"use one of {', '.join(PREFIX_MODES)}")
        if max_concurrency < 1:
            raise InvalidParameter("max_concurrency", max_concurrency, "allow at least one request at a time")
        if max_retries < 0:
            raise InvalidParameter("max_retries", max_retries, "use 0 (no retries) or more")
        if not timeout > 0:
            raise InvalidParameter("timeout", timeout, "use a positive number of seconds")
        bare, self._credentials = split_credentials(base_url.rstrip("/"))
        self.base_url = bare
        """The server's URL without the credentials it may have carried (those go out as basic auth only)."""
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.prefix_mode: PrefixMode = prefix_mode
        self.supports_n = supports_n
        """None until a call with n > 1 shows whether the server honours n."""
        self.echoes_prefix = echoes_prefix
        """None until a reply to a prefix shows whether the server repeats the prefix before its continuation."""
        self._echo_given = echoes_prefix is not None
        self.render = render
        self.info = info
        self.usage_estimated = 0
        """How many responses carried no usage and were estimated (see openai_wire)."""
        self.policy = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self._scrub = Scrubber(lambda: (self._key(), *(self._credentials or ())))
        self._transport = transport
        self._auto_fallback = False
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._mode_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"prefix_mode={self.prefix_mode!r}, supports_n={self.supports_n!r})")

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The client and semaphore of the running event loop (a new loop, as in a second asyncio.run, gets new)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._sem is None or self._loop is not loop:
            auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, transport=self._transport,
                                           auth=auth)
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._mode_lock = asyncio.Lock()
            self._loop = loop
        return self._http, self._sem

    def _key(self) -> str | None:
        return REQUEST_KEY.get() or os.environ.get(self.api_key_env) or None

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _post(self, path: str, body: Any) -> dict[str, Any]:
        client, sem = self._client()

        async def send() -> httpx.Response:
            async with sem:  # hold a slot per attempt, not while backing off
                return await client.post(path, json=body, headers=self._headers())

        what = f"POST {self.base_url}{path}"
        response = await send_with_retries(send, self.policy, self._scrub, what)
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(shown(self._scrub, f"{what} answered with something that is not JSON: "
                                                   f"{response.text!r}", 300), response.status_code) from None

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- prefix mode ----------------------------------------------------------------------------------------------

    async def _mode_for(self, prefix: str) -> PrefixMode:
        """The prefix mode to use; "auto" is resolved once, from /v1/models' owned_by."""
        if not prefix or self.prefix_mode != "auto":
            return self.prefix_mode
        self._client()
        assert self._mode_lock is not None
        async with self._mode_lock:  # concurrent first calls ask /models once
            if self.prefix_mode != "auto":
                return self.prefix_mode
            return await self._resolve_auto()

    async def _resolve_auto(self) -> PrefixMode:
        owner = await self._owned_by()
        mode = SERVER_PREFIX_MODES.get(owner or "")
        if mode is None:
            mode, self._auto_fallback = "continue_final_message", True
        elif mode == "completions" and self.render is None:
            mode = "none"  # llama-cpp-python without a template: say how to fix it rather than answer wrongly
        log.info("prefix_mode auto: server owned_by=%r -> %s", owner, mode)
        self.prefix_mode = mode
        return mode

    async def _owned_by(self) -> str | None:
        client, sem = self._client()

        async def send() -> httpx.Response:
            async with sem:
                return await client.get("/models", headers=self._headers())

        try:
            response = await send_with_retries(send, self.policy, self._scrub, f"GET {self.base_url}/models")
            models = response.json().get("data") or []
        except UpstreamTimeout:
            raise  # the server is down or stuck: asking it to generate would fail the same way
        except (UpstreamError, ValueError, AttributeError):
            return None  # no usable /models: an unknown server
        mine = [m for m in models if m.get("id") == self.model] or models
        return str(mine[0].get("owned_by", "")).lower() if mine else None

    # -- generation -----------------------------------------------------------------------------------------------

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, prefix: str = ""
    ) -> list[Generation]:
        """params.n generations; with n > 1 on a server that ignores n, the rest come from one fan-out."""
        messages = tuple(messages)

        async def one(p: SamplingParams) -> list[Generation]:
            return await self._request(messages, p, prefix)

        if params.n > 1 and self.supports_n is False:
            return await fan_out(one, params)
        try:
            gens = await one(params)
        except UpstreamError as exc:
            if params.n > 1 and not self.supports_n and exc.status == 400 and _REFUSED_N.search(str(exc)):
                log.info("%s refused n=%d: fanning out from now on", self.base_url, params.n)
                self.supports_n = False
                return await fan_out(one, params)
            raise
        if params.n > 1:
            if len(gens) < params.n:
                if self.supports_n is not False:
                    log.info("%s returned %d of n=%d choices: fanning out from now on", self.base_url,
                             len(gens), params.n)
                self.supports_n = False
                rest = params.with_(n=params.n - len(gens), seed=params.sample_seed(len(gens)))
                gens = gens + await fan_out(one, rest)
            else:
                self.supports_n = True
        return gens[: params.n]

    async def _request(self, messages: tuple[Message, ...], params: SamplingParams, prefix: str) -> list[Generation]:
        mode = await self._mode_for(prefix)
        request = build_request(self.model, messages, params, prefix, mode, self.render)
        try:
            body = await self._post(request.path, request.body)
        except UpstreamError as exc:
            if prefix and self._auto_fallback and exc.status == 400 and mode == "continue_final_message":
                log.warning("continue_final_message refused (400); using assistant_prefill from now on")
                self.prefix_mode, self._auto_fallback = "assistant_prefill", False
                return await self._request(messages, params, prefix)
            raise
        prompt_text = "".join(m.content for m in messages) + prefix
        unecho = self._unecho(prefix) if self._may_echo(prefix, mode) else None
        gens, estimated = parse_response(body, prompt_text, unecho)
        if estimated:
            if not self.usage_estimated:
                log.warning("%s reports no usage; estimating 1 token per 4 characters", self.base_url)
            self.usage_estimated += 1
        return gens

    async def stream(
        self, messages: Sequence[Message], params: SamplingParams, prefix: str = ""
    ) -> AsyncIterator[str]:
        """The text of one generation as it arrives (server-sent events). Usage is not reported here."""
        echo = await self._echo_filter(prefix)
        async for event in self._stream_events(messages, params, prefix, {}):
            delta = echo.feed(stream_delta(event)) if echo else stream_delta(event)
            if delta:
                yield delta
        if echo and (rest := self._settle(echo)):
            yield rest

    async def stream_generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "",
                              on_delta: Callable[[str], None] | None = None) -> list[Generation]:
        """One generation (n=1) by a streamed request: each text delta goes to `on_delta` as it arrives, and the
        Generation comes from the stream's finish_reason and usage (asked for with stream_options.include_usage;
        estimated as in `generate` when the server sends none). The server streams thinking with it."""
        text: list[str] = []
        finish, usage = None, None
        echo = await self._echo_filter(prefix)

        def emit(delta: str) -> None:
            if delta:
                text.append(delta)
                if on_delta is not None:
                    on_delta(delta)
        async for event in self._stream_events(messages, params, prefix, {"stream_options": {"include_usage": True}}):
            emit(echo.feed(stream_delta(event)) if echo else stream_delta(event))
            choices = event.get("choices") or []
            finish = (choices[0].get("finish_reason") if choices else None) or finish
            usage = event.get("usage") if isinstance(event.get("usage"), dict) else usage
        if echo:
            emit(self._settle(echo))
        body = {"choices": [{"index": 0, "text": "".join(text), "finish_reason": finish}], "usage": usage}
        gens, estimated = parse_response(body, "".join(m.content for m in messages) + prefix)
        self.usage_estimated += int(estimated)
        return gens

    # -- servers that echo the prefix -----------------------------------------------------------------------------

    def _may_echo(self, prefix: str, mode: PrefixMode) -> bool:
        """Whether a reply may start with an echo of `prefix`: only a chat request ending in an assistant turn,
        on a server not known to leave it out. A whitespace-only prefix cannot tell an echo from a continuation
        that begins with a newline, so it is cut only on a server known to echo."""
        if not prefix or mode not in ("assistant_prefill", "continue_final_message") or self.echoes_prefix is False:
            return False
        return self.echoes_prefix is True or bool(prefix.strip())

    def _unecho(self, prefix: str) -> Callable[[list[str]], list[str]]:
        def unecho(texts: list[str]) -> list[str]:
            cut = [strip_echo(t, prefix) for t in texts]
            self._learn(all(echoed for _, echoed in cut))
            return [t for t, _ in cut] if self.echoes_prefix else texts
        return unecho

    async def _echo_filter(self, prefix: str) -> EchoFilter | None:
        mode = await self._mode_for(prefix)
        return EchoFilter(prefix) if self._may_echo(prefix, mode) else None

    def _settle(self, echo: EchoFilter) -> str:
        """The end of a streamed reply: what the filter still held, and what the reply showed about the server."""
        rest = echo.finish()
        self._learn(bool(echo.echoed))
        return rest

    def _learn(self, echoed: bool) -> None:
        if echoed == self.echoes_prefix or self._echo_given:
            if self.echoes_prefix and not echoed:
                log.warning("%s: a reply did not begin with the prefix (echoes_prefix=True was given)", self.base_url)
            return
        if self.echoes_prefix is None:
            log.info("%s %s the assistant prefix in its replies%s", self.base_url,
                     "repeats" if echoed else "does not repeat", ": cutting it off" if echoed else "")
        else:
            log.warning("%s: a reply did not begin with the prefix; treating the server as not echoing it",
                        self.base_url)
        self.echoes_prefix = echoed

    async def _stream_events(self, messages: Sequence[Message], params: SamplingParams, prefix: str,
                             extra: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The JSON events of one streamed generation (n=1)."""
        if params.n != 1:
            raise InvalidParameter("n", params.n, "stream one generation at a time (n=1); use generate for n > 1")
        mode = await self._mode_for(prefix)
        request = build_request(self.model, tuple(messages), params, prefix, mode, self.render, stream=True)
        client, sem = self._client()
        what = f"POST {self.base_url}{request.path} (stream)"
        body = {**request.body, **extra}

        async def send() -> httpx.Response:
            built = client.build_request("POST", request.path, json=body, headers=self._headers())
            return await client.send(built, stream=True)

        async with sem:  # a stream holds its slot until it ends
            response = await send_with_retries(send, self.policy, self._scrub, what)
            try:
                async for event in self._events(response, what):
                    yield event
            finally:
                await response.aclose()

    async def _events(self, response: httpx.Response, what: str) -> AsyncIterator[dict[str, Any]]:
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if isinstance(event, dict) and event.get("error"):
                    raise UpstreamError(shown(self._scrub, f"{what} failed mid-stream: {event['error']}"))
                if isinstance(event, dict):
                    yield event
        except httpx.TransportError as exc:
            raise UpstreamError(self._scrub(f"{what} broke off mid-stream ({type(exc).__name__}: {exc})")) from None
        except json.JSONDecodeError as exc:
            raise UpstreamError(self._scrub(f"{what} sent an event that is not JSON ({exc})")) from None
