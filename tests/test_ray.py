"""ponder on Ray: the same sweep on actors (rows equal to in-process), an actor killed mid-sweep, server replicas.

One local Ray instance (2 CPUs, as on this machine) serves the whole module: starting Ray takes seconds here.
The replicas are scripted backends, so these tests are about scheduling, not numerics; the real-model equality
tests are in test_ray_model.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sweep_helpers
from ponder.backends.scripted import ScriptedBackend
from ponder.errors import BackendError, ModelNotFound
from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, plan, run_sweep, settings
from ponder.tasks import load_task
from ponder.types import Message, SamplingParams
from sweep_helpers import reply, write_task

ray = pytest.importorskip("ray")
from ponder.distributed import BackendSpec, RayExecutor, RayReplicaBackend, ReplicaPool, connect  # noqa: E402

# The actors import what they run; the test helpers are not on their path, so they travel by value.
ray.cloudpickle.register_pickle_by_value(sweep_helpers)

STRATEGIES = ("cot", "self_consistency", "best_of_n", "beam_search")


@pytest.fixture(scope="module")
def ray_session():
    session = connect(num_cpus=2)
    yield session
    session.close()


def _pid_reply(call, i):
    """Which process answered: each replica's replies carry its pid."""
    return f"pid {os.getpid()} seed {call.params.seed}"


ray.cloudpickle.register_pickle_by_value(__import__(__name__))


def pool_of(replicas: int = 2, latency: float = 0.0, script=reply) -> ReplicaPool:
    return ReplicaPool(BackendSpec.of("scripted", script=script, latency=latency), replicas, num_cpus=0)


def sweep_rows(store: Store) -> list[tuple]:
    samples = [(s.problem_id, s.pool, s.index, s.seed, s.text, s.answer, s.correct, s.score, s.finish_reason,
                {r: (u.prompt_tokens, u.completion_tokens) for r, u in s.usage_by_role.items()})
               for s in store.samples()]
    results = [(r.problem_id, r.strategy, r.budget, r.text, r.answer, r.correct, r.finish_reason, r.trace,
                {k: (u.prompt_tokens, u.completion_tokens, u.calls) for k, u in r.usage_by_role.items()})
               for r in store.results()]
    return samples + results


def run(config, backend, folder: Path, executor) -> Store:
    store = Store.create(folder, settings(config, backend, "math"))
    asyncio.run(run_sweep(config, backend, store, executor))
    return store


def test_ray_sweep_stores_the_same_rows_and_provenance_as_in_process(tmp_path, ray_session):
    config = SweepConfig(write_task(tmp_path, 6), "scripted", STRATEGIES, (1, 2, 4), seed=5)
    local = ScriptedBackend(reply)
    expected = run(config, local, tmp_path / "local", InProcessExecutor(local, 3))
    pool = pool_of(2)
    try:
        backend = RayReplicaBackend(pool)
        got = run(config, backend, tmp_path / "ray", RayExecutor(pool, concurrency=2))
    finally:
        pool.close()
    assert len(sweep_rows(expected)) == 6 * 4 + 6 * (1 + 3)  # pool of 4 per problem; cot + beam at 3 budgets
    assert sweep_rows(got) == sweep_rows(expected)
    volatile = {"created"}
    assert {k: v for k, v in got.config.items() if k not in volatile} == \
        {k: v for k, v in expected.config.items() if k not in volatile}


def _open_reply(call, i):
    """Open prompts: a judge (one token) that prefers the longer response; thinking makes the answer longer."""
    from ponder.backends.scripted import Reply

    text = call.last_user
    if call.params.max_tokens == 1 and "Response A:" in text:
        a = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
        b = text.split("Response B:\n")[1].split("\n\nAnswer with")[0]
        letter, other = ("A", "B") if len(a) > len(b) else ("B", "A")
        return Reply(letter, logprob=-0.05, top_logprobs={letter: -0.05, other: -3.0})
    if "</think>" in call.prefix:
        return "A longer, considered answer."
    return "thinking" if call.prefix.startswith("<think>") else "An answer."


