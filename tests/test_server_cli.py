"""`ponder serve` as a user runs it: the real command in a child process, called with the official openai client."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from _servers import stop
from ponder.cli.serve import open_server_backend, parse_efforts
from ponder.errors import InvalidParameter
from test_server import free_port

PONDER = Path(sys.executable).parent / "ponder"


@contextlib.contextmanager
def ponder_serve(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `ponder serve ARGS` on a free 127.0.0.1 port; yield its /v1 URL; stop it afterwards."""
    port = free_port()
    proc = subprocess.Popen([str(PONDER), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ponder serve exited: {proc.stdout.read() if proc.stdout else ''}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("ponder serve did not start")
            time.sleep(0.2)
        yield base + "/v1"
    finally:
        stop(proc)


def test_ponder_serve_with_the_openai_sdk() -> None:
    key = "k-" + os.urandom(8).hex()
    with ponder_serve("--model", "scripted", "--api-key-env", "PONDER_KEY", "--effort", "high=self_consistency-3",
                      env={"PONDER_KEY": key}) as url:
        client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)
        messages = [{"role": "user", "content": "The answer is 7."}]  # the scripted backend echoes it
        plain = client.chat.completions.create(model="scripted", messages=messages)
        assert plain.choices[0].message.content == "The answer is 7."
        high = client.chat.completions.create(model="scripted", messages=messages, reasoning_effort="high")
        assert high.model_extra["ponder"]["params"]["n"] == 3  # the --effort mapping
        assert high.usage.completion_tokens == 3 * plain.usage.completion_tokens
        streamed = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model="scripted", messages=messages, stream=True)
                           if c.choices)
        assert streamed == "The answer is 7."
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()


def test_effort_option_is_parsed_and_checked() -> None:
    efforts = parse_efforts(["high=budget_forcing-4", "low=cot"])
    assert (efforts["high"].strategy, efforts["high"].k) == ("budget_forcing", 4)
    assert efforts["medium"].strategy == "self_consistency"  # the defaults stay
    with pytest.raises(InvalidParameter, match="--effort"):
        parse_efforts(["high:cot"])


def test_upstream_option_opens_the_http_backend() -> None:
    backend = open_server_backend("ignored", "http://127.0.0.1:9/v1", "served-model", "MY_KEY_ENV", None, None)
    assert type(backend).__name__ == "OpenAIBackend"
    assert (backend.base_url, backend.model, backend.api_key_env) == ("http://127.0.0.1:9/v1", "served-model",
                                                                      "MY_KEY_ENV")


def test_an_impossible_port_is_refused_before_anything_starts() -> None:
    from typer.testing import CliRunner

    from ponder.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", "scripted", "--port", "99999"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "port" in result.output and "65535" in result.output


def test_a_policy_for_another_model_is_refused(tmp_path: Path) -> None:
    import json

    from ponder.cli.serve import policy_effort

    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"kind": "ponder.compute_optimal_policy", "version": 1, "model": "qwen2.5-coder-1.5b",
                                "probe": {"samples": 2}, "choices": {"1": {"strategy": "cot"}}}))
    assert policy_effort(path, "qwen2.5-coder-1.5b").strategy == "compute_optimal"
    with pytest.raises(InvalidParameter, match="learned on"):
        policy_effort(path, "smollm2-135m")
