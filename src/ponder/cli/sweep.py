"""`ponder sweep`: tasks x strategies x budgets into a resumable run store, with a live progress bar.

    ponder sweep --task gsm8k --model qwen2.5-coder-1.5b --strategies cot,self_consistency,best_of_n \
                 --budgets 1,2,4,8,16 --limit 50 --seed 0 --out runs/NAME
    ponder sweep --resume runs/NAME          # after a crash or kill -9: finishes what is missing
    ponder sweep ... --ray --actors 2        # the same sweep on Ray actors (--ray-address ADDR joins a cluster)
    ponder sweep ... --deterministic         # identical rows in-process, resumed or on Ray; slower (README)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ponder.cli import app
from ponder.errors import InvalidParameter, PonderError

console = Console()
err_console = Console(stderr=True)

DEFAULTS: dict[str, Any] = {"strategies": "cot,self_consistency", "budgets": "1,2,4,8,16", "seed": 0,
                            "max_tokens": 512, "temperature": 0.7}
TRUNCATION_WARNING = 0.05


@app.command()
def sweep(
    task: str = typer.Option(None, help="gsm8k, gsm_symbolic, champ, humaneval, reasoning_gym:NAME or jsonl:PATH."),
    model: str = typer.Option(None, help="Catalogue name, .gguf path, http(s)://server/v1#model, or 'scripted'."),
    strategies: str = typer.Option(None, help="Comma-separated strategies (default cot,self_consistency)."),
    budgets: str = typer.Option(None, help="Strictly increasing budgets, e.g. 1,2,4,8,16 (default 1,2,4,8,16)."),
    limit: int = typer.Option(None, help="Number of problems, the task's first ones (default all)."),
    seed: int = typer.Option(None, help="Run seed: fixes every sample's seed (default 0)."),
    out: Path = typer.Option(None, help="New run folder, e.g. runs/NAME."),
    resume: Path = typer.Option(None, help="Finish an interrupted run in this folder (same settings; a larger "
                                "--limit grows it by the task's next problems)."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Tokens per sample (default 512)."),
    temperature: float = typer.Option(None, help="Pool sampling temperature (default 0.7)."),
    temperatures: str = typer.Option(None, "--temperatures", help="Draw every pool at each of these temperatures, "
                                     "e.g. 0.3,0.6,0.9: the curves then choose a temperature like a budget."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling (default: the model's, 0.8 for Qwen2.5)."),
    top_k: int = typer.Option(None, "--top-k", help="Keep the k likeliest tokens; 0 keeps all (default: the "
                              "model's, 20 for Qwen2.5)."),
    min_p: float = typer.Option(None, "--min-p", help="Drop tokens below min_p x the likeliest (default: the "
                                "model's)."),
    repetition_penalty: float = typer.Option(None, "--repetition-penalty", help="> 1 discourages repeats "
                                             "(default: the model's, 1.05 for Qwen2.5)."),
    presence_penalty: float = typer.Option(None, "--presence-penalty", help="OpenAI's presence penalty (default 0)."),
    frequency_penalty: float = typer.Option(None, "--frequency-penalty", help="OpenAI's frequency penalty "
                                            "(default 0)."),
    concurrency: int = typer.Option(4, help="Work units in flight at once (the local engine batches them)."),
    n_threads: int = typer.Option(None, "--n-threads", help="CPU threads for a local model."),
    task_opt: list[str] = typer.Option(None, "--task-opt", help="KEY=VALUE for the task, repeatable, e.g. "
                                       "question_field=q answer_field=label for jsonl:PATH."),
    ray: bool = typer.Option(False, "--ray", help="Run the units on Ray actors (a local Ray instance unless "
                             "--ray-address is given). Needs pip install 'ponder\\[ray]'."),
    ray_address: str = typer.Option(None, "--ray-address", help="Join this Ray cluster (auto, ray://HEAD:10001); "
                                    "implies --ray."),
    actors: int = typer.Option(2, "--actors", help="With --ray: actors, each holding one model replica "
                               "(--concurrency units in flight on each, --n-threads threads each)."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Decode each request alone, with no prefix "
                                       "cache and no flash attention, so in-process, resumed and --ray runs store "
                                       "identical rows (batch shapes change llama.cpp's numbers). Costs "
                                       "throughput: 0.61x the default's on the tiny model (README). Recorded in the "
                                       "store; a resume keeps the run's mode."),
    kv_cache_type: str = typer.Option(None, "--kv-cache-type", help="A local model's KV cache: f16 (default), "
                                      "q8_0 or q4_0 (quantised: fewer bytes per step; recorded in the store)."),
    judge: str = typer.Option(None, "--judge", help="Open tasks: the model that judges each answer against the "
                              "greedy baseline (as --model; default: the sweep's own model)."),
    profile: bool = typer.Option(False, "--profile", help="Record every engine step (width, context, time) in the "
                                 "store, and this machine's ceilings, for `ponder profile RUN` (local models)."),
) -> None:
    """Run a sweep into a SQLite store: one row per sample, resumable after any interruption."""
    try:
        given = {"task": task, "model": model, "strategies": strategies, "budgets": budgets, "limit": limit,
                 "seed": seed, "max_tokens": max_tokens, "temperature": temperature,
                 "task_options": _task_options(task_opt) if task_opt else None,
                 "temperatures": _temperatures(temperatures) if temperatures else None,
                 "deterministic": True if deterministic else None,  # unset: a resume keeps the stored mode
                 "judge": judge, "kv_cache_type": kv_cache_type}
        sampler = {"top_p": top_p, "top_k": top_k, "min_p": min_p, "repetition_penalty": repetition_penalty,
                   "presence_penalty": presence_penalty, "frequency_penalty": frequency_penalty}
        if any(v is not None for v in sampler.values()):
            given["sampler"] = {k: v for k, v in sampler.items() if v is not None}
        ray_options = _ray_options(ray, ray_address, actors)
        if profile and ray_options is not None:
            raise InvalidParameter("profile", True, "a profile traces one engine: drop --ray, or --profile")
        if judge and ray_options is not None:
            raise InvalidParameter("judge", judge, "on Ray the actors' own model judges: drop --judge, or --ray")
        asyncio.run(_run({k: v for k, v in given.items() if v is not None}, out, resume, concurrency, n_threads,
                         ray_options, profile))
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted; finish it with: ponder sweep --resume {resume or out}")
        raise typer.Exit(130) from None


def _temperatures(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InvalidParameter("temperatures", text, "give numbers separated by commas, e.g. 0.3,0.6,0.9") from None


def _task_options(pairs: list[str]) -> dict[str, Any]:
    """["answer_field=label", "config={\"min_terms\": 2}"] -> a dict; values are read as JSON where they parse."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidParameter("task-opt", pair, "write it as KEY=VALUE, e.g. --task-opt answer_field=label")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _config(given: dict[str, Any], stored: dict[str, Any] | None) -> Any:
    from ponder.backends.credentials import is_redacted
    from ponder.experiments.sweep import SweepConfig, parse_budgets

    values = {**DEFAULTS, **(stored or {}), **given}
    for key in ("task", "model"):
        if not values.get(key):
            raise InvalidParameter(key, None, f"give --{key} (or --resume a run)")
    if is_redacted(values["model"]) and "model" not in given:
        raise InvalidParameter("model", values["model"], "the run's server URL carried credentials, which a store "
                               "never keeps: resume with --model and the full URL")
    strategies = values["strategies"]
    if isinstance(strategies, str):
        strategies = [s.strip() for s in strategies.split(",") if s.strip()]
    return SweepConfig.from_dict({**values, "strategies": strategies, "budgets": parse_budgets(values["budgets"])})


