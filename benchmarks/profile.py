"""Profile benchmark: the step-time model against measured steps, where a decode step's time goes, and what the
prefix cache saves beam search and budget forcing; writes benchmarks/results/profile.json.

    .venv/bin/python benchmarks/profile.py [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--threads 2]

Per model:
  calibration  `ponder profile --calibrate`'s grid (widths 1, 2, 4, 8, 16; prompts of 128, 1024, 2048 and 4096
               tokens; 32 new tokens each, one request at a time): the step model fitted on every other step and
               checked on the rest (median and 90th percentile relative error, by width and by context), the
               share of a decode step outside llama_decode (sampling and Python) at each width, and the what-if
               hardware (--calibration-only measures it again, alone, after a change to the engine's kernels;
               `tiled_matmul` records whether llama.cpp's tiled K-quant matmul ran, backends/ggml_env.py);
  cached prefix cost  width-1 decode steps with two ~2.7k-token prefixes in the prefix cache against an empty one,
               4 runs each going first in turn (in llama.cpp's unified KV cache a step's attention spans every
               cell in use: a prefix parked in KV cells slows it; one in the host prefix cache should not);
  cache copy cost  the engine thread's time copying KV to and from the host prefix cache during a 16-sample
               request after a ~2.7k-token prompt, as a share of the request's wall time;
               (--prefix-only measures these prefix figures and the prefixes below again, alone)
  KV cache     (--kv-only) the median decode step at widths 1 and 8 after a ~4k-token prompt, for f16, q8_0 and
               q4_0 KV caches, 2 interleaved runs;
  KV accuracy  (--kv-accuracy) greedy chain of thought on the first --kv-limit GSM8K problems with each KV cache
               type (`ponder sweep --kv-cache-type`, resumable runs under --work/kv-accuracy): accuracy, and the
               paired difference from f16 on the same problems with its bootstrap interval;
  prefixes     beam_search (budget 4: 2 beams x 2 expansions, 4 steps of at most 64 tokens) and budget_forcing
               (budget 2: 128 thinking tokens, at least 96, so a "Wait" is forced) on the first GSM8K problem,
               once with the prefix cache and once without: prompt tokens prefilled per engine step and in all.
Run it on an otherwise idle machine: the step times are the measurement (the load is recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ponder.backends import ggml_env
from ponder.benchmarking import write_result

HERE = Path(__file__).parent


KEPT = ("totals", "step_model", "efficiency", "host_share_by_width", "kv_crossover_context", "what_if", "machine",
        "kv_cells", "kv_cache_type")


def calibration(model: str, threads: int, out: Path) -> dict[str, Any]:
    ponder = str(Path(sys.executable).with_name("ponder"))
    cmd = [ponder, "profile", "--model", model, "--calibrate", "--n-threads", str(threads), "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    doc = json.loads((out / "profile.json").read_text())
    return {k: doc[k] for k in KEPT}


def reanalysed(out: Path) -> dict[str, Any]:
    """The calibration section again from a saved profile.json's measured steps (the derivation, not the
    measurement, changed)."""
    from dataclasses import fields, replace

    from ponder.backends.steptrace import StepRecord
    from ponder.compute import KVCacheType
    from ponder.models import resolve
    from ponder.models.gguf import model_info
    from ponder.profiling.ceilings import Ceilings
    from ponder.profiling.hardware import load_hardware
    from ponder.profiling.profile import build_profile, records

    doc = json.loads((out / "profile.json").read_text())
    names = {f.name for f in fields(StepRecord)}
    steps = records([{"start": 0.0, **{k: v for k, v in r.items() if k in names}} for r in doc["steps"]], str(out))
    info = replace(model_info(resolve(doc["model"]["name"])), name=doc["model"]["name"],
                   sha256=doc["model"]["sha256"])
    fresh = build_profile(steps, info, KVCacheType(doc["kv_cache_type"]), Ceilings(**doc["machine"]),
                          [load_hardware(w["hardware"]) for w in doc["what_if"]], None, doc["source"])
    (out / "profile.json").write_text(json.dumps(fresh, indent=1) + "\n")
    return {k: fresh[k] for k in KEPT}


async def prefixes(model: str, threads: int) -> dict[str, Any]:
    from ponder.backends.factory import open_backend
    from ponder.ledger import Ledger
    from ponder.strategies import at_budget
    from ponder.strategies.build import build_strategy
    from ponder.tasks import load_task

    problems = load_task("gsm8k").problems(1)
    out: dict[str, Any] = {}
    settings = {"beam_search": {"seed": 0, "max_steps": 4, "max_step_tokens": 64},
                "budget_forcing": {"seed": 0, "min_thinking_tokens": 96, "base_thinking_tokens": 64}}
    for name, budget in (("beam_search", 4), ("budget_forcing", 2)):
        for cached in (True, False):
            backend = open_backend(model, trace=True, n_threads=threads, cache_entries=8 if cached else 0)
            try:
                strategy = at_budget(build_strategy(name, settings[name]), budget)
                for p in problems:
                    await strategy.solve(p, backend, Ledger())
                steps = backend.steps.take()
                stats = backend.stats
            finally:
                backend.close()
            prefill_steps = [s.prefill_tokens for s in steps if s.prefill_tokens]
            out[f"{name}/{'cache' if cached else 'no_cache'}"] = {
                "prefilled_tokens": stats["prefilled_tokens"], "decoded_tokens": stats["decoded_tokens"],
                "cache_hits": stats["cache_hits"], "steps": len(steps), "steps_with_prefill": len(prefill_steps),
                "prefill_tokens_per_prefill_step": sum(prefill_steps) / max(1, len(prefill_steps)),
                "seconds": sum(s.seconds for s in steps)}
        on, off = out[f"{name}/cache"], out[f"{name}/no_cache"]
        out[f"{name}/prefill_saved"] = 1 - on["prefilled_tokens"] / max(1, off["prefilled_tokens"])
    return out


FILLER = "The quick brown fox jumps over the lazy dog while the river keeps flowing past the mill. " * 150


async def cached_prefix_cost(model: str, threads: int, reps: int = 4) -> dict[str, Any]:
    """Width-1 decode steps with two ~2.7k-token prefixes held in the prefix cache against none (interleaved, each
    going first in turn): in llama.cpp's unified KV cache a step's attention spans the cells in use, so a prefix
    parked there would slow it; one in the host prefix cache should not."""
    from statistics import median

    from ponder.backends.factory import open_backend
    from ponder.types import Message, SamplingParams

    ms: dict[str, list[float]] = {"cached_prefixes": [], "empty_cache": []}
    cells: dict[str, int] = {}
    for rep in range(reps):
        for key, entries in (("cached_prefixes", 8), ("empty_cache", 0))[::1 if rep % 2 == 0 else -1]:
            backend = open_backend(model, trace=True, n_threads=threads, cache_entries=entries)
            try:
                for i in range(2):
                    await backend.generate([Message("user", f"{i} {FILLER}")], SamplingParams(max_tokens=1,
                                                                                               temperature=0.0))
                backend.steps.take()
                await backend.generate([Message("user", "Write a long story about a dragon.")],
                                       SamplingParams(max_tokens=128, temperature=0.7, seed=1))
                steps = [s for s in backend.steps.take() if s.width == 1 and not s.prefill_tokens]
            finally:
                backend.close()
            ms[key].append(1000 * median(s.seconds for s in steps))
            cells[key] = max(s.kv_cells for s in steps)
    on, off = median(ms["cached_prefixes"]), median(ms["empty_cache"])
    return {"step_ms": ms, "kv_cells": cells, "median_step_ms": {"cached_prefixes": on, "empty_cache": off},
            "slowdown": on / off}


async def cache_copy_cost(model: str, threads: int, width: int = 16, max_tokens: int = 128) -> dict[str, Any]:
    """The engine thread's time copying finished sequences' KV to the host prefix cache (and back on a hit) for a
    request of `width` samples after a ~2.7k-token prompt, against the request's wall time."""
    from ponder.backends.factory import open_backend
    from ponder.types import Message, SamplingParams

    backend = open_backend(model, trace=True, n_threads=threads, cache_entries=8)
    try:
        msgs = [Message("user", f"{FILLER}\nContinue the text above.")]
        await backend.generate(msgs, SamplingParams(max_tokens=1, temperature=0.0))  # the prompt, then a hit
        before, start = backend.stats["cache_copy_seconds"], time.perf_counter()
        await backend.generate(msgs, SamplingParams(n=width, max_tokens=max_tokens, temperature=0.8, seed=3))
        seconds, copying = time.perf_counter() - start, backend.stats["cache_copy_seconds"] - before
        state_bytes = backend._scheduler.cache.state_bytes
    finally:
        backend.close()
    return {"width": width, "max_tokens": max_tokens, "copy_seconds": copying, "request_seconds": seconds,
            "share": copying / seconds, "cached_state_bytes": state_bytes}


