"""Server overhead benchmark: how much latency does `ponder serve` add over calling the backend directly?

    .venv/bin/python benchmarks/server.py [--latency-ms 20] [--requests 256] [--reps 3] [--client raw|httpx]

The same ScriptedBackend (a fixed `--latency-ms` per call, standing in for an engine) is used both ways:
  direct   `ChainOfThought.solve(problem, backend, Ledger())` in this process, the library path
  server   a plain chat completion over HTTP (keep-alive connections) to `ponder serve`'s app run by uvicorn in
           a child process on 127.0.0.1 (the same strategy, plus routing, JSON, HTTP and the response body)
at concurrency 1 and 32 (that many requests in flight at once, each worker sending its next when one returns).
Repetitions alternate direct and server so machine noise hits both alike. The added latency at a percentile is
server percentile minus direct percentile, over all repetitions pooled. Client and server share this machine's
cores, so the client's own HTTP cost is counted as overhead too: the default client is a minimal asyncio HTTP/1.1
client (as a load generator like wrk would be); `--client httpx` measures with httpx instead. Both processes run on
uvloop when it is installed. Writes benchmarks/results/server.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
BODY = {"model": "scripted", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 64}
REPLY = "Two plus two is four. The answer is 4."


def _backend(latency_s: float):
    from ponder.backends.scripted import ScriptedBackend

    return ScriptedBackend(lambda call, i: REPLY, model="scripted", latency=latency_s)


def serve(port: int, latency_s: float) -> None:
    """The child process: the app on the scripted backend, under uvicorn."""
    import uvicorn

    from ponder.server import ServerConfig, create_app

    app = create_app(_backend(latency_s), config=ServerConfig(max_concurrency=256))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _workers(concurrency: int, total: int, one) -> list[float]:
    """Run `total` calls of `one()` with `concurrency` in flight; the latency of each, in seconds."""
    latencies: list[float] = []
    left = iter(range(total))

    async def worker() -> None:
        for _ in left:
            start = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def direct(latency_s: float, concurrency: int, total: int) -> list[float]:
    from ponder.ledger import Ledger
    from ponder.strategies.cot import ChainOfThought
    from ponder.types import Problem

    backend, strategy = _backend(latency_s), ChainOfThought(system="", temperature=1.0, max_tokens=64)
    problem = Problem(id="bench", question=BODY["messages"][0]["content"], kind="open")

    async def one() -> None:
        result = await strategy.solve(problem, backend, Ledger())
        assert result.text == REPLY

    return await _workers(concurrency, total, one)


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a load generator that costs little itself
    (httpx spends about as much CPU per request as the server does, which would be counted as overhead)."""

    def __init__(self, url: str) -> None:
        self.host, _, port = url.removeprefix("http://").partition(":")
        self.port = int(port)
        payload = json.dumps(BODY).encode()
        self.request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self.host}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
        self.pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self) -> tuple[int, dict]:
        conn = self.pool.pop() if self.pool else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(h.split(":", 1)[1]) for h in lines[1:] if h.lower().startswith("content-length:"))
        body = json.loads(await reader.readexactly(length))
        self.pool.append(conn)
        return status, body

    async def open(self, n: int) -> None:
        """Open n connections before timing, each warmed by one request (as the httpx path does with /health)."""
        for _ in range(n):
            self.pool.append(await asyncio.open_connection(self.host, self.port))
            await self.post()

    def close(self) -> None:
        for _, writer in self.pool:
            writer.close()


async def server(url: str, concurrency: int, total: int, client_kind: str = "raw") -> list[float]:
    if client_kind == "raw":
        raw = RawClient(url)
        await raw.open(concurrency)

        async def one() -> None:
            status, body = await raw.post()
            assert status == 200 and body["choices"][0]["message"]["content"] == REPLY

        try:
            return await _workers(concurrency, total, one)
        finally:
            raw.close()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        for _ in range(concurrency):  # open the connections before timing
            await client.get("/health")

        async def one_httpx() -> None:
            r = await client.post("/v1/chat/completions", json=BODY)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == REPLY

        return await _workers(concurrency, total, one_httpx)


async def in_process(total: int) -> float:
    """Milliseconds of the app's own work per request: ASGI calls in this process (no HTTP, no backend latency)
    minus direct solves, one at a time. A measure of the proxy's CPU cost that machine load does not queue."""
    from ponder.server import create_app

    app, payload = create_app(_backend(0.0)), json.dumps(BODY).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": ""}

    async def call() -> None:
        messages = iter([{"type": "http.request", "body": payload, "more_body": False}])
        sent: list[dict] = []

        async def receive() -> dict:
            return next(messages, {"type": "http.disconnect"})

        async def send(message: dict) -> None:
            sent.append(message)

        await app(dict(scope), receive, send)
        assert sent[0]["status"] == 200

    for _ in range(100):
        await call()
    start = time.perf_counter()
    for _ in range(total):
        await call()
    served = time.perf_counter() - start
    solves = await direct(0.0, 1, total)
    return (served - sum(solves)) / total * 1000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency-ms", str(latency_s * 1000)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the benchmark server did not start")


def _run(coro):
    """Run on uvloop when installed (the server's loop too), so both paths get the same event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def measure(latency_s: float, requests: int, reps: int, client: str) -> dict[str, object]:
    proc, url = _start_server(latency_s)
    out: dict[str, object] = {}
    try:
        _run(server(url, 4, 64, client))  # warm up both paths
        _run(direct(latency_s, 4, 64))
        cpu = [_run(in_process(requests * 4)) for _ in range(reps)]
        out["server_cpu_ms_per_request"] = round(statistics.median(cpu), 3)
        print(f"in process: {out['server_cpu_ms_per_request']} ms of the app's own work per request", flush=True)
        for c in (1, 32):
            d_all: list[float] = []
            s_all: list[float] = []
            for _ in range(reps):
                d_all += _run(direct(latency_s, c, requests))
                s_all += _run(server(url, c, requests, client))
            for q in (50, 99):
                d, s = _pct(d_all, q) * 1000, _pct(s_all, q) * 1000
                out[f"p{q}_direct_ms_c{c}"] = round(d, 3)
                out[f"p{q}_server_ms_c{c}"] = round(s, 3)
                out[f"p{q}_overhead_ms_c{c}"] = round(s - d, 3)
            out[f"mean_overhead_ms_c{c}"] = round((statistics.mean(s_all) - statistics.mean(d_all)) * 1000, 3)
            print(f"c={c}: " + ", ".join(f"{k}={v}" for k, v in out.items() if k.endswith(f"_c{c}")), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=20.0, help="The scripted backend's time per call.")
    ap.add_argument("--requests", type=int, default=256, help="Requests per concurrency level per repetition.")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--client", choices=("raw", "httpx"), default="raw",
                    help="The load generator: a minimal asyncio HTTP/1.1 client, or httpx.")
    ap.add_argument("--out", default=str(HERE / "results" / "server.json"))
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    latency_s = args.latency_ms / 1000
    if args.serve is not None:
        serve(args.serve, latency_s)
        return
    load_before = os.getloadavg()[0]
    result = {
        "benchmark": "server overhead over direct strategy.solve (cot, scripted backend)",
        "backend_latency_ms": args.latency_ms,
        "requests_per_level_per_rep": args.requests,
        "reps": args.reps,
        "client": args.client,
        **measure(latency_s, args.requests, args.reps, args.client),
        "method": __doc__.split("\n\n", 2)[2].strip(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_avg_1m_before": load_before, "load_avg_1m_after": os.getloadavg()[0]},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
