"""ponder on Ray with a real model (slow): the stored rows equal an in-process sweep's with the same seeds.

Sampling is seeded per problem and sample, so the executor cannot change a sample. What can change one is
floating-point batch composition: which tokens llama.cpp computes together (units sharing decode steps, a prompt
split differently by a prefix-cache hit). Here every unit runs alone (concurrency 1: its n samples still batch
together) and no prefix cache is kept, so each unit's batches are the same wherever it runs, and the rows must be
identical, bit for bit. The difference under default batching is measured in benchmarks/ray_sweep.py (docs/ray.md).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, run_sweep, settings

pytestmark = pytest.mark.slow
MODEL = Path(os.environ.get("PONDER_HOME", Path.home() / ".cache" / "ponder")) / "models" / "smollm2-135m.gguf"


@pytest.fixture(scope="module")
def model() -> str:
    pytest.importorskip("ray")
    pytest.importorskip("llama_cpp")
    if not MODEL.is_file():
        pytest.skip("smollm2-135m not pulled: ponder models pull smollm2-135m")
    return str(MODEL)


def stored(store: Store) -> list[tuple]:
    samples = [(s.problem_id, s.index, s.seed, s.text, s.answer, s.correct, s.finish_reason,
                s.usage_by_role["policy"].completion_tokens, s.usage_by_role["policy"].prompt_tokens)
               for s in store.samples()]
    results = [(r.problem_id, r.strategy, r.budget, r.text, r.answer, r.correct, r.finish_reason,
                r.usage_by_role["policy"].completion_tokens) for r in store.results()]
    return samples + results


def test_tiny_model_on_two_actors_stores_exactly_the_in_process_rows(tmp_path, model):
    from ponder.backends.factory import open_backend
    from ponder.distributed import RayExecutor
    from ponder.distributed.launch import RayOptions, ray_replicas

    config = SweepConfig("gsm8k", model, ("cot", "self_consistency"), (1, 2, 4), limit=3, max_tokens=24, seed=1)
    local = open_backend(model, n_threads=1, cache_entries=0)
    try:
        expected = Store.create(tmp_path / "local", settings(config, local, "math"))
        asyncio.run(run_sweep(config, local, expected, InProcessExecutor(local, concurrency=1)))
    finally:
        local.close()
    with ray_replicas(model, RayOptions(replicas=2), n_threads=1, cache_entries=0) as backend:
        assert len(set(backend.pool.pids())) == 2
        got = Store.create(tmp_path / "ray", settings(config, backend, "math"))
        asyncio.run(run_sweep(config, backend, got, RayExecutor(backend.pool, concurrency=1)))
    rows = stored(expected)
    assert len(rows) == 3 * 4 + 3  # a pool of 4 and one greedy answer per problem
    assert len({r[3] for r in rows}) > 3  # real, varied text: the comparison below can fail
    assert stored(got) == rows
    assert got.config["model_sha256"] == expected.config["model_sha256"] is not None


def test_a_sample_depends_on_its_batch_shapes_only_not_on_its_neighbours_content(model):
    """Why default batching may change samples: the numbers depend on the batch's shapes (which tokens are computed
    together). Neighbours of the same token lengths but other content give bit-identical logprobs."""
    import re

    from ponder.backends.factory import open_backend
    from ponder.tasks import load_task
    from ponder.types import SamplingParams, user

    questions = [p.question for p in load_task("gsm8k").problems(4, seed=0)]
    others = [user(q) for q in questions[1:]]
    swapped = [user(re.sub(r"\d", lambda m: str((int(m.group()) + 3) % 10), q)) for q in questions[1:]]
    greedy = SamplingParams(max_tokens=24, temperature=0.0, logprobs=True)
    engine = open_backend(model, n_threads=1, cache_entries=0)

    async def decode(neighbours):
        gens = await asyncio.gather(*(engine.generate(m, greedy) for m in [user(questions[0]), *neighbours]))
        return [(t.token, t.logprob) for t in gens[0][0].logprobs]

    try:
        lengths = [[len(engine.tokenize(engine.render(m))) for m in group] for group in (others, swapped)]
        assert lengths[0] == lengths[1] and swapped != others
        alone, batched, batched_again, batched_swapped = (asyncio.run(decode(n))
                                                          for n in ([], others, others, swapped))
    finally:
        engine.close()
    assert batched == batched_again == batched_swapped
    assert alone == asyncio.run(_alone_again(model, questions[0], greedy))  # alone is reproducible too


async def _alone_again(model, question, params):
    from ponder.backends.factory import open_backend
    from ponder.types import user

    engine = open_backend(model, n_threads=1, cache_entries=0)
    try:
        return [(t.token, t.logprob) for t in (await engine.generate(user(question), params))[0].logprobs]
    finally:
        engine.close()
