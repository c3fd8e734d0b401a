"""A bounded load test: 64 concurrent clients against a live server on the scripted backend lose nothing.

Each client sends its own questions (some streamed, some with a voting strategy); the scripted backend echoes the
question, so every answer can be matched to its request. Every response must be a 200 with a distinct id, the
right answer, and usage; afterwards nothing is left in flight.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ponder.backends.scripted import ScriptedBackend, ScriptedCall
from ponder.server import create_app
from test_server import MODEL, live_server

CLIENTS, REQUESTS_EACH = 64, 4


def echo(call: ScriptedCall, i: int) -> str:
    return f"You asked {call.last_user}"


async def one_client(base: str, c: int) -> list[tuple[str, str, str]]:
    """(question, answer, id) for each request of client c."""
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for j in range(REQUESTS_EACH):
            question = f"q-{c}-{j}"
            body: dict = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
            if j == 1:  # a math prompt votes (self_consistency); an open one thinks longer (budget forcing)
                body.update(reasoning_effort="medium", ponder={"kind": "math"} if c % 2 else {})
            if j == 2:
                body["stream"] = True
                async with http.stream("POST", "/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
                assert events[-1] == "[DONE]"
                chunks = [json.loads(e) for e in events[:-1]]
                text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
                out.append((question, text, chunks[0]["id"]))
                continue
            r = await http.post("/chat/completions", json=body)
            assert r.status_code == 200, r.text
            reply = r.json()
            assert reply["usage"]["completion_tokens"] > 0
            out.append((question, reply["choices"][0]["message"]["content"], reply["id"]))
    return out


def test_64_concurrent_clients_lose_nothing() -> None:
    backend = ScriptedBackend(echo, model=MODEL, latency=0.005)
    app = create_app(backend)
    with live_server(app) as url:
        async def run() -> list[tuple[str, str, str]]:
            results = await asyncio.wait_for(
                asyncio.gather(*(one_client(url, c) for c in range(CLIENTS))), timeout=240)
            return [r for client in results for r in client]
        results = asyncio.run(run())
        health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert len(results) == CLIENTS * REQUESTS_EACH
    assert all(answer == f"You asked {question}" for question, answer, _ in results)
    assert len({rid for _, _, rid in results}) == len(results)
    assert health["in_flight"] == 0
    assert app.state.metrics.requests[("/v1/chat/completions", 200)] == CLIENTS * REQUESTS_EACH


@pytest.mark.slow
def test_64_concurrent_clients_on_the_real_tiny_model_all_get_answers_and_health_stays_up() -> None:
    """The scripted backend cannot show the real engine's scheduling: 64 clients with mixed n and prompt lengths
    against smollm2-135m, every response a 200 of the right shape, /health answering within 1 s throughout."""
    from pathlib import Path

    from ponder.backends.llamacpp import LlamaCppBackend

    tiny = Path("~/.cache/ponder/models/smollm2-135m.gguf").expanduser()
    assert tiny.is_file(), f"{tiny} is missing: `make test` pulls it (ponder models pull smollm2-135m)"
    backend = LlamaCppBackend(tiny, n_ctx=2048, n_seq_max=16, n_threads=2, name=MODEL)
    app = create_app(backend)
    try:
        with live_server(app) as url:
            async def client(http: httpx.AsyncClient, c: int) -> dict:
                system = "Answer briefly. " * (1 + c % 9)
                body = {"model": MODEL, "max_tokens": 4 + c % 5, "n": 1 + c % 3,
                        "messages": [{"role": "system", "content": system},
                                     {"role": "user", "content": f"Say {c}."}]}
                r = await http.post("/chat/completions", json=body)
                assert r.status_code == 200, r.text
                reply = r.json()
                assert len(reply["choices"]) == 1 + c % 3 and reply["usage"]["completion_tokens"] > 0
                return reply

            async def health_watch(http: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
                waits = []
                while not stop.is_set():
                    t = asyncio.get_running_loop().time()
                    assert (await http.get(url.removesuffix("/v1") + "/health")).status_code == 200
                    waits.append(asyncio.get_running_loop().time() - t)
                    await asyncio.sleep(0.2)
                return waits

            async def run() -> tuple[list[dict], list[float]]:
                # Clients made up front: building 64 of them inside the timed window would block this loop itself.
                limits = httpx.Limits(max_connections=CLIENTS + 2)
                async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http, \
                        httpx.AsyncClient(timeout=5) as probe:
                    stop = asyncio.Event()
                    watcher = asyncio.create_task(health_watch(probe, stop))
                    replies = await asyncio.wait_for(asyncio.gather(*(client(http, c) for c in range(CLIENTS))),
                                                     timeout=600)
                    stop.set()
                    return replies, await watcher

            replies, waits = asyncio.run(run())
            health = httpx.get(url.removesuffix("/v1") + "/health").json()
    finally:
        backend.close()
    assert len({r["id"] for r in replies}) == CLIENTS
    assert health["in_flight"] == 0 and waits and max(waits) < 1.0


def test_a_large_n_on_the_scripted_backend_never_holds_the_event_loop() -> None:
    """Generation yields to the loop: during a 20000-sample call a ticker (the server's /health) gets a turn at least
    every 32 samples. Counted in samples rendered, not in seconds: a wall-clock gap measured this machine's load."""
    from ponder.types import Message, SamplingParams

    rendered = 0

    def script(call: ScriptedCall, i: int) -> str:
        nonlocal rendered
        rendered += 1
        return "The answer is " + "4 " * 40

    backend = ScriptedBackend(script)
    seen: list[int] = []  # samples rendered so far, at each of the ticker's turns

    async def main() -> int:
        task = asyncio.ensure_future(backend.generate([Message("user", "q")], SamplingParams(n=20000)))
        while not task.done():
            await asyncio.sleep(0)
            seen.append(rendered)
        return len(task.result())

    assert asyncio.run(main()) == 20000
    between = [b - a for a, b in zip([0, *seen], seen, strict=False)]
    assert len(seen) >= 20000 // 32 and max(between) <= 32, max(between)