async def _run(given: dict[str, Any], out: Path | None, resume: Path | None, concurrency: int,
               n_threads: int | None, ray: Any = None, profile: bool = False) -> None:
    from ponder.experiments.store import Store
    from ponder.experiments.sweep import (
        Tally,
        check_backend,
        check_resume,
        grown_limit,
        run_sweep,
        settings,
        with_added_settings,
    )
    from ponder.tasks import load_task

    if (out is None) == (resume is None):
        raise InvalidParameter("out", out, "give either --out NEW_FOLDER or --resume EXISTING_FOLDER")
    if out is not None and out.is_dir() and any(out.iterdir()) and not (out / "store.sqlite").exists():
        raise InvalidParameter("out", str(out), "the folder holds other files and no run store: give a new or "
                               "empty folder, so that a run never mixes with other files")
    store = Store.open(resume) if resume else None
    try:
        stored = with_added_settings(store.config) if store else None
        grown = grown_limit(stored.get("limit"), given.get("limit")) if stored else None
        if grown is not None:  # compared as grown; written once every other setting has matched
            stored = {**stored, "limit": grown}
        config = _config(given, stored)
        if stored is not None:  # settings the user gave that differ are refused before the model loads
            check_resume({k: stored.get(k) for k in config.to_dict()}, config.to_dict(), resume)
        kind = load_task(config.task, **config.task_options).kind  # an unknown task fails before the model loads
        if config.judge and kind != "open":
            raise InvalidParameter("judge", config.judge, f"only open tasks are judged; {config.task} is a {kind} "
                                   "task, checked by its answers: drop --judge")
        backend = _open_backend(config.model, n_threads, ray, config.deterministic, profile, config.kv_cache_type)
        judge = None
        try:
            if config.judge and kind == "open":
                judge = _open_backend(config.judge, n_threads)
            check_backend(config, backend)  # before a store is made for a run that cannot be deterministic
            provenance = settings(config, backend, kind)
            if store:  # now with the model's sha256 and prompts
                check_resume({**store.config, **({"limit": grown} if grown else {})}, provenance, resume)
                if grown is not None:
                    store.set_limit(grown)
            else:
                store = Store.create(out, provenance)  # type: ignore[arg-type]
            live = Tally(judged=kind == "open")

            steps = getattr(backend, "steps", None)

            def show(res: Any) -> None:
                live.add(res)
                if steps is not None:
                    store.add_steps(steps.take())
                progress.update(bar, advance=1, description=live.line() or "sweep")

            with _progress() as progress:
                bar = progress.add_task("sweep", total=None)
                tally = await run_sweep(
                    config, backend, store, _executor(backend, concurrency, ray, judge),
                    on_start=lambda total, done: progress.update(bar, total=total, completed=done),
                    on_result=show)
            if steps is not None:
                from dataclasses import asdict

                from ponder.profiling.ceilings import measure_ceilings

                store.add_steps(steps.take())
                store.set_value("ceilings", asdict(measure_ceilings(threads=n_threads or 2)))
                console.print(f"profiled: ponder profile {resume or out} --out PROFILE_FOLDER")
        finally:
            for opened in (backend, judge):
                close = getattr(opened, "close", None)
                if callable(close):
                    close()
        _report(store, tally)
    finally:
        if store:
            store.close()


