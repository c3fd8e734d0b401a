"""The `ponder` command line (Typer + Rich). Each command group lives in its own module, added here.

The one global option, `ponder --verbose COMMAND ...`, shows ponder's debug log on stderr, llama.cpp's own lines
(model loading, tokenizer warnings) included; without it they are kept off the terminal.
"""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="ponder",
    help="Spend more compute at inference time, and measure what it buys.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

_VERBOSE = "ponder-verbose"
"""The name of the stderr handler --verbose adds."""


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show ponder's debug log on stderr, with "
                                      "llama.cpp's own lines (model loading, tokenizer warnings).")) -> None:
    """Spend more compute at inference time, and measure what it buys."""
    if verbose:
        log = logging.getLogger("ponder")
        for old in [h for h in log.handlers if h.name == _VERBOSE]:  # one handler however often app() is called
            log.removeHandler(old)
        handler = logging.StreamHandler()
        handler.set_name(_VERBOSE)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        log.setLevel(logging.DEBUG)
        log.addHandler(handler)


# Each module below adds its commands to `app` (or a sub-app) on import; one line per module.
from ponder.cli import models  # noqa: E402,F401,I001
from ponder.cli import ask, strategies  # noqa: E402,F401
from ponder.cli import report  # noqa: E402,F401
from ponder.cli import bench  # noqa: E402,F401
from ponder.cli import data, sweep  # noqa: E402,F401
from ponder.cli import serve  # noqa: E402,F401
from ponder.cli import verifier  # noqa: E402,F401
from ponder.cli import profile  # noqa: E402,F401
