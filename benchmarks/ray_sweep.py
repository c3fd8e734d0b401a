"""Ray sweep benchmark: one sweep in-process, on 1 Ray actor and on 2; writes benchmarks/results/ray.json.

    .venv/bin/python benchmarks/ray_sweep.py [--model smollm2-135m] [--problems 6] [--runs 3] [--max-tokens 32]

Every configuration runs the same GSM8K sweep (cot + self_consistency, budgets 1,2) with the same seeds, on warm
engines whose prefix caches are cleared before each run; runs are interleaved so machine noise hits each alike.
Timed: run_sweep only (Ray's start and the replicas' model loads are reported apart). Configurations:
  in_process      InProcessExecutor, one engine with --threads-per-replica threads (the baseline)
  ray_1_actor     RayExecutor, one actor with the same threads: the difference is Ray's overhead
  ray_2_actors    RayExecutor, two actors with that many threads each
  in_process_2x   InProcessExecutor, one engine with twice the threads (what the same cores give without Ray)
Ray's cost per unit is also timed alone, on a scripted backend that answers at once (the same sweep shape, many
problems): (Ray time - in-process time) / units. Also recorded: how the stored rows of each configuration differ
from the in-process run's (batch effects), and a fixed-batch-composition pair (one unit at a time, no prefix
cache: in-process vs 2 actors) that must be identical.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ponder.backends.factory import open_backend
from ponder.benchmarking import write_result
from ponder.distributed import RayExecutor, connect
from ponder.distributed.launch import RayOptions, open_ray_backend
from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, run_sweep, settings
from ponder.models import resolve

HERE = Path(__file__).parent


def rows(store: Store) -> dict[tuple[Any, ...], tuple[str, str | None, int]]:
    """key -> (text, answer, generated tokens) for every stored sample and result."""
    out = {("pool", s.problem_id, s.pool, s.index): (s.text, s.answer, s.usage_by_role["policy"].completion_tokens)
           for s in store.samples()}
    out.update({("result", r.problem_id, r.strategy, r.budget):
                (r.text, r.answer, r.usage_by_role["policy"].completion_tokens) for r in store.results()})
    return out


def differences(a: dict, b: dict, tokenize: Any) -> dict[str, Any]:
    """How rows of two runs differ: count, share, answers changed, first differing token position."""
    assert a.keys() == b.keys(), "the two runs stored different units"
    differ = [k for k in a if a[k] != b[k]]
    first = []
    for k in differ:
        ta, tb = tokenize(a[k][0]), tokenize(b[k][0])
        first.append(next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb))))
    return {"rows": len(a), "differing_rows": len(differ), "differing_share": round(len(differ) / len(a), 3),
            "differing_answers": sum(a[k][1] != b[k][1] for k in differ),
            "first_differing_token": {"min": min(first), "median": statistics.median(first)} if first else None}


async def timed_sweep(config: SweepConfig, backend: Any, executor: Any, folder: Path) -> tuple[float, dict]:
    getattr(backend, "clear_cache", lambda: None)()
    store = Store.create(folder, settings(config, backend, "math"))
    start = time.perf_counter()
    await run_sweep(config, backend, store, executor)
    seconds = time.perf_counter() - start
    got = rows(store)
    store.close()
    return seconds, got


def summary(seconds: list[float], problems: int) -> dict[str, Any]:
    med = statistics.median(seconds)
    return {"seconds": [round(s, 2) for s in seconds], "median_s": round(med, 2),
            "problems_per_min": round(60 * problems / med, 2)}


def fixed_composition(config: SweepConfig, model: str, threads: int, tmp: Path, tokenize: Any) -> dict[str, Any]:
    """One unit at a time and no prefix cache, so each unit's samples form the same batches wherever they run."""
    local = open_backend(model, n_threads=threads, cache_entries=0)
    ray2 = open_ray_backend(model, RayOptions(replicas=2), threads, cache_entries=0)
    try:
        _, a = asyncio.run(timed_sweep(config, local, InProcessExecutor(local, 1), tmp / "fixed-local"))
        _, b = asyncio.run(timed_sweep(config, ray2, RayExecutor(ray2.pool, 1), tmp / "fixed-ray"))
    finally:
        local.close()
        ray2.close()
    return {"what": "concurrency 1 (a unit's n samples still batch together), cache_entries 0, in-process vs "
                    "2 actors", **differences(a, b, tokenize)}


