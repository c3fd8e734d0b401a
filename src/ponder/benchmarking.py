"""The engine speed benchmark: does ponder's batched engine beat llama.cpp's one-at-a-time API?

One GSM8K prompt, `max_tokens` new tokens at temperature 0.8, the same thread count for every mode:
  sequential  llama_cpp.Llama.create_completion, 8 calls one after another (the baseline)
  batched     ponder's engine, one request with n=8 (one prefill, 8 sequences per llama_decode)
  concurrent  ponder's engine, 8 concurrent n=1 requests with the same prompt (continuous batching)
Each mode runs `runs` times, interleaved so that machine noise hits every mode alike. The figure is the aggregate
generated tokens per second. Used by `benchmarks/engine.py` and `ponder bench engine`.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.types import SamplingParams, user

QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. "
    "How much in dollars does she make every day at the farmers' market?"
)
PROMPT = f"{QUESTION}\nSolve it step by step, then give the final answer after '####'."
MODES = ("sequential", "batched", "concurrent")

Progress = Callable[[str, int, int], None]
"""progress(mode, run_index, runs): called as each timed run starts."""


@dataclass(frozen=True)
class Timing:
    """One timed run of one mode."""

    tokens: int
    seconds: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _sequential(llm: Any, engine: Any, prompt: str, width: int, max_tokens: int, temperature: float) -> Timing:
    start, tokens = time.perf_counter(), 0
    for i in range(width):
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=temperature, top_p=1.0, top_k=0,
                                    min_p=0.0, seed=i)
        tokens += out["usage"]["completion_tokens"]
    return Timing(tokens, time.perf_counter() - start)


def _batched(llm: Any, engine: Any, prompt: str, width: int, max_tokens: int, temperature: float) -> Timing:
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, n=width, seed=0)
    engine.clear_cache()
    start = time.perf_counter()
    gens = asyncio.run(engine.generate(user(PROMPT), params))
    return Timing(sum(g.completion_tokens for g in gens), time.perf_counter() - start)


def _concurrent(llm: Any, engine: Any, prompt: str, width: int, max_tokens: int, temperature: float) -> Timing:
    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*[
            engine.generate(user(PROMPT), SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=i))
            for i in range(width)
        ])

    engine.clear_cache()
    start = time.perf_counter()
    results = asyncio.run(all_at_once())
    return Timing(sum(g.completion_tokens for r in results for g in r), time.perf_counter() - start)


RUNNERS: dict[str, Callable[..., Timing]] = {
    "sequential": _sequential, "batched": _batched, "concurrent": _concurrent,
}
"""mode -> runner(llm, engine, prompt_text, width, max_tokens, temperature)."""


def _summary(timings: list[Timing]) -> dict[str, Any]:
    rates = [t.tok_s for t in timings]
    return {
        "tok_s_median": round(statistics.median(rates), 2),
        "tok_s_min": round(min(rates), 2),
        "tok_s_max": round(max(rates), 2),
        "runs": [{"tokens": t.tokens, "seconds": round(t.seconds, 2), "tok_s": round(t.tok_s, 2)} for t in timings],
    }


def run_engine_benchmark(
    model_path: str | os.PathLike[str], *, runs: int = 3, width: int = 8, max_tokens: int = 256,
    temperature: float = 0.8, n_threads: int = 2, progress: Progress | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Time the three modes `runs` times each (interleaved) and return the results as a JSON-ready dict.

    `on_run` gets the report so far after each round (so a slow machine still leaves partial results).
    """
    import llama_cpp

    from ponder.backends.llamacpp import LlamaCppBackend

    engine = LlamaCppBackend(model_path, n_threads=n_threads)
    llm = llama_cpp.Llama(str(model_path), n_ctx=4096, n_threads=n_threads, n_threads_batch=n_threads,
                          n_batch=512, verbose=False)
    prompt_text = engine.render(user(PROMPT))
    prompt_tokens = len(engine.tokenize(prompt_text))
    timings: dict[str, list[Timing]] = {m: [] for m in MODES}
    load_start = os.getloadavg()
    try:
        for mode in MODES:  # warm-up: page the weights in and build the compute graphs before timing
            RUNNERS[mode](llm, engine, prompt_text, 2, 4, temperature)
        for r in range(runs):
            for mode in MODES:
                if progress:
                    progress(mode, r, runs)
                timings[mode].append(RUNNERS[mode](llm, engine, prompt_text, width, max_tokens, temperature))
            if on_run:
                on_run(_report(timings, engine.model, prompt_tokens, width, max_tokens, temperature, n_threads,
                               load_start) | {"complete": r + 1 == runs})
    finally:
        engine.close()
        llm.close()
    return _report(timings, engine.model, prompt_tokens, width, max_tokens, temperature, n_threads,
                   load_start) | {"complete": True}


def _report(timings: dict[str, list[Timing]], model: str, prompt_tokens: int, width: int, max_tokens: int,
            temperature: float, n_threads: int, load_start: tuple[float, ...]) -> dict[str, Any]:
    import llama_cpp

    summary = {m: _summary(ts) for m, ts in timings.items()}
    seq = summary["sequential"]["tok_s_median"]
    per_run = [
        {"batched": round(b.tok_s / a.tok_s, 3), "concurrent": round(c.tok_s / a.tok_s, 3)}
        for a, b, c in zip(timings["sequential"], timings["batched"], timings["concurrent"], strict=True)
    ]
    return {
        "benchmark": "engine",
        "model": model,
        "prompt_tokens": prompt_tokens,
        "width": width,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "n_threads": n_threads,
        "runs": len(timings["sequential"]),
        **summary,
        "ratio_batched_vs_sequential": round(summary["batched"]["tok_s_median"] / seq, 3),
        "ratio_concurrent_vs_sequential": round(summary["concurrent"]["tok_s_median"] / seq, 3),
        "ratios_per_run": per_run,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_start": [round(x, 2) for x in load_start],
                    "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
        "llama_cpp_python": llama_cpp.__version__,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def summarise_again(path: str | os.PathLike[str], summarise: Callable[[list[dict[str, Any]]], dict[str, Any]],
                    headline: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Recompute a written result's per-model summaries from the runs it holds (`summarise(runs)`, then
    `headline(result)` for any top-level figures) and write it back; nothing is measured."""
    result = json.loads(Path(path).read_text())
    for model in result["models"].values():
        model.update(summarise(model["runs"]))
    if headline is not None:
        headline(result)
    write_result(result, path)
    return result