async def kv_cache_speed(model: str, threads: int, reps: int = 2) -> dict[str, Any]:
    """Median decode step at widths 1 and 8 after a ~4k-token prompt, per KV cache type, interleaved."""
    from statistics import median

    from ponder.backends.factory import open_backend
    from ponder.types import Message, SamplingParams

    text = FILLER * 2  # its first 20,000 characters are about 4,000 tokens
    ms: dict[str, dict[str, list[float]]] = {}
    for _ in range(reps):
        for kv in ("f16", "q8_0", "q4_0"):
            backend = open_backend(model, trace=True, n_threads=threads, kv_cache_type=kv, cache_entries=0)
            try:
                for width in (1, 8):
                    await backend.generate([Message("user", text[:20000] + "\nSummarise the text above.")],
                                           SamplingParams(n=width, max_tokens=24, temperature=0.8, seed=width))
                    steps = [s for s in backend.steps.take() if s.width == width and not s.prefill_tokens]
                    ms.setdefault(kv, {}).setdefault(str(width), []).append(
                        1000 * median(s.seconds for s in steps))
            finally:
                backend.close()
    medians = {kv: {w: median(v) for w, v in by.items()} for kv, by in ms.items()}
    return {"step_ms": ms, "median_step_ms": medians,
            "vs_f16": {kv: {w: medians[kv][w] / medians["f16"][w] for w in by} for kv, by in medians.items()}}


