"""Local HTTP servers for backend tests: a fault-injecting fake and the real llama-cpp-python server.

FaultServer answers POSTs on 127.0.0.1 (a free port, in a thread) by following a script of actions, one per
request, the last repeating: "ok" (a chat completion), "500", "429", "hang" (sleep past the client's timeout),
"drop" (close the connection halfway through the body), "sse_drop" (one
streamed event, then a dropped connection), "refuse" (close without answering). It counts requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ponder.models.llama_server import stop, wait_ready  # one way to start and stop a child server

OK_BODY = {
    "id": "x", "object": "chat.completion", "model": "fake",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer._Http

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._answer(200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        action = self.server.owner.next_action()
        if action == "ok":
            self._answer(200, OK_BODY)
        elif action in ("500", "429"):
            self._answer(int(action), {"error": {"message": f"injected {action}"}})
        elif action == "hang":
            time.sleep(self.server.owner.hang_s)
            with contextlib.suppress(OSError):
                self._answer(200, OK_BODY)
        elif action == "drop":
            body = json.dumps(OK_BODY).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif action == "sse_drop":  # one streamed event, then the connection dies mid-chunked-body
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            event = b'data: {"choices": [{"delta": {"content": "hel"}}]}\n\n'
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif action == "refuse":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            raise ValueError(f"unknown action {action!r}")

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FaultServer:
    """A scripted HTTP server on 127.0.0.1; use as a context manager. `requests` counts POSTs served."""

    class _Http(ThreadingHTTPServer):
        daemon_threads = True
        owner: FaultServer

    def __init__(self, script: Sequence[str], hang_s: float = 3.0) -> None:
        self.script, self.hang_s = list(script), hang_s
        self.requests = 0
        self._lock = threading.Lock()
        self._http = self._Http(("127.0.0.1", 0), _Handler)
        self._http.owner = self
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def next_action(self) -> str:
        with self._lock:
            action = self.script[min(self.requests, len(self.script) - 1)]
            self.requests += 1
            return action

    def __enter__(self) -> FaultServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


TINY_MODEL = Path(os.environ.get("PONDER_HOME", Path.home() / ".cache" / "ponder")) / "models" / "smollm2-135m.gguf"




@contextlib.contextmanager
def llama_cpp_server(model: Path = TINY_MODEL, n_ctx: int = 2048, ready_s: float = 120.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free 127.0.0.1 port; yield its /v1 base URL; kill it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2", "--verbose", "False"]
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in finally) -- a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(proc, f"{url}/models", log, ready_s, "llama_cpp.server")
        yield url
    finally:
        stop(proc)
        log.close()
