"""The `ponder` command line (Typer + Rich). Each command group lives in its own module, added here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ponder",
    help="Spend more compute at inference time, and measure what it buys.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Each module below adds its commands to `app` (or a sub-app) on import; one line per module.
from ponder.cli import models  # noqa: E402,F401,I001
from ponder.cli import ask, strategies  # noqa: E402,F401
from ponder.cli import report  # noqa: E402,F401
from ponder.cli import bench  # noqa: E402,F401
from ponder.cli import data, sweep  # noqa: E402,F401
from ponder.cli import serve  # noqa: E402,F401
