"""The gate every request passes before any handler: metrics timing, auth, body size and concurrency.

A plain ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware, which the overhead benchmark would feel):

- auth: with a server key, every /v1/ request needs `Authorization: Bearer <key>`, compared in constant time
  (hmac.compare_digest); /health and /metrics stay open. The key is held here only, never logged or echoed.
  Without one, and with `pass_through_key`, the client's bearer key is handed to the HTTP backend for this
  request only (ponder.backends.openai.REQUEST_KEY); a client that sends none is a 401, unless the operator opted
  into `pass_through_fallback` (then the operator's own key serves it).
- body size: a body over the limit is a 413, whether or not it declares Content-Length.
- concurrency: generation requests in flight are counted (a stream counts until it ends); over the limit is a 429
  with Retry-After.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ponder.backends.openai import REQUEST_KEY
from ponder.server.config import ServerConfig
from ponder.server.errors import ApiError
from ponder.server.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
KNOWN_PATHS = GENERATION_PATHS | {"/v1/models", "/health", "/metrics"}


async def _send_error(send: Send, error: ApiError) -> None:
    response = error.response()
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class _Key:
    """A secret that does not show itself in repr() or str()."""

    def __init__(self, value: str) -> None:
        self._value = value.encode()

    def matches(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        # compare_digest runs in time independent of where the strings differ
        return hmac.compare_digest(token.strip().encode(), self._value) and scheme.lower() == "bearer"

    def __repr__(self) -> str:
        return "_Key(***)"

    __str__ = __repr__


class Gate:
    """Wraps the FastAPI app; see the module docstring."""

    def __init__(self, app: ASGIApp, config: ServerConfig, metrics: Metrics, key: str | None) -> None:
        self.app, self.config, self.metrics = app, config, metrics
        self.key = _Key(key) if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_PATHS else "other"
        status = [500]
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        passed = self._passed_key(scope, path)
        token = REQUEST_KEY.set(passed) if passed else None
        try:
            await self._admit(scope, receive, send_status, path)
        finally:
            if token is not None:
                REQUEST_KEY.reset(token)
            self.metrics.observe_request(endpoint, status[0], time.perf_counter() - start)

    def _needs_own_key(self, scope: Scope, path: str) -> bool:
        """A keyless client of a pass-through server, which the operator's key must not serve unasked."""
        return (self.key is None and self.config.pass_through_key and not self.config.pass_through_fallback
                and path in GENERATION_PATHS and self._passed_key(scope, path) is None)

    def _passed_key(self, scope: Scope, path: str) -> str | None:
        """The client's bearer key, when it is to be passed on to the upstream."""
        if self.key is not None or not self.config.pass_through_key or not path.startswith("/v1/"):
            return None
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    async def _admit(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if self.key is not None and path.startswith("/v1/") and not self.key.matches(_header(scope, b"authorization")):
            await _send_error(send, ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                             code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}))
            return
        if self._needs_own_key(scope, path):
            await _send_error(send, ApiError(
                401, "this server passes each client's key on to its upstream and you sent none: send "
                "'Authorization: Bearer YOUR_UPSTREAM_KEY'", code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"}))
            return
        if scope.get("method") == "POST":
            declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), b"0")
            too_big = declared.isdigit() and int(declared) > self.config.max_body_bytes
            body = None if too_big else await self._read_body(receive)
            if body is None:
                await _send_error(send, ApiError(
                    413, f"the request body is larger than this server's limit of {self.config.max_body_bytes} bytes",
                    code="request_too_large"))
                return
            receive = _replay(body, receive)
        if path not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        if self.metrics.in_flight >= self.config.max_concurrency:
            await _send_error(send, ApiError(
                429, f"the server is at its limit of {self.config.max_concurrency} requests in flight; retry later",
                code="too_many_requests", headers={"Retry-After": str(self.config.retry_after_s)}))
            return
        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.in_flight -= 1

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        limit, chunks, size = self.config.max_body_bytes, [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name), None)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out `body` once, then waits on the real one (for the disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
