"""`ponder bench engine`: speed benchmarks that write JSON results (logic in ponder.benchmarking)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ponder.cli import app
from ponder.errors import PonderError

bench_app = typer.Typer(help="Speed benchmarks that write JSON results.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

console = Console()


@bench_app.command("engine")
def engine(
    model: str = typer.Option("qwen2.5-coder-0.5b", help="Catalogue name or path to a .gguf file."),
    runs: int = typer.Option(3, min=1, help="Timed runs of each mode (interleaved)."),
    max_tokens: int = typer.Option(256, min=1, help="New tokens per generation."),
    threads: int = typer.Option(2, min=1, help="llama.cpp threads, the same for every mode."),
    out: Path = typer.Option(Path("benchmarks/results/engine.json"), help="Where to write the JSON result."),
) -> None:
    """Sequential llama-cpp-python vs ponder's engine with n=8 vs 8 concurrent requests (aggregate tok/s)."""
    from ponder.benchmarking import MODES, run_engine_benchmark, write_result
    from ponder.extras import require
    from ponder.models import resolve

    try:
        require("llama_cpp", "local")
        path = resolve(model)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            task = bar.add_task("loading", total=runs * len(MODES))

            def progress(mode: str, r: int, total: int) -> None:
                done = r * len(MODES) + MODES.index(mode)
                bar.update(task, completed=done, description=f"run {r + 1}/{total}: {mode}")

            result = run_engine_benchmark(path, runs=runs, max_tokens=max_tokens, n_threads=threads,
                                          progress=progress, on_run=lambda partial: write_result(partial, out))
            bar.update(task, completed=runs * len(MODES), description="done")
    except PonderError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    write_result(result, out)
    _show(result)
    console.print(f"wrote {out}")


def _show(result: dict) -> None:
    table = Table(title=f"engine benchmark: {result['model']}, {result['n_threads']} threads")
    for col in ("mode", "median tok/s", "min", "max"):
        table.add_column(col)
    for mode in ("sequential", "batched", "concurrent"):
        r = result[mode]
        table.add_row(mode, f"{r['tok_s_median']:.1f}", f"{r['tok_s_min']:.1f}", f"{r['tok_s_max']:.1f}")
    console.print(table)
    console.print(f"batched / sequential = {result['ratio_batched_vs_sequential']:.2f}   "
                  f"concurrent / sequential = {result['ratio_concurrent_vs_sequential']:.2f}")
