"""Fuzzing the server with schemathesis against its own OpenAPI schema: no input, valid or not, may cause a 5xx.

Schemathesis generates bodies that fit the schema and bodies that break it (both modes are on by default), for
every operation, and sends them to the app in process. Bounded: 30 examples per operation, no deadline.
"""

from __future__ import annotations

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