def test_an_open_sweep_on_ray_stores_the_same_answers_and_judgments_as_in_process(tmp_path, ray_session):
    config = SweepConfig("open", "scripted", ("budget_forcing", "tournament"), (1, 2), limit=3, max_tokens=32)
    local = ScriptedBackend(_open_reply)
    expected = run(config, local, tmp_path / "local", InProcessExecutor(local, 3))
    pool = pool_of(2, script=_open_reply)
    try:
        got = run(config, RayReplicaBackend(pool), tmp_path / "ray", RayExecutor(pool, concurrency=2))
    finally:
        pool.close()

    def judged(store):
        return [(j.problem_id, j.strategy, j.budget, j.response_first, j.baseline_first) for j in store.judgments()]

    assert len(judged(expected)) == 3 * 4 and judged(got) == judged(expected)
    assert sweep_rows(got) == sweep_rows(expected)
    assert all(j.response_first > 0.5 > j.baseline_first for j in expected.judgments() if j.strategy ==
               "budget_forcing")  # its longer answer wins in both orders


def test_units_are_spread_over_the_actors(tmp_path, ray_session):
    config = SweepConfig(write_task(tmp_path, 4), "scripted", ("cot", "self_consistency"), (1, 2), seed=1)
    pool = pool_of(2, latency=0.05, script=_pid_reply)
    try:
        pids = set(pool.pids())
        store = run(config, RayReplicaBackend(pool), tmp_path / "r", RayExecutor(pool, concurrency=1))
    finally:
        pool.close()
    units = Counter(int(r.text.split()[1]) for r in store.results())  # one greedy unit per problem
    units.update(int(s.text.split()[1]) for s in store.samples() if s.index == 0)  # one unit per pool
    assert set(units) == pids and sum(units.values()) == 8 and min(units.values()) >= 2  # neither actor idle


def _key_counts(folder: Path) -> tuple[Counter, Counter]:
    conn = sqlite3.connect(folder / "store.sqlite")
    try:
        samples = Counter(conn.execute("SELECT problem_id, pool, idx FROM samples").fetchall())
        results = Counter(conn.execute("SELECT problem_id, strategy, budget FROM results").fetchall())
    finally:
        conn.close()
    return samples, results


def test_actors_of_the_local_instance_run_at_normal_priority(ray_session):
    # Ray's default niceness (15) would hand a shared machine's CPU to everything but the sweep.
    pool = pool_of(1)
    try:
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pool.pids()] == [os.getpriority(os.PRIO_PROCESS, 0)]
    finally:
        pool.close()


def test_killing_an_actors_process_mid_sweep_loses_and_duplicates_nothing(tmp_path, ray_session):
    config = SweepConfig(write_task(tmp_path, 8), "scripted", ("cot", "self_consistency", "beam_search"), (1, 2),
                         seed=3)
    pool = pool_of(2, latency=0.15)
    victim_pid = pool.pids()[0]
    executor = RayExecutor(pool, concurrency=2)
    store = Store.create(tmp_path / "r", settings(config, RayReplicaBackend(pool), "math"))
    before: list[tuple] = []

    def kill_after_a_few(res) -> None:
        if len(before) == 0 and len(sweep_rows(store)) >= 6:  # a few units in; both actors busy
            before.extend(sweep_rows(store))
            os.kill(victim_pid, signal.SIGKILL)

    try:
        asyncio.run(run_sweep(config, RayReplicaBackend(pool), store, executor, on_result=kill_after_a_few))
    finally:
        pool.close()
    units = plan(config, load_task(config.task).problems(None, seed=config.seed))
    samples, results = _key_counts(tmp_path / "r")
    assert before, "the actor was never killed"
    assert pool.alive == [False, False]  # closed; the victim was marked dead before
    assert executor.rescheduled >= 1  # the victim had units in flight; they ran again elsewhere
    assert set(samples.values()) == {1} and set(results.values()) == {1}
    assert len(samples) == 8 * 2 and len(results) == sum(1 for u in units if u.key[0] == "result")
    after = sweep_rows(store)
    assert all(row in after for row in before)  # rows finished before the kill are unchanged
    local = ScriptedBackend(reply)
    assert after == sweep_rows(run(config, local, tmp_path / "local", InProcessExecutor(local)))


