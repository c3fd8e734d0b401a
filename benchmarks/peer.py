"""ponder's engine beside llama.cpp's own server, the peer a user would pick instead: writes
benchmarks/results/peer.json (ratios per run, their median and a bootstrap 95% interval of it; ponder's tok/s over
llama-server's).

    .venv/bin/python benchmarks/peer.py [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--reps 6]
                                        [--max-tokens 128] [--widths 1,8,16] [--out PATH] [--summarise]

llama-server is the one `ponder models build-server` builds from the llama.cpp vendored in the installed
llama-cpp-python (never built here: build it first), run twice: as it starts (16 slots of n_ctx / 16 cells each)
and with `--kv-unified` (one KV buffer for all slots, as ponder's engine has). All hold the same GGUF with the
same threads, context and slots (16); each width is one request with n samples (n = width), the same prompt,
sampler (T 0.8, top_k 40, top_p 0.95, no penalty, seeded) and max_tokens; the three are interleaved within each
repetition, each going first in turn, and each is warmed up once. Each engine keeps its own default prompt cache
(llama-server's cache_prompt, ponder's prefix cache), so after the warm-up none re-reads the prompt; the prompt
tokens each engine evaluated per request are recorded (llama-server's `timings.prompt_n`, ponder's prefilled tokens).
tok/s = completion tokens / wall seconds of the request (llama-server's over local HTTP, ponder's in process;
llama-server's usage counts one choice whatever n is, so its tokens are counted from its choices). The load
average is recorded before and after. ponder's engine runs as it loads by default (llama.cpp's tiled K-quant
matmul off, backends/ggml_env.py; recorded as `tiled_matmul`); llama-server runs at its own defaults (tiled on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ponder.backends.llamacpp import LlamaCppBackend
from ponder.benchmarking import summarise_again, write_result
from ponder.experiments.estimators import bootstrap_ci
from ponder.models import llama_server, resolve
from ponder.types import Message, SamplingParams

HERE = Path(__file__).parent
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
SAMPLER = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.0,
           "presence_penalty": 0.0, "frequency_penalty": 0.0}
SLOTS, N_CTX, THREADS = 16, 8192, 2


async def ponder_run(engine: LlamaCppBackend, width: int, max_tokens: int, seed: int) -> tuple[int, float, int]:
    params = SamplingParams(n=width, max_tokens=max_tokens, seed=seed, **SAMPLER)
    prefilled = engine.stats["prefilled_tokens"]
    start = time.perf_counter()
    gens = await engine.generate([Message("user", PROMPT)], params)
    seconds = time.perf_counter() - start
    return sum(g.completion_tokens for g in gens), seconds, engine.stats["prefilled_tokens"] - prefilled


def server_run(client: httpx.Client, engine: LlamaCppBackend, width: int, max_tokens: int,
               seed: int) -> tuple[int, float, int]:
    """One request of `width` choices to llama-server. Its usage counts one choice's tokens whatever n is, so the
    tokens are counted here: max_tokens for a choice cut at the limit, else its text re-tokenized (same GGUF)."""
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "n": width, "max_tokens": max_tokens,
            "seed": seed, "temperature": SAMPLER["temperature"], "top_k": SAMPLER["top_k"],
            "top_p": SAMPLER["top_p"], "min_p": SAMPLER["min_p"], "repeat_penalty": SAMPLER["repetition_penalty"]}
    start = time.perf_counter()
    r = client.post("/chat/completions", json=body, timeout=600)
    seconds = time.perf_counter() - start
    r.raise_for_status()
    choices = r.json()["choices"]
    prompt_evaluated = int(r.json().get("timings", {}).get("prompt_n", -1))
    if len(choices) != width:
        raise SystemExit(f"llama-server returned {len(choices)} choices for n={width}")
    tokens = sum(max_tokens if c["finish_reason"] == "length" else len(engine.tokenize(c["message"]["content"]))
                 for c in choices)
    return tokens, seconds, prompt_evaluated


SERVERS = {"server": (), "server_kv_unified": ("--kv-unified",)}
"""llama-server as it starts (each of the 16 slots its own KV stream of n_ctx / 16 cells), and with one KV buffer
shared by all slots as ponder's engine has (every sequence may use all of n_ctx; a step's attention spans every
cell in use). `ratios` is against the first, `ratios_kv_unified` against the second."""


def compare(model: str, widths: list[int], reps: int, max_tokens: int) -> dict[str, Any]:
    path = resolve(model)
    engine = LlamaCppBackend(path, n_ctx=N_CTX, n_seq_max=SLOTS, n_threads=THREADS, name=model)
    runs: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            clients = {}
            for who, extra in SERVERS.items():
                url = stack.enter_context(llama_server.running(path, n_ctx=N_CTX, parallel=SLOTS, threads=THREADS,
                                                               extra=extra))
                clients[who] = stack.enter_context(httpx.Client(base_url=url))
                server_run(clients[who], engine, 1, 16, 0)  # warm-ups
            asyncio.run(ponder_run(engine, 1, 16, 0))
            engines = ("ponder", *SERVERS)
            for rep in range(reps):
                for width in widths:
                    seed = 1000 * rep + width
                    shift = (rep + width) % len(engines)  # each engine goes first in turn
                    order = engines[shift:] + engines[:shift]
                    row: dict[str, Any] = {"rep": rep, "width": width, "first": order[0]}
                    for who in order:
                        tokens, seconds, prompt = (
                            asyncio.run(ponder_run(engine, width, max_tokens, seed)) if who == "ponder"
                            else server_run(clients[who], engine, width, max_tokens, seed))
                        row[who] = {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds,
                                    "prompt_tokens_evaluated": prompt}
                    row["ratio"] = row["ponder"]["tok_s"] / row["server"]["tok_s"]
                    row["ratio_kv_unified"] = row["ponder"]["tok_s"] / row["server_kv_unified"]["tok_s"]
                    runs.append(row)
                    print(f"{model} rep {rep} width {width}: ponder {row['ponder']['tok_s']:.1f} tok/s, "
                          f"llama-server {row['server']['tok_s']:.1f} (ratio {row['ratio']:.2f}), with --kv-unified "
                          f"{row['server_kv_unified']['tok_s']:.1f} ({row['ratio_kv_unified']:.2f})", flush=True)
    finally:
        engine.close()
    return {"runs": runs, "tiled_matmul": engine.tiled_matmul, **summarise(runs)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per width: the ratios' median, a bootstrap 95% interval of that median over the repetitions (paired: each
    ratio is one repetition's), the runs themselves, and each engine's median tok/s. Derived from `runs` alone, so
    `--summarise` can recompute it for a result written before a field was added."""
    widths = sorted({r["width"] for r in runs})
    out: dict[str, Any] = {}
    for key, suffix in (("ratio", ""), ("ratio_kv_unified", "_kv_unified")):
        by_width = {str(w): [r[key] for r in runs if r["width"] == w] for w in widths}
        out[f"ratios{suffix}"] = {w: statistics.median(v) for w, v in by_width.items()}
        out[f"ratios_ci{suffix}"] = {w: list(bootstrap_ci(v, statistic=np.median)) for w, v in by_width.items()}
        out[f"ratio_runs{suffix}"] = by_width
    out["median_tok_s"] = {who: {str(w): statistics.median(r[who]["tok_s"] for r in runs if r["width"] == w)
                                 for w in widths} for who in ("ponder", *SERVERS)}
    return out


