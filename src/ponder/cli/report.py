"""`ponder report runs/NAME`: write a run's report (plots, index.html, summary.md/json) and show its headline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ponder.cli import app
from ponder.errors import InvalidParameter, MissingExtra, StoreError

console = Console()
err_console = Console(stderr=True)

_HEADLINE = (
    ("greedy_accuracy", "greedy accuracy", "pct"),
    ("best_strategy", "best strategy", ""),
    ("best_budget", "  at budget", ""),
    ("best_accuracy", "  accuracy", "pct"),
    ("best_tokens_ratio_vs_greedy", "  tokens vs greedy", "x"),
    ("gain_over_greedy", "gain over greedy (<= 8x its tokens)", "policy"),
    ("adaptive_token_savings_vs_majority", "adaptive consistency: tokens saved vs maj@N", "pct"),
    ("compute_optimal_vs_best_fixed", "compute-optimal vs the best fixed strategy", "policy"),
    ("compute_optimal_vs_majority", "compute-optimal vs maj@N", "policy"),
    ("usd_per_solved_problem", "US$ per solved problem", "usd"),
    ("truncation_share", "samples truncated at max_tokens", "pct"),
)


def _show(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "policy":
        return str(value["text"])
    if kind == "usd":
        return f"${value:.5f}"
    return str(value)


@app.command("report")
def report(
    run: Path = typer.Argument(..., help="The run folder a sweep wrote (runs/NAME)."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the report (default: RUN/report)."),
    learned: bool = typer.Option(False, "--learned", help="Add best-of-k with a verifier learned from the run's own "
                                 "samples, cross-fitted (needs pip install 'ponder[learn]')."),
) -> None:
    """Write RUN/report/ (PNG plots, a self-contained index.html, summary.md, summary.json) from the run's store."""
    from ponder.experiments.report import BATCHING, write_report

    try:
        files = write_report(run, out, learned=learned)
    except (StoreError, InvalidParameter) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except MissingExtra as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    table = Table(title=f"ponder report: {run.name}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    if "curves" in files.summary:  # an open task: win rates against the baseline
        for row in files.summary["curves"]:
            table.add_row(f"{row['strategy']}@{row['budget']} win rate (95% CI)",
                          f"{_show(row['win_rate'], 'pct')} [{_show(row['ci_low'], 'pct')}, "
                          f"{_show(row['ci_high'], 'pct')}]")
        table.add_row("judge position bias", f"{files.summary['position_bias']:+.3f}")
    else:
        for key, label, kind in _HEADLINE:
            table.add_row(label, _show(files.summary.get(key), kind))
    console.print(table)
    console.print(f"batching: {BATCHING[files.deterministic]}")
    console.print(f"report: {files.html}")
    console.print(f"summary: {files.summary_md}, {files.summary_json}")
    if files.policy is not None:
        console.print(f"policy: {files.policy} (serve it with `ponder serve --policy {files.policy}`, "
                      "reasoning_effort \"auto\")")