def test_a_sweep_whose_every_actor_died_stops_with_a_clear_error(tmp_path, ray_session):
    config = SweepConfig(write_task(tmp_path, 4), "scripted", ("cot",), (1,), seed=3)
    pool = pool_of(1, latency=0.3)
    pid = pool.pids()[0]
    store = Store.create(tmp_path / "r", settings(config, RayReplicaBackend(pool), "math"))
    threading.Timer(0.1, os.kill, (pid, signal.SIGKILL)).start()
    try:
        with pytest.raises(BackendError, match="every Ray replica"):
            asyncio.run(run_sweep(config, RayReplicaBackend(pool), store, RayExecutor(pool)))
    finally:
        pool.close()


def test_a_failing_unit_stops_the_sweep_with_its_own_error(tmp_path, ray_session):
    config = SweepConfig(write_task(tmp_path, 2), "scripted", ("self_consistency",), (1, 2), seed=3)
    pool = ReplicaPool(BackendSpec.of("scripted", script=["just one reply"]), 1, num_cpus=0)
    store = Store.create(tmp_path / "r", settings(config, RayReplicaBackend(pool), "math"))
    try:
        with pytest.raises(BackendError, match="ran out of replies"):
            asyncio.run(run_sweep(config, RayReplicaBackend(pool), store, RayExecutor(pool)))
    finally:
        pool.close()


def test_a_replica_that_cannot_open_its_model_raises_the_ponder_error(tmp_path, ray_session):
    with pytest.raises(ModelNotFound, match="does not exist"):
        ReplicaPool(BackendSpec.of(str(tmp_path / "missing.gguf")), 1, num_cpus=0)


def test_replicas_running_other_ponder_code_are_refused(ray_session, monkeypatch):
    import ponder.distributed.replicas as replicas

    monkeypatch.setattr(replicas, "DRIVER_CODE", "0.0.1+000000000000")
    with pytest.raises(BackendError, match="other ponder code"):
        pool_of(1)


def test_cli_sweep_with_ray_matches_the_in_process_cli(tmp_path, ray_session):
    from ponder.cli import app

    task = write_task(tmp_path, 3)
    common = ["sweep", "--task", task, "--model", "scripted", "--budgets", "1,2", "--strategies",
              "cot,self_consistency"]
    plain = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a")])
    on_ray = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--ray", "--actors", "2"])
    assert plain.exit_code == 0, plain.output
    assert on_ray.exit_code == 0, on_ray.output
    assert ray.is_initialized()  # the CLI joined this module's Ray and left it running
    with Store.open(tmp_path / "a") as a, Store.open(tmp_path / "b") as b:
        assert sweep_rows(a) == sweep_rows(b) and len(sweep_rows(a)) == 3 * 3
    conn = sqlite3.connect(tmp_path / "a" / "store.sqlite")  # lose the last problem's pool, as a kill would
    with conn:
        conn.execute("DELETE FROM samples WHERE problem_id = 'jsonl/q2'")
    conn.close()
    resumed = CliRunner().invoke(app, ["sweep", "--resume", str(tmp_path / "a"), "--ray", "--actors", "1"])
    assert resumed.exit_code == 0, resumed.output  # an in-process run resumes on Ray: same provenance
    with Store.open(tmp_path / "a") as a, Store.open(tmp_path / "b") as b:
        assert sweep_rows(a) == sweep_rows(b)


@contextlib.contextmanager
def live_server(app: object):
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields its base URL (…/v1)."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_http_replicas_of_a_serving_endpoint_store_the_in_process_rows(tmp_path, ray_session):
    from ponder.backends.factory import open_backend
    from ponder.distributed.launch import RayOptions, ray_replicas
    from ponder.server import create_app

    with live_server(create_app(ScriptedBackend(reply))) as url:
        spec = f"{url}#scripted"
        config = SweepConfig(write_task(tmp_path, 3), spec, ("cot", "self_consistency"), (1, 2), seed=2)
        local = open_backend(spec)
        expected = run(config, local, tmp_path / "local", InProcessExecutor(local, 2))
        with ray_replicas(spec, RayOptions(replicas=2)) as backend:
            got = run(config, backend, tmp_path / "ray", RayExecutor(backend.pool, concurrency=2))
    rows = sweep_rows(expected)
    assert len(rows) == 3 * 3 and len({r[4] for r in rows[:6]}) > 1  # samples of a pool differ by seed
    assert sweep_rows(got) == rows