def per_unit_overhead(problems: int, concurrency: int, tmp: Path) -> dict[str, Any]:
    """Ray's own cost per work unit: a scripted backend that answers at once, in-process vs one actor."""
    from ponder.backends.scripted import ScriptedBackend
    from ponder.tasks import load_task

    config = SweepConfig("gsm8k", "scripted", ("cot", "self_consistency"), (1, 2), limit=problems, seed=0)
    units = problems * 2
    load_task("gsm8k").problems(problems)  # load the data before timing
    local = ScriptedBackend(lambda call, i: "The answer is 42.")
    ray1 = open_ray_backend("scripted", RayOptions(replicas=1))
    try:
        t_in, _ = asyncio.run(timed_sweep(config, local, InProcessExecutor(local, concurrency), tmp / "s-local"))
        t_ray, _ = asyncio.run(timed_sweep(config, ray1, RayExecutor(ray1.pool, concurrency), tmp / "s-ray"))
    finally:
        ray1.close()
    return {"units": units, "in_process_s": round(t_in, 3), "ray_1_actor_s": round(t_ray, 3),
            "ms_per_unit": round(1000 * (t_ray - t_in) / units, 2)}


def batch_shape_effect(model: str, threads: int, problems: int = 4, max_tokens: int = 40) -> dict[str, Any]:
    """The numeric size of the batch effect: one greedy prompt decoded alone vs with 3 other prompts, and with 3
    prompts of the same token lengths but other digits (same batch shapes, other content)."""
    import re

    from ponder.tasks import load_task
    from ponder.types import SamplingParams, user

    def swap(text: str) -> str:  # every digit is one token: same lengths, other content
        return re.sub(r"\d", lambda m: str((int(m.group()) + 3) % 10), text)

    questions = [p.question for p in load_task("gsm8k").problems(problems, seed=0)]
    target, others = user(questions[0]), [user(q) for q in questions[1:]]
    swapped = [user(swap(q)) for q in questions[1:]]
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=True)
    engine = open_backend(model, n_threads=threads, cache_entries=0)

    async def decode(companions: list) -> list[tuple[str, float]]:
        gens = await asyncio.gather(engine.generate(target, greedy), *(engine.generate(m, greedy) for m in companions))
        return [(t.token, t.logprob) for t in gens[0][0].logprobs]

    try:
        same_shapes = [len(engine.tokenize(engine.render(m))) for m in others] == \
            [len(engine.tokenize(engine.render(m))) for m in swapped]
        alone, batched, batched_swapped = (asyncio.run(decode(c)) for c in ([], others, swapped))
    finally:
        engine.close()
    shared = next((i for i, (x, y) in enumerate(zip(alone, batched, strict=False)) if x[0] != y[0]), len(alone))
    drift = [abs(x[1] - y[1]) for x, y in zip(alone[:shared], batched[:shared], strict=True)]
    return {"what": "greedy logprobs of one prompt, alone vs batched with 3 other prompts",
            "tokens_before_divergence": shared, "of_tokens": len(alone),
            "max_abs_logprob_diff": round(max(drift), 4), "mean_abs_logprob_diff": round(statistics.mean(drift), 4),
            "same_shapes_other_content_identical": same_shapes and batched == batched_swapped}


