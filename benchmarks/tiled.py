"""What llama.cpp's tiled K-quant matmul does to ponder's engine, on and off: writes benchmarks/results/tiled.json.

    .venv/bin/python benchmarks/tiled.py [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--reps 8] [--summarise]

llama.cpp reads GGML_CPU_TILED_MM once per process, so each measurement is a child process with it set to 0 or 1
(backends/ggml_env.py; ponder's engine loads with 0). A child loads the model and measures, on one engine:
prefill, a ~1k-token prompt on an empty prefix cache (its prompt tokens over the request's wall seconds, 1 new
token); then width 1 and width 8, one request of n samples of 64 new tokens on the cached prompt (completion
tokens over wall seconds). Same prompt, sampler (T 0.8, top_k 40, top_p 0.95, seeded) and threads (2) in both.
The two settings alternate within each repetition, each going first in turn; `ratios` are off over on, per
repetition, their median and a bootstrap 95% interval of it. The load average is recorded before and after.
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
from typing import Any

import numpy as np

HERE = Path(__file__).parent
PROMPT = ("Summarise the following notes in three sentences.\n"
          + " ".join(f"Note {i}: the lighthouse keeper logged the weather, the ships and the lamp's oil." for i in
                     range(60)))
MEASURES = ("prefill", "width_1", "width_8")


async def child(model: str, seed: int) -> dict[str, Any]:
    from ponder.backends.llamacpp import LlamaCppBackend
    from ponder.models import resolve
    from ponder.types import Message, SamplingParams

    engine = LlamaCppBackend(resolve(model), n_ctx=8192, n_seq_max=16, n_threads=2, name=model)
    try:
        msgs = [Message("user", PROMPT)]
        base = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.0, seed=seed)
        await engine.generate([Message("user", "Hi.")], SamplingParams(max_tokens=4, **base))  # warm-up
        engine.clear_cache()
        before = engine.stats["prefilled_tokens"]
        start = time.perf_counter()
        await engine.generate(msgs, SamplingParams(max_tokens=1, **base))
        out = {"prefill": (engine.stats["prefilled_tokens"] - before) / (time.perf_counter() - start),
               "prompt_tokens": engine.stats["prefilled_tokens"] - before, "tiled_matmul": engine.tiled_matmul}
        for width in (1, 8):
            start = time.perf_counter()
            gens = await engine.generate(msgs, SamplingParams(n=width, max_tokens=64, **base))
            out[f"width_{width}"] = sum(g.completion_tokens for g in gens) / (time.perf_counter() - start)
        return out
    finally:
        engine.close()


def measure(model: str, tiled: bool, seed: int) -> dict[str, Any]:
    env = {**os.environ, "GGML_CPU_TILED_MM": "1" if tiled else "0"}
    proc = subprocess.run([sys.executable, __file__, "--child", model, "--seed", str(seed)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the measuring child failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["tiled_matmul"] != tiled:
        raise SystemExit(f"the child ran with tiled_matmul={result['tiled_matmul']}, asked for {tiled}")
    return result


def compare(model: str, reps: int) -> dict[str, Any]:
    runs = []
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        row: dict[str, Any] = {"rep": rep, "first": "off" if not order[0] else "on"}
        for tiled in order:
            row["on" if tiled else "off"] = measure(model, tiled, seed=rep)
        row["ratio"] = {m: row["off"][m] / row["on"][m] for m in MEASURES}
        runs.append(row)
        print(model, rep, {m: f"{r:.2f}" for m, r in row["ratio"].items()}, flush=True)
    return {"runs": runs, **summarise(runs)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measure: the ratios' median, a bootstrap 95% interval of that median over the repetitions, the runs, and
    each setting's median tok/s. Derived from `runs` alone (`--summarise` recomputes it for an older result)."""
    from ponder.experiments.estimators import bootstrap_ci

    ratios = {m: [r["ratio"][m] for r in runs] for m in MEASURES}
    return {"ratios": {m: statistics.median(v) for m, v in ratios.items()},
            "ratios_ci": {m: list(bootstrap_ci(v, statistic=np.median)) for m, v in ratios.items()},
            "ratio_runs": ratios,
            "median_tok_s": {s: {m: statistics.median(r[s][m] for r in runs) for m in MEASURES} for s in ("off", "on")},
            "prompt_tokens": runs[0]["off"]["prompt_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--out", default=str(HERE / "results" / "tiled.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--summarise", action="store_true",
                    help="measure nothing: recompute --out's summaries from the runs it holds")
    args = ap.parse_args()
    if args.summarise:
        from ponder.benchmarking import summarise_again

        result = summarise_again(args.out, summarise)
        return print({m: (r["ratios"], r["ratios_ci"]) for m, r in result["models"].items()})
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.seed))))
        return
    from ponder.benchmarking import write_result

    result: dict[str, Any] = {"benchmark": "tiled", "prompt": PROMPT, "reps": args.reps, "threads": 2,
                              "load_before": list(os.getloadavg()), "models": {}}
    for model in args.models.split(","):
        result["models"][model] = compare(model, args.reps)
        write_result(result, args.out)  # a partial result survives an interruption
    result["load_after"] = list(os.getloadavg())
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    write_result(result, args.out)
    print({m: r["ratios"] for m, r in result["models"].items()})


if __name__ == "__main__":
    main()