# -- replicas behind the server ---------------------------------------------------------------------------------

def _ask(backend, content="hi", seed=1):
    return backend.generate([Message("user", content)], SamplingParams(max_tokens=16, seed=seed))


def test_replica_backend_sends_each_call_to_the_least_loaded_replica(ray_session):
    pool = pool_of(2, latency=0.3, script=_pid_reply)
    backend = RayReplicaBackend(pool)
    try:
        pids = pool.pids()

        async def burst():
            return await asyncio.gather(*(_ask(backend, seed=i) for i in range(6)))

        answered = Counter(int(gens[0].text.split()[1]) for gens in asyncio.run(burst()))
        assert answered == Counter({pids[0]: 3, pids[1]: 3})
        assert pool.load == [0, 0]

        async def one_busy():  # replica 0 holds a slow call: the next three go where the load is lower
            slow = asyncio.ensure_future(_ask(backend, seed=99))
            await asyncio.sleep(0)
            rest = await asyncio.gather(*(_ask(backend, seed=i) for i in range(3)))
            return (await slow), rest

        slow, rest = asyncio.run(one_busy())
        assert int(slow[0].text.split()[1]) == pids[0]
        assert Counter(int(g[0].text.split()[1]) for g in rest) == Counter({pids[1]: 2, pids[0]: 1})
    finally:
        backend.close()


def test_replica_backend_survives_a_dead_replica_and_streams(ray_session):
    pool = pool_of(2, script=lambda call, i: f"echo {call.last_user} from {os.getpid()}")
    backend = RayReplicaBackend(pool)
    try:
        pids = pool.pids()
        os.kill(pids[0], signal.SIGKILL)
        gens = asyncio.run(_ask(backend, "hello"))
        assert gens[0].text == f"echo hello from {pids[1]}" and pool.alive == [False, True]
        pieces: list[str] = []
        streamed = asyncio.run(backend.stream_generate([Message("user", "a b c")], SamplingParams(max_tokens=16),
                                                       on_delta=pieces.append))
        assert len(pieces) > 1 and "".join(pieces) == streamed[0].text == f"echo a b c from {pids[1]}"
        assert streamed[0].usage.completion_tokens == len(pieces)
    finally:
        backend.close()


def test_a_cancelled_call_is_cancelled_on_its_replica(ray_session):
    pool = pool_of(1, latency=5.0)
    backend = RayReplicaBackend(pool)

    async def give_up():
        call = asyncio.ensure_future(_ask(backend))
        await asyncio.sleep(0.5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    try:
        asyncio.run(give_up())
        assert pool.load == [0]
        for _ in range(50):  # the cancellation reaches the actor's event loop shortly
            if ray.get(pool.actors[0].attribute.remote("cancelled")) == 1:
                break
            time.sleep(0.1)
        assert ray.get(pool.actors[0].attribute.remote("cancelled")) == 1
    finally:
        backend.close()


def test_server_answers_through_ray_replicas(ray_session):
    import httpx

    from ponder.server import create_app

    pool = pool_of(2, script=lambda call, i: f"The answer is {len(call.last_user)}.")
    backend = RayReplicaBackend(pool)

    async def chat():
        transport = httpx.ASGITransport(app=create_app(backend))
        async with httpx.AsyncClient(transport=transport, base_url="http://ponder") as client:
            body = {"model": "scripted", "messages": [{"role": "user", "content": "12345"}],
                    "reasoning_effort": "medium"}
            return await client.post("/v1/chat/completions", json=body)

    try:
        response = asyncio.run(chat())
    finally:
        backend.close()
    assert response.status_code == 200, response.text
    assert "5" in response.json()["choices"][0]["message"]["content"]


def test_serve_opens_k_ray_replicas_of_the_model(ray_session):
    from ponder.cli.serve import open_server_backend
    from ponder.distributed.launch import RayOptions

    backend = open_server_backend("scripted", None, None, "OPENAI_API_KEY", None, None, RayOptions(replicas=3))
    try:
        assert isinstance(backend, RayReplicaBackend) and len(set(backend.pool.pids())) == 3
        assert asyncio.run(_ask(backend, "echo me"))[0].text == "echo me"
    finally:
        backend.close()
    assert ray.is_initialized()  # it joined this module's Ray instance, and left it running
