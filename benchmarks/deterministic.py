"""What `--deterministic` costs: one sweep in default and deterministic mode, interleaved; writes
benchmarks/results/deterministic.json.

    .venv/bin/python benchmarks/deterministic.py [--model smollm2-135m] [--problems 6] [--runs 3] [--max-tokens 64]

Both modes run the same GSM8K sweep (cot + self_consistency, budgets 1,2,4: pools of 4) with the same seeds,
in-process, --concurrency units in flight, on warm engines (the default one's prefix cache cleared before each
run), after one untimed warm-up run each. Runs alternate which mode goes first, so machine noise hits both alike.
Timed: run_sweep only. The figures are generated tokens (every role) per second of the run (wall) and per second
of this process's CPU time (every thread: steadier than wall time on a machine shared with other work). Also
recorded: whether each mode's runs stored the same rows as its first run (deterministic mode must; default mode
may not), and how many rows the two modes share.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.backends.factory import open_backend
from ponder.benchmarking import write_result
from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, run_sweep, settings
from ponder.models import resolve

HERE = Path(__file__).parent
MODES = ("default", "deterministic")


def rows(store: Store) -> dict[tuple[Any, ...], tuple[str, str | None, int]]:
    """key -> (text, answer, generated tokens) of every stored sample and result."""
    out = {("pool", s.problem_id, s.pool, s.index): (s.text, s.answer, s.usage_by_role["policy"].completion_tokens)
           for s in store.samples()}
    out.update({("result", r.problem_id, r.strategy, r.budget):
                (r.text, r.answer, r.usage_by_role["policy"].completion_tokens) for r in store.results()})
    return out


def generated(store: Store) -> int:
    """Tokens generated in the run, every role (policy and verifier) counted."""
    return sum(u.completion_tokens for r in [*store.samples(), *store.results()] for u in r.usage_by_role.values())


@dataclass(frozen=True)
class Run:
    """One timed run of one mode."""

    seconds: float
    cpu_seconds: float
    tokens: int
    rows: dict[tuple[Any, ...], tuple[str, str | None, int]]


async def timed(config: SweepConfig, backend: Any, concurrency: int, folder: Path) -> Run:
    backend.clear_cache()
    store = Store.create(folder, settings(config, backend, "math"))
    start, cpu = time.perf_counter(), time.process_time()
    await run_sweep(config, backend, store, InProcessExecutor(backend, concurrency))
    run = Run(time.perf_counter() - start, time.process_time() - cpu, generated(store), rows(store))
    store.close()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "deterministic.json"))
    args = ap.parse_args()
    model = str(resolve(args.model))
    configs = {mode: SweepConfig("gsm8k", model, ("cot", "self_consistency"), (1, 2, 4), limit=args.problems,
                                 max_tokens=args.max_tokens, seed=3, deterministic=mode == "deterministic")
               for mode in MODES}
    engines = {mode: open_backend(model, n_threads=args.threads, deterministic=mode == "deterministic")
               for mode in MODES}
    load_before = os.getloadavg()
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in MODES:  # the first run pays one-time costs (page cache, imports, allocations)
                warm = dataclasses.replace(configs[mode], limit=1)
                asyncio.run(timed(warm, engines[mode], args.concurrency, Path(tmp) / f"warm-{mode}"))
            for r in range(args.runs):
                for mode in MODES if r % 2 == 0 else reversed(MODES):
                    print(f"run {r + 1}/{args.runs}: {mode}", flush=True)
                    runs[mode].append(asyncio.run(timed(configs[mode], engines[mode], args.concurrency,
                                                        Path(tmp) / f"{mode}-{r}")))
    finally:
        for engine in engines.values():
            engine.close()
    result: dict[str, Any] = {
        "benchmark": "deterministic", "model": args.model, "problems": args.problems, "runs": args.runs,
        "max_tokens": args.max_tokens, "concurrency": args.concurrency, "threads": args.threads,
        "sweep": "gsm8k, cot + self_consistency, budgets 1,2,4, seed 3, in-process",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
    }
    for mode, got in runs.items():
        rates = [g.tokens / g.seconds for g in got]
        per_cpu = [g.tokens / g.cpu_seconds for g in got]
        result[mode] = {"seconds": [round(g.seconds, 2) for g in got], "cpu_seconds": [round(g.cpu_seconds, 2)
                                                                                    for g in got],
                        "tokens": [g.tokens for g in got], "tokens_per_s": [round(x, 1) for x in rates],
                        "median_tokens_per_s": round(statistics.median(rates), 1),
                        "median_tokens_per_cpu_s": round(statistics.median(per_cpu), 1),
                        "runs_identical_to_the_first": sum(g.rows == got[0].rows for g in got[1:]),
                        "of_reruns": len(got) - 1}
    pairs = list(zip(runs["deterministic"], runs["default"], strict=True))
    for name, unit in (("deterministic_over_default_throughput", "seconds"),
                       ("deterministic_over_default_tokens_per_cpu_s", "cpu_seconds")):
        ratio = [d.tokens / getattr(d, unit) * getattr(n, unit) / n.tokens for d, n in pairs]
        result[name] = {"median": round(statistics.median(ratio), 3), "runs": [round(x, 3) for x in ratio]}
    first = {mode: runs[mode][0].rows for mode in MODES}
    result["rows_equal_between_modes"] = sum(first["default"][k] == v for k, v in first["deterministic"].items())
    result["rows"] = len(first["deterministic"])
    print(write_result(result, args.out))
    print({k: v for k, v in result.items() if k.startswith(("deterministic_over", "rows"))},
          {mode: (result[mode]["median_tokens_per_s"], result[mode]["median_tokens_per_cpu_s"]) for mode in MODES})


if __name__ == "__main__":
    main()
