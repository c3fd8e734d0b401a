"""Fuzzing the server with schemathesis against its own OpenAPI schema: no input, valid or not, may cause a 5xx.

Schemathesis generates bodies that fit the schema and bodies that break it (both modes are on by default), for
every operation, and sends them to the app in process (scripted backend, 30 examples per operation) and to a live
server on the real tiny model (8 per operation, small ceilings, marked slow). No deadline: bounded by examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from ponder.backends.scripted import ScriptedBackend, ScriptedCall
from ponder.server import ServerConfig, create_app


def echo(call: ScriptedCall, i: int) -> str:
    return f"{call.last_user[:40]} The answer is {i}."


app = create_app(ScriptedBackend(echo, model="tiny"), config=ServerConfig(keepalive_s=0.5))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        error = response.json()["error"]  # every error is OpenAI-shaped
        assert error["message"] and error["type"]


@pytest.fixture(scope="module")
def real_server() -> Iterator[str]:
    """The server on the real tiny model (smollm2-135m), live on a port, with small ceilings so that every fuzzed
    request stays cheap: it is the real engine that must never answer 5xx, not the scripted one."""
    from ponder.backends.llamacpp import LlamaCppBackend
    from test_server import live_server

    tiny = Path("~/.cache/ponder/models/smollm2-135m.gguf").expanduser()
    assert tiny.is_file(), f"{tiny} is missing: `make test` pulls it (ponder models pull smollm2-135m)"
    backend = LlamaCppBackend(tiny, n_ctx=2048, n_seq_max=8, n_threads=2, name="tiny")
    config = ServerConfig(keepalive_s=0.5, max_n=2, max_samples=4, max_request_tokens=48, default_max_tokens=8,
                          max_sandbox_seconds=2.0)
    try:
        with live_server(create_app(backend, config=config)) as url:
            yield url.removesuffix("/v1")
    finally:
        backend.close()


# The same routes and schema as the scripted app's; the cases are sent to the live real-model server.
real = schemathesis.openapi.from_dict(app.openapi())


@pytest.mark.slow
@real.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error_on_the_real_tiny_model(case: schemathesis.Case, real_server: str) -> None:
    response = case.call(base_url=real_server, timeout=120)
    assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]
