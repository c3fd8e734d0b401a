"""Secrets stay secret: a pass-through server does not lend the operator's key to a keyless client, and credentials
in a server URL reach the wire as basic auth but no error, log line, repr or store row."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import httpx
import pytest

from ponder.backends.credentials import is_redacted, redact_url, split_credentials
from ponder.backends.openai import OpenAIBackend
from ponder.backends.scripted import ScriptedBackend
from ponder.errors import InvalidParameter, UpstreamError
from ponder.server import ServerConfig, create_app
from ponder.types import Message, SamplingParams
from test_server_errors import CHAT, assert_openai_error, post

PASSWORD = "pw-Zq81xLmT04"
URL = f"http://alice:{PASSWORD}@upstream.example:8443/v1"
MSGS = [Message("user", "2+2?")]


class Upstream:
    """A recording upstream: 200 for the operator's key, 401 (echoing the key it got, as some servers do) else."""

    def __init__(self, operator_key: str) -> None:
        self.operator_key, self.seen = operator_key, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        self.seen.append(auth)
        if auth != f"Bearer {self.operator_key}":
            return httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {auth}"}})
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"content": "The answer is 4."},
                                                      "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 5}})


def _proxy(monkeypatch, **config: object) -> tuple[object, Upstream]:
    operator_key = "sk-operator-9f8e7d6c5b4a"
    monkeypatch.setenv("OPERATOR_KEY", operator_key)
    upstream = Upstream(operator_key)
    backend = OpenAIBackend("http://up/v1", "up", api_key_env="OPERATOR_KEY", max_retries=0, prefix_mode="none",
                            transport=httpx.MockTransport(upstream))
    return create_app(backend, config=ServerConfig(pass_through_key=True, **config)), upstream  # type: ignore[arg-type]


def test_a_keyless_client_of_a_pass_through_server_gets_401_and_the_upstream_is_never_asked(monkeypatch) -> None:
    app, upstream = _proxy(monkeypatch)
    error = assert_openai_error(post(app), 401)
    assert error["code"] == "invalid_api_key" and "Authorization: Bearer" in error["message"]
    assert upstream.seen == []
    refused = post(app, headers={"authorization": "Bearer sk-client-own-1234"})  # its own key, refused upstream
    assert refused.status_code == 401 and "sk-client-own-1234" not in refused.text
    assert upstream.seen == ["Bearer sk-client-own-1234"]


def test_the_operator_can_opt_into_serving_keyless_clients_with_its_own_key(monkeypatch) -> None:
    app, upstream = _proxy(monkeypatch, pass_through_fallback=True)
    served = post(app)
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["message"]["content"] == "The answer is 4."
    assert upstream.seen == ["Bearer sk-operator-9f8e7d6c5b4a"]


def test_pass_through_fallback_without_pass_through_is_refused_by_the_cli() -> None:
    from typer.testing import CliRunner

    from ponder.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", "scripted", "--pass-through-fallback"])
    assert result.exit_code == 2 and "--pass-through-key" in result.output


def test_url_credentials_are_split_off_and_redacted() -> None:
    bare, creds = split_credentials(URL)
    assert bare == "http://upstream.example:8443/v1" and creds == ("alice", PASSWORD)
    assert split_credentials("http://h/v1") == ("http://h/v1", None)
    assert redact_url(URL + "#m") == "http://alice:***@upstream.example:8443/v1#m"
    assert redact_url("http://tokenonly@h/v1") == "http://***@h/v1"
    assert redact_url("qwen2.5-coder-1.5b") == "qwen2.5-coder-1.5b" and redact_url("http://h/v1") == "http://h/v1"
    assert is_redacted(redact_url(URL)) and not is_redacted(URL) and not is_redacted("scripted")


def test_url_credentials_go_out_as_basic_auth_and_show_nowhere(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500, json={"error": {"message": f"bad upstream for {request.url} ({PASSWORD})"}})

    backend = OpenAIBackend(URL, "m", api_key_env="NO_SUCH_KEY_ENV", max_retries=1, backoff=0.0, prefix_mode="none",
                            transport=httpx.MockTransport(refuse))
    with pytest.raises(UpstreamError) as info:
        asyncio.run(backend.generate(MSGS, SamplingParams(max_tokens=4)))
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert seen and seen[0].headers["authorization"] == basic and "alice" not in str(seen[0].url)
    shown = [str(info.value), repr(backend), backend.base_url, caplog.text]
    assert all(PASSWORD not in text for text in shown), shown
    assert "upstream.example:8443" in str(info.value)  # the server is still named


def test_a_sweep_store_keeps_no_url_credentials_and_resume_asks_for_them(tmp_path: Path) -> None:
    from ponder.cli.sweep import _config
    from ponder.experiments.sweep import SweepConfig

    config = SweepConfig("gsm8k", URL + "#m", ("cot",), (1,))
    assert PASSWORD not in str(config.to_dict()) and "alice" in config.to_dict()["model"]
    stored = config.to_dict()
    with pytest.raises(InvalidParameter) as info:
        _config({}, stored)
    assert "--model" in str(info.value)
    assert _config({"model": URL + "#m"}, stored).model == URL + "#m"  # given again, it connects


@pytest.mark.parametrize("offset", [0, 100, 190, 195, 199, 290, 295, 299, 490, 495, 499, 590, 595, 599])
def test_a_key_at_any_truncation_boundary_shows_in_no_response_or_log(monkeypatch, caplog, offset: int) -> None:
    """The upstream's error quotes the operator's key at `offset`: the 502 and every log line lose it whole."""
    caplog.set_level(logging.DEBUG)
    key = "sk-" + "K7m2P9q4R1s8T3v6W0x5" * 2
    monkeypatch.setenv("OPERATOR_KEY", key)

    def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "x" * offset + f"key {key} broke" + "y" * 60}})

    backend = OpenAIBackend("http://up/v1", "up", api_key_env="OPERATOR_KEY", max_retries=1, backoff=0.0,
                            prefix_mode="none", transport=httpx.MockTransport(fail))
    response = post(create_app(backend))
    assert response.status_code == 502
    for text in (response.text, caplog.text):
        assert not any(key[i:i + 6] in text for i in range(len(key) - 5)), text[-120:]


def test_the_scripted_server_still_needs_no_key_without_pass_through() -> None:
    app = create_app(ScriptedBackend(lambda call, i: "The answer is 4.", model=CHAT["model"]))
    assert post(app).status_code == 200