def headline(result: dict[str, Any]) -> None:
    """The top-level ratio objects, from the models measured so far."""
    for key in ("ratios", "ratios_ci", "ratios_kv_unified", "ratios_ci_kv_unified"):
        result[key] = {m: r[key] for m, r in result["models"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--widths", default="1,8,16")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", default=str(HERE / "results" / "peer.json"))
    ap.add_argument("--summarise", action="store_true",
                    help="measure nothing: recompute --out's summaries from the runs it holds")
    args = ap.parse_args()
    if args.summarise:
        result = summarise_again(args.out, summarise, headline)
        return print(result["ratios"], result["ratios_ci"])
    if llama_server.cached() is None:
        raise SystemExit("llama-server is not built: run `ponder models build-server` first (about 25 minutes "
                         "on 2 cores)")
    widths = [int(w) for w in args.widths.split(",")]
    result: dict[str, Any] = {"benchmark": "peer", "peer": f"llama-server {llama_server.VERSION} (llama.cpp "
                              "vendored in llama-cpp-python)", "prompt": PROMPT, "sampler": SAMPLER,
                              "max_tokens": args.max_tokens, "slots": SLOTS, "n_ctx": N_CTX, "threads": THREADS,
                              "reps": args.reps, "load_before": list(os.getloadavg()), "models": {}}
    for model in args.models.split(","):
        result["models"][model] = compare(model, widths, args.reps, args.max_tokens)
        headline(result)
        write_result(result, args.out)  # a partial result survives an interruption
    result["load_after"] = list(os.getloadavg())
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    write_result(result, args.out)
    print(result["ratios"])


if __name__ == "__main__":
    main()