def _ray_options(ray: bool, address: str | None, actors: int) -> Any:
    """RayOptions when --ray or --ray-address was given, else None (the in-process executor)."""
    if not (ray or address):
        return None
    from ponder.distributed.launch import RayOptions

    if actors < 1:
        raise InvalidParameter("actors", actors, "use a whole number >= 1")
    return RayOptions(address=address, replicas=actors)


def _executor(backend: Any, concurrency: int, ray: Any, judge: Any = None) -> Any:
    """Who runs the units: Ray actors (each with its replica), or this process on `backend` (judging on `judge`)."""
    if ray is not None:
        from ponder.distributed.executor import RayExecutor

        def died(index: int, in_flight: int) -> None:
            err_console.print(f"[yellow]Ray actor {index} died;[/] its {in_flight} unit(s) go to the other actors")

        return RayExecutor(backend.pool, concurrency, on_actor_death=died)
    from ponder.experiments.executor import InProcessExecutor

    return InProcessExecutor(backend, concurrency, judge)


def _open_backend(spec: str, n_threads: int | None, ray: Any = None, deterministic: bool = False,
                  profile: bool = False, kv_cache_type: str = "f16") -> Any:
    from ponder.backends.factory import is_local, open_backend
    from ponder.compute import KVCacheType

    local = is_local(spec)
    if profile and not local:
        raise InvalidParameter("profile", True, "a profile traces ponder's own engine: sweep a local model")
    # Only the local engine can fix its batches; any other backend is refused by check_backend, naming the flag.
    options: dict[str, Any] = {"deterministic": True} if deterministic and local else {}
    if kv_cache_type != KVCacheType.F16:  # the factory refuses it for a backend that is not ponder's engine
        options["kv_cache_type"] = KVCacheType(kv_cache_type)
    if profile:
        options["trace"] = True
    if ray is not None:  # each actor opens its own replica; the driver sees them as one backend
        from ponder.distributed.launch import open_ray_backend

        return open_ray_backend(spec, ray, n_threads, **options)
    if local and n_threads:
        options["n_threads"] = n_threads
    return open_backend(spec, **options)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


def _report(store: Any, tally: Any) -> None:
    cut, total = store.truncation()
    share = cut / total if total else 0.0
    console.print(f"store: {store.path}")
    console.print(f"rows: {len(store.samples())} samples, {len(store.results())} results, "
                  f"{len(store.judgments())} judgments; "
                  f"{tally.line() or 'nothing new to run'}")
    console.print(f"truncated (hit max_tokens): {cut}/{total} = {100 * share:.1f}%")
    if share > TRUNCATION_WARNING:
        err_console.print(f"[yellow]warning:[/] {100 * share:.0f}% of answers were cut off at max_tokens; "
                          "their answers are noise: rerun with a larger --max-tokens")