def start_backends(model: str, threads: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Every configuration's backend, and how long each took to start (model loads, actors)."""
    backends: dict[str, Any] = {}
    started: dict[str, float] = {}
    for name, make in (("in_process", lambda: open_backend(model, n_threads=threads)),
                       ("ray_1_actor", lambda: open_ray_backend(model, RayOptions(replicas=1), threads)),
                       ("ray_2_actors", lambda: open_ray_backend(model, RayOptions(replicas=2), threads)),
                       ("in_process_2x", lambda: open_backend(model, n_threads=2 * threads))):
        t = time.perf_counter()
        backends[name] = make()
        started[name] = round(time.perf_counter() - t, 2)
    return backends, started


def time_runs(config: SweepConfig, backends: dict[str, Any], args: argparse.Namespace,
              tmp: Path) -> tuple[dict[str, list[float]], dict[str, list[dict]]]:
    """Run every configuration `args.runs` times, interleaved; seconds and stored rows of each run."""
    executors = {name: (RayExecutor(b.pool, args.concurrency) if hasattr(b, "pool")
                        else InProcessExecutor(b, args.concurrency)) for name, b in backends.items()}
    times: dict[str, list[float]] = {name: [] for name in backends}
    stored: dict[str, list[dict]] = {name: [] for name in backends}
    for r in range(args.runs):
        for name in backends:
            if name == "in_process_2x" and r >= args.runs_2x:
                continue
            print(f"run {r + 1}/{args.runs}: {name}", flush=True)
            sec, got = asyncio.run(timed_sweep(config, backends[name], executors[name], tmp / f"{name}-{r}"))
            times[name].append(sec)
            stored[name].append(got)
    return times, stored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads-per-replica", type=int, default=1)
    ap.add_argument("--runs-2x", type=int, default=1, help="Runs of in_process_2x (slow on a loaded machine).")
    ap.add_argument("--out", default=str(HERE / "results" / "ray.json"))
    args = ap.parse_args()
    model, threads = str(resolve(args.model)), args.threads_per_replica
    config = SweepConfig("gsm8k", model, ("cot", "self_consistency"), (1, 2), limit=args.problems,
                         max_tokens=args.max_tokens, seed=0)
    load_before = os.getloadavg()
    start = time.perf_counter()
    # Logical CPUs for Ray's placement only: five actors are up at once here, while each engine's threads are set.
    session = connect(num_cpus=16)
    ray_start = time.perf_counter() - start
    backends, started = start_backends(model, threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tokenize = backends["in_process"].tokenize
        # Every actor starts early: a replica must run the code this driver imported (see code_digest).
        fixed = fixed_composition(config, model, threads, tmp, tokenize)
        scripted = per_unit_overhead(100, args.concurrency, tmp)
        shapes = batch_shape_effect(model, threads)
        times, stored = time_runs(config, backends, args, tmp)
        base = stored["in_process"][0]
        batch_effects = {name: differences(base, runs[0], tokenize) for name, runs in stored.items()
                         if name != "in_process" and runs}
        if args.runs > 1:
            batch_effects["in_process_run_2"] = differences(base, stored["in_process"][1], tokenize)
        for b in backends.values():
            b.close()
    session.close()
    result = {name: summary(t, args.problems) for name, t in times.items() if t}
    t_in, t_r1 = result["in_process"]["median_s"], result["ray_1_actor"]["median_s"]
    paired = [round(100 * (r1 - i) / i, 1) for i, r1 in zip(times["in_process"], times["ray_1_actor"], strict=True)]
    result = {
        "overhead_pct_1_actor": round(100 * (t_r1 - t_in) / t_in, 1),
        "overhead_pct_1_actor_paired_runs": paired,
        "ray_overhead_per_unit": scripted,
        "speedup_2_actors_vs_1": round(t_r1 / result["ray_2_actors"]["median_s"], 2),
        **result,
        "ray_start_s": round(ray_start, 2), "backend_start_s": started,
        "equality": {"fixed_batch_composition": fixed, "default_batching_vs_in_process": batch_effects,
                     "batch_shape_effect": shapes},
        "setup": {"model": args.model, "task": "gsm8k", "problems": args.problems, "strategies": config.strategies,
                  "budgets": config.budgets, "max_tokens": args.max_tokens, "concurrency_per_replica":
                  args.concurrency, "threads_per_replica": threads, "runs": args.runs, "timed": "run_sweep only"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg(), "note": "shared machine, other jobs running: noisy"},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_result(result, args.out)
    print({k: result[k] for k in ("overhead_pct_1_actor", "speedup_2_actors_vs_1")},
          {k: result[k]["problems_per_min"] for k in times if k in result})


if __name__ == "__main__":
    main()
