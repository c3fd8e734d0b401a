"""The OpenAI-compatible app: `create_app(backend, config=...)` -> a FastAPI app, with the Gate in front.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models   GET /health   GET /metrics

A request becomes a Plan (routing.py), the Plan runs as `strategy.solve(problem, backend, ledger)` per choice
(solving.py, the library's own path), and the outcomes become an OpenAI response (responses.py) or an SSE stream
(streaming.py). Errors are OpenAI-shaped (errors.py); auth, body size and concurrency are checked in gate.py.
A client that disconnects cancels its solve, streamed or not, and the request counts in flight until the solve
has ended (its sandboxes killed, see ponder.sandbox), so the concurrency limit covers that work too.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ponder.backends.openai import REQUEST_KEY
from ponder.errors import InvalidParameter, PonderError, UpstreamError
from ponder.registry import STRATEGIES
from ponder.server.bodies import declare_bodies, parse, validation_error
from ponder.server.config import ServerConfig
from ponder.server.errors import ApiError, from_exception
from ponder.server.gate import Gate
from ponder.server.metrics import Metrics
from ponder.server.responses import Outcome, chat_body, completion_body
from ponder.server.routing import Plan, chat_problems, completion_problems, plan, split_model
from ponder.server.schemas import ChatCompletionRequest, CompletionRequest, ErrorResponse
from ponder.server.solving import run_plan
from ponder.server.streaming import SolveStream, StreamRun

WATCH_AFTER_S = 0.05
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500, 502, 503, 504)
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return ApiError(exc.status_code, message, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(PonderError)
    async def ponder_error(_: Request, exc: PonderError) -> JSONResponse:
        return from_exception(exc).response()


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _solve_or_cancel(request: Request, the_plan: Plan, backend: Any, config: ServerConfig) -> list[Outcome]:
    """Run the plan in this task; a watcher cancels it if the client disconnects first (the backend frees slots).

    The watcher starts only once the request has run WATCH_AFTER_S: most requests end sooner, and a watcher task
    per request cost about a third of the server's own time per request. A client that leaves earlier is noticed
    as soon as the watcher starts."""
    task = asyncio.current_task()
    gone = False
    watcher: asyncio.Future[None] | None = None

    async def watch() -> None:
        nonlocal gone
        await _until_disconnect(request)
        gone = True
        if task is not None:
            task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await run_plan(the_plan, backend, config.prices)
    except asyncio.CancelledError:
        if gone and task is not None:
            task.uncancel()
            raise ApiError(499, "the client closed the request", code="client_closed") from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


class _Service:
    """The handlers' shared state: backend, config, metrics."""

    def __init__(self, backend: Any, config: ServerConfig, metrics: Metrics) -> None:
        self.backend, self.config, self.metrics = backend, config, metrics
        self.served = config.model_name or getattr(backend, "model", "") or "ponder"

    async def answer(self, request: Request, req: ChatCompletionRequest | CompletionRequest, chat: bool) -> Any:
        try:
            return await self._answer(request, req, chat)
        except UpstreamError as exc:
            if REQUEST_KEY.get() is not None and exc.status in (401, 403):  # the client's own key was refused
                raise ApiError(exc.status, f"the upstream server refused your API key: {exc}",
                               code="invalid_api_key") from None
            raise
        except (ApiError, PonderError):
            raise
        except Exception as exc:  # never a stack trace in a response: logged, answered with a generic 500
            raise from_exception(exc) from None

    async def _answer(self, request: Request, req: ChatCompletionRequest | CompletionRequest, chat: bool) -> Any:
        problems = chat_problems(req) if chat else completion_problems(req)  # type: ignore[arg-type]
        the_plan = plan(req, problems, self.served, self.config)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            run = StreamRun(the_plan, self.backend, self.config.prices, self.metrics, chat, include_usage,
                            self.config.keepalive_s)
            try:
                await run.first()
            except BaseException:
                await run.aclose()
                raise
            return SolveStream(run)
        start = time.perf_counter()
        outcomes = await _solve_or_cancel(request, the_plan, self.backend, self.config)
        for o in outcomes:
            self.metrics.observe_solve(the_plan.label, o.ledger.usage_by_role)
        build = chat_body if chat else completion_body
        return JSONResponse(build(the_plan, outcomes, self.backend, time.perf_counter() - start))

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": self.served, "object": "model", "created": 0, "owned_by": "ponder",
            "ponder": {"strategies": STRATEGIES.names(),
                       "reasoning_effort": _efforts(self.config.efforts),
                       "reasoning_effort_open": _efforts(self.config.open_efforts)},
        }]}


def _efforts(table: Any) -> dict[str, Any]:
    return {level: {"strategy": e.strategy, "params": dict(e.params), "k": e.k} for level, e in table.items()}


def _server_key(config: ServerConfig) -> str | None:
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env, "")
    if not key:
        raise InvalidParameter("api_key_env", config.api_key_env,
                               "set that environment variable to the key clients must send, or drop --api-key-env")
    return key


def create_app(backend: Any, *, config: ServerConfig | None = None) -> FastAPI:
    """The app serving `backend` (any Backend) with `config` (metrics at app.state.metrics)."""
    config = config or ServerConfig()
    metrics = Metrics()
    service = _Service(backend, config, metrics)
    api = FastAPI(title="ponder", version="0.1.0", summary="OpenAI-compatible API with test-time compute.")
    _install_error_handlers(api)

    @api.post("/v1/chat/completions", responses=_ERRORS)
    async def chat_completions(request: Request) -> Any:
        return await service.answer(request, await parse(request, ChatCompletionRequest), chat=True)

    @api.post("/v1/completions", responses=_ERRORS)
    async def completions(request: Request) -> Any:
        return await service.answer(request, await parse(request, CompletionRequest), chat=False)

    declare_bodies(api, {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest})

    @api.get("/v1/models", responses=_ERRORS)
    async def models() -> dict[str, Any]:
        return service.models()

    @api.get("/v1/models/{model_id:path}", responses=_ERRORS)
    async def model(model_id: str) -> dict[str, Any]:
        if split_model(model_id)[2] != service.served:  # STRATEGY-K:MODEL names the served model too
            raise ApiError(404, f"the model {model_id!r} does not exist on this server; it serves "
                           f"{service.served!r}", param="model", code="model_not_found")
        return {**service.models()["data"][0], "id": model_id}

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.served, "in_flight": metrics.in_flight}

    @api.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    # Added last, so it runs first: before routing, validation and FastAPI's exception handlers.
    api.add_middleware(Gate, config=config, metrics=metrics, key=_server_key(config))
    api.state.metrics = metrics
    api.state.config = config
    return api
