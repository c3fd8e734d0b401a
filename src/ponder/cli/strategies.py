"""`ponder strategies [NAME]`: the registered strategies, their parameters with defaults, and their papers.

Each strategy is imported on its own; one that fails to import shows its error in its row instead of hiding the
others. With a NAME, each parameter is listed with the attribute docstring that explains it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ponder.cli import app
from ponder.errors import PonderError
from ponder.registry import STRATEGIES

console = Console()
err_console = Console(stderr=True)
_SHORT = 40


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string literal right after an annotated field) of `cls` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "(required)"


def _short(value: Any) -> str:
    text = getattr(value, "__name__", None) or repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _paper(cls: type) -> str:
    paper = getattr(cls, "paper", None)
    return paper or (inspect.getdoc(cls) or "").split("\n")[0]


def _summary_row(name: str) -> tuple[str, str, str]:
    try:
        cls = STRATEGIES.get(name)
    except Exception as exc:  # a broken plugin or a half-written module must not hide the others
        return name, f"[red]failed to import: {escape(str(exc))}[/]", ""
    fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()
    shown = [(f.name, _default(f)) for f in fields]
    # prompts are long texts: `ponder strategies NAME` shows them
    params = ", ".join(f"{k}={_short(v)}" for k, v in shown if not (isinstance(v, str) and len(v) > _SHORT))
    return name, escape(params), escape(_paper(cls))


@app.command("strategies")
def strategies(name: str | None = typer.Argument(None, help="Show one strategy's parameters in detail.")) -> None:
    """List the strategies, their parameters with defaults, and the papers they come from."""
    if name is not None:
        _detail(name)
        return
    table = Table(title="ponder strategies (ponder strategies NAME for details)", show_lines=True)
    table.add_column("name", style="bold")
    table.add_column("parameters (default)", overflow="fold")
    table.add_column("paper", overflow="fold")
    for entry in STRATEGIES.names():
        table.add_row(*_summary_row(entry))
    console.print(table)


def _detail(name: str) -> None:
    try:
        cls = STRATEGIES.get(name)
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    docs = field_docs(cls)
    table = Table(title=f"{name}: {escape(_paper(cls))}", show_lines=True)
    for column in ("parameter", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
        table.add_row(f.name, escape(_short(_default(f))), escape(docs.get(f.name, "")))
    console.print(table)
