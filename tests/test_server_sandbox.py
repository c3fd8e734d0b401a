"""A client that leaves `ponder serve` takes its sandboxes with it: they are killed within a second, and the
server counts the request in flight until they are dead (streamed or not)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from _procs import alive, sandbox_pids
from ponder.backends.scripted import ScriptedBackend
from ponder.server import ServerConfig, create_app
from test_server import MODEL, live_server

pytestmark = pytest.mark.timeout(60)


def _post_raw(url: str, body: dict) -> socket.socket:
    """A POST sent on a raw socket that the test then closes without reading: a client hanging up mid-request."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    payload = json.dumps(body).encode()
    head = (f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    sock.sendall(head.encode() + payload)
    return sock


@pytest.mark.parametrize("stream", [False, True])
def test_a_disconnect_kills_the_sandboxes_within_a_second_and_they_count_until_dead(stream: bool) -> None:
    marker = f"disconnect-{uuid.uuid4().hex}"
    program = f"```python\n# {marker}\nwhile True:\n    pass\n```"
    app = create_app(ScriptedBackend(lambda call, i: program, model=MODEL), config=ServerConfig(keepalive_s=0.2))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is 6 * 7?"}], "stream": stream,
            "ponder": {"strategy": "program_aided", "kind": "math", "params": {"n": 2, "timeout_s": 10}}}
    with live_server(app) as url, httpx.Client(base_url=url.removesuffix("/v1"), timeout=5) as http:
        def in_flight() -> int:
            return http.get("/health").json()["in_flight"]

        sock = _post_raw(url, body)
        deadline = time.monotonic() + 15
        while len(sandbox_pids(marker)) < 2:
            assert time.monotonic() < deadline, "the sandboxes never started"
            time.sleep(0.05)
        time.sleep(0.3)  # both programs running
        pids = sandbox_pids(marker)
        assert in_flight() == 1
        start = time.monotonic()
        sock.close()
        while alive(pids) and time.monotonic() - start < 5:
            counted = in_flight()
            assert counted == 1 or not alive(pids), "in_flight read 0 while the request's sandboxes still ran"
            time.sleep(0.01)
        seconds = time.monotonic() - start
        assert alive(pids) == set(), "the sandboxes outlived the client"
        assert seconds < 1.0, f"the sandboxes died {seconds:.2f}s after the client left"
        while in_flight() and time.monotonic() - start < 5:
            time.sleep(0.01)
        assert in_flight() == 0
