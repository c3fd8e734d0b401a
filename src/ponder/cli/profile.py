"""`ponder profile`: a compute profile for hardware co-design (ponder.profiling), from one of three workloads:

    ponder profile runs/NAME --out prof/              # a sweep run made with `ponder sweep --profile`
    ponder profile --model M -s beam_search --budget 4 --task gsm8k --limit 2 --out prof/   # a strategy, now
    ponder profile --model M --calibrate --out prof/  # a grid of widths and contexts (the step model's check)

Each writes prof/profile.json (fields documented in ponder/profiling/profile.py), roofline.png and step_time.png,
and prints where the time went, the step model's error and the what-if hardware.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ponder.cli import app
from ponder.compute import KVCacheType
from ponder.errors import InvalidParameter, PonderError

console = Console()
err_console = Console(stderr=True)
CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog while the river keeps flowing past the mill. "


@app.command()
def profile(
    run: Path = typer.Argument(None, help="A sweep run folder made with `ponder sweep --profile`."),
    out: Path = typer.Option(..., "--out", help="Folder for profile.json and the plots."),
    model: str = typer.Option(None, help="Profile this local model now (catalogue name or .gguf path)."),
    strategy: str = typer.Option("self_consistency", "--strategy", "-s", help="With --model: the strategy to run."),
    budget: int = typer.Option(4, help="With --model: the strategy's budget."),
    task: str = typer.Option("gsm8k", help="With --model: the task whose first --limit problems are solved."),
    limit: int = typer.Option(2, help="With --model: how many problems."),
    param: list[str] = typer.Option([], "--param", "-p", help="With --model: a strategy parameter NAME=VALUE."),
    calibrate: bool = typer.Option(False, "--calibrate", help="With --model: decode a grid of widths and contexts "
                                   "instead of a strategy (checks the step model where it matters)."),
    widths: str = typer.Option("1,2,4,8,16", help="--calibrate: decode widths."),
    contexts: str = typer.Option("128,1024,2048,4096", help="--calibrate: prompt lengths in tokens."),
    kv_cache_type: KVCacheType = typer.Option(KVCacheType.F16, "--kv-cache-type", help="With --model: how the KV "
                                              "cache stores values (q8_0, q4_0 need flash attention)."),
    n_threads: int = typer.Option(2, "--n-threads", help="CPU threads (the engine's and the ceilings').", min=1),
    hardware: list[str] = typer.Option(["h200", "a100-80gb", "l4"], "--hardware", help="What-if hardware: a "
                                       "shipped name (h200, a100-80gb, l4, laptop-cpu) or a JSON file; repeatable."),
) -> None:
    """Measure where a workload's time goes, against this machine's ceilings, and predict other hardware."""
    from ponder.profiling.hardware import load_hardware

    try:
        machines = [load_hardware(h) for h in hardware]
        if (run is None) == (model is None):
            raise InvalidParameter("run", run, "give a profiled run folder, or --model to profile a workload now")
        if run is not None:
            doc = _from_run(run, machines)
        else:
            doc = asyncio.run(_now(model, strategy, budget, task, limit, param, calibrate, _ints(widths, "widths"),
                                   _ints(contexts, "contexts"), kv_cache_type, n_threads, machines))
        _write(doc, out)
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise InvalidParameter(name, text, "give positive whole numbers separated by commas, e.g. 1,2,4,8")
    return values


def _from_run(run: Path, machines: list[Any]) -> dict[str, Any]:
    from ponder.experiments.store import Store
    from ponder.profiling.ceilings import Ceilings
    from ponder.profiling.profile import ProfileError, build_profile, records
    from ponder.types import ModelInfo

    with Store.open(run) as store:  # StoreError names a missing or garbage folder
        rows = store.steps()
        config = store.config
        ceilings = store.value("ceilings")
    if rows is None:
        raise ProfileError(f"{run} has no step trace: it was swept without --profile (or by a ponder older than "
                           "profiling). Sweep again with `ponder sweep ... --profile`, or profile a workload now "
                           "with `ponder profile --model ...`")
    try:
        info = ModelInfo(**config["model_info"])
        measured = Ceilings(**ceilings)
    except (KeyError, TypeError) as exc:
        raise ProfileError(f"{run}: the run records no model shapes or ceilings ({exc}): profile a new run") from None
    kv = KVCacheType(config.get("kv_cache_type", KVCacheType.F16))
    return build_profile(records(rows, str(run)), info, kv, measured, machines,
                         source={"kind": "sweep", "run": str(run), "task": config.get("task")})


async def _now(model: str, strategy: str, budget: int, task: str, limit: int, params: list[str], calibrate: bool,
               widths: list[int], contexts: list[int], kv: KVCacheType, n_threads: int,
               machines: list[Any]) -> dict[str, Any]:
    from ponder.backends.factory import open_backend
    from ponder.profiling.ceilings import measure_ceilings
    from ponder.profiling.profile import build_profile

    if model == "scripted" or model.startswith(("http://", "https://")):
        raise InvalidParameter("model", model, "a profile measures ponder's own engine: give a local model "
                               "(catalogue name or .gguf path)")
    backend = open_backend(model, trace=True, kv_cache_type=kv, n_threads=n_threads,
                           n_ctx=max(8192, 2 * max(contexts) + 1024))
    try:
        with _progress() as progress:
            if calibrate:
                solved, source = None, await _calibration(backend, widths, contexts, progress)
            else:
                solved, source = await _strategy(backend, strategy, budget, task, limit, params, progress)
        steps = backend.steps.take()
    finally:
        backend.close()
    ceilings = measure_ceilings(threads=n_threads)
    return build_profile(steps, backend.info, kv, ceilings, machines, solved, source)


async def _calibration(backend: Any, widths: list[int], contexts: list[int], progress: Progress) -> dict[str, Any]:
    from ponder.types import Message, SamplingParams

    bar = progress.add_task("calibration", total=len(widths) * len(contexts))
    unit = max(1, len(backend.tokenize(CALIBRATION_TEXT)) if hasattr(backend, "tokenize") else 20)
    for c in contexts:
        text = CALIBRATION_TEXT * max(1, c // unit)
        for w in widths:  # one request at a time: every decode step is exactly this width
            params = SamplingParams(n=w, max_tokens=32, temperature=0.8, seed=w)
            await backend.generate([Message("user", text + "\nSummarise the text above.")], params)
            progress.update(bar, advance=1, description=f"context {c}, width {w}")
    return {"kind": "calibration", "widths": widths, "contexts": contexts}


async def _strategy(backend: Any, name: str, budget: int, task: str, limit: int, params: list[str],
                    progress: Progress) -> tuple[int, dict[str, Any]]:
    from ponder.ledger import Ledger
    from ponder.strategies import at_budget
    from ponder.strategies.build import build_strategy
    from ponder.tasks import load_task
    from ponder.tasks.base import grade_result

    built = at_budget(build_strategy(name, {}, params), budget)
    problems = load_task(task).problems(limit)
    bar = progress.add_task(name, total=len(problems))
    solved = 0
    for p in problems:
        result = await built.solve(p, backend, Ledger())
        solved += await grade_result(p, result.answer, result.text)  # as a sweep grades it
        progress.update(bar, advance=1)
    return solved, {"kind": "strategy", "strategy": name, "budget": budget, "task": task,
                    "problems": len(problems), "solved": solved}


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console)


def _write(doc: dict[str, Any], out: Path) -> None:
    from ponder.profiling.plots import roofline, step_time

    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(doc, indent=1) + "\n")
    roofline(doc, out / "roofline.png")
    step_time(doc, out / "step_time.png")
    t = doc["totals"]
    share = "  ".join(f"{k} {100 * v:.1f}%" for k, v in t["share"].items())
    console.print(f"{t['steps']} steps, {t['decoded_tokens']} decoded and {t['prefill_tokens']} prefilled tokens in "
                  f"{t['seconds']:.1f} s: {share}")
    m, v = doc["step_model"], doc["step_model"]["validation"]

    def rate(x: float | None, unit: str) -> str:
        return "n/a" if x is None else f"{x / 1e9:.1f} {unit}"

    a = m["achieved"]
    console.print(f"step model: weights at {rate(m['weight_bandwidth'], 'GB/s')}, decode at "
                  f"{rate(a['decode_flops'], 'GFLOP/s')}, prefill at {rate(a['prefill_flops'], 'GFLOP/s')}, "
                  f"attention at {rate(a['decode_attention_flops'], 'GFLOP/s')}, host {1e3 * m['host_s']:.2f} ms; "
                  f"held-out error median {100 * (v.get('relative_error') or {}).get('median', float('nan')):.1f}%")
    table = Table(title="what-if hardware (same workload, this engine's efficiency)")
    for col in ("hardware", "tok/s", "seconds", "USD", "USD / solved", "binding", "fits"):
        table.add_column(col, justify="right")
    for w in doc["what_if"]:
        per = "n/a" if w["usd_per_solved"] is None else f"{w['usd_per_solved']:.6f}"
        table.add_row(w["hardware"], f"{w['tokens_per_second']:.0f}", f"{w['seconds']:.2f}", f"{w['usd']:.6f}", per,
                      w["binding"], "yes" if w["fits_in_memory"] else "no")
    console.print(table)
    console.print(f"wrote {out / 'profile.json'}, roofline.png, step_time.png ({time.strftime('%H:%M:%S')})")