KV_TYPES = ("f16", "q8_0", "q4_0")


def kv_accuracy(model: str, threads: int, limit: int, work: Path) -> dict[str, Any]:
    """Greedy CoT accuracy on GSM8K per KV cache type, paired with f16 on the same problems (see the docstring)."""
    from ponder.experiments.estimators import bootstrap_ci
    from ponder.experiments.store import Store

    ponder = str(Path(sys.executable).with_name("ponder"))
    correct: dict[str, dict[str, bool]] = {}
    out: dict[str, Any] = {"limit": limit, "load_before": list(os.getloadavg()), "by_type": {}}
    for kv in KV_TYPES:
        run = work / model / kv
        cmd = ([ponder, "sweep", "--resume", str(run), "--limit", str(limit)] if (run / "store.sqlite").exists()
               else [ponder, "sweep", "--task", "gsm8k", "--model", model, "--strategies", "cot", "--budgets", "1",
                     "--limit", str(limit), "--seed", "0", "--kv-cache-type", kv, "--out", str(run)])
        print("$", " ".join(cmd), flush=True)
        subprocess.run([*cmd, "--concurrency", "8", "--n-threads", str(threads)], check=True)
        with Store.open(run) as store:
            rows = [r for r in store.results() if r.strategy == "cot"]
            correct[kv] = {r.problem_id: r.correct for r in rows}
            tokens = sum(u.completion_tokens for r in rows for u in r.usage_by_role.values() if u is not None)
            out["by_type"][kv] = {"n_problems": len(rows), "accuracy": sum(correct[kv].values()) / max(1, len(rows)),
                                  "accuracy_ci": list(bootstrap_ci([float(c) for c in correct[kv].values()])),
                                  "completion_tokens": tokens, "wall_seconds": store.wall_seconds()}
    for kv in KV_TYPES[1:]:
        both = sorted(set(correct[kv]) & set(correct["f16"]))
        diff = [float(correct[kv][p]) - float(correct["f16"][p]) for p in both]
        out["by_type"][kv]["vs_f16"] = {"n_problems": len(both), "difference": sum(diff) / max(1, len(diff)),
                                        "difference_ci": list(bootstrap_ci(diff)),
                                        "changed": sum(d != 0 for d in diff)}
    out["load_after"] = list(os.getloadavg())
    return out


def summarise(result: dict[str, Any]) -> None:
    v = {m: e["calibration"]["step_model"]["validation"] for m, e in result["models"].items()}
    result["step_model_error"] = {m: {"median": x["relative_error"]["median"], "p90": x["relative_error"]["p90"],
                                      "worst_bucket_median": max(b["median"] for group in ("by_width", "by_context")
                                                                 for b in x[group].values())}
                                  for m, x in v.items()}
    result["host_share_at_width_8"] = {m: e["calibration"]["host_share_by_width"].get("8")
                                       for m, e in result["models"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("runs/profile"))
    ap.add_argument("--analyse-only", action="store_true", help="Derive again from the saved calibration steps and "
                    "keep the measured prefix figures (after a change to the derivation).")
    ap.add_argument("--kv-only", action="store_true", help="Measure only the KV cache types, into the committed "
                    "profile.json.")
    ap.add_argument("--kv-accuracy", action="store_true", help="Measure only greedy GSM8K accuracy per KV cache "
                    "type, into the committed profile.json (the default model unless --models names others).")
    ap.add_argument("--prefix-only", action="store_true", help="Measure only the prefix figures (prefill saved, "
                    "cached-prefix cost, host-cache copy cost), into the committed profile.json.")
    ap.add_argument("--calibration-only", action="store_true", help="Measure only the calibration grid (step model, "
                    "host share), into the committed profile.json, after a change to the engine's kernels.")
    ap.add_argument("--kv-limit", type=int, default=50, help="GSM8K problems for --kv-accuracy.")
    args = ap.parse_args()
    out = HERE / "results" / "profile.json"
    if args.kv_accuracy:
        result = json.loads(out.read_text())
        models = ["qwen2.5-coder-1.5b"] if args.models == ap.get_default("models") else args.models.split(",")
        for model in models:
            result["models"][model]["kv_cache_accuracy"] = kv_accuracy(model, args.threads, args.kv_limit,
                                                                       args.work / "kv-accuracy")
            write_result(result, out)
    elif args.prefix_only:
        result = json.loads(out.read_text())
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            entry = result["models"][model]
            entry["prefixes"] = asyncio.run(prefixes(model, args.threads))
            entry["cached_prefix_cost"] = asyncio.run(cached_prefix_cost(model, args.threads))
            entry["cache_copy_cost"] = asyncio.run(cache_copy_cost(model, args.threads))
            entry["prefix_load"] = os.getloadavg()
            write_result(result, out)
    elif args.calibration_only:
        result = json.loads(out.read_text())
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            entry = result["models"][model]
            entry["calibration"] = calibration(model, args.threads, args.work / model)
            entry["calibration_load"] = os.getloadavg()
            entry["tiled_matmul"] = ggml_env.tiled_matmul_in_children()
            write_result(result, out)
    elif args.kv_only:
        result = json.loads(out.read_text())
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            result["models"][model]["kv_cache_speed"] = asyncio.run(kv_cache_speed(model, args.threads))
            result["models"][model]["kv_cache_speed"]["load"] = os.getloadavg()
            write_result(result, out)
    elif args.analyse_only:
        result = json.loads(out.read_text())
        for model, entry in result["models"].items():
            entry["calibration"] = reanalysed(args.work / model)
    else:
        result = {"benchmark": "profile", "models": {}, "load_before": os.getloadavg()}
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            start = time.monotonic()
            entry = {"calibration": calibration(model, args.threads, args.work / model),
                     "tiled_matmul": ggml_env.tiled_matmul_in_children()}
            entry["prefixes"] = asyncio.run(prefixes(model, args.threads))
            entry["cached_prefix_cost"] = asyncio.run(cached_prefix_cost(model, args.threads))
            entry["cache_copy_cost"] = asyncio.run(cache_copy_cost(model, args.threads))
            entry["seconds"] = time.monotonic() - start
            result["models"][model] = entry
            write_result(result, out)  # a stopped run keeps the models it finished
        result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_after": os.getloadavg(),
                             "date": time.strftime("%Y-%m-%d %H:%M")}
    summarise(result)
    path = write_result(result, out)
    print(json.dumps({k: result[k] for k in ("step_model_error", "host_share_at_width_8")}, indent=1))
    for m, e in result["models"].items():
        print(m, {k: v for k, v in e["prefixes"].items() if k.endswith("prefill_saved")},
              f"cached-prefix slowdown at width 1: {e['cached_prefix_cost']['slowdown']:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
