"""`ponder ask "QUESTION"`: run one strategy on one question and show the answer, the candidates and the cost.

The command is generic over strategies: its options map onto the chosen strategy's dataclass fields, and
`--param NAME=VALUE` sets any other field (ponder.strategies.build, shared with the server), so a new strategy
needs no change here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import time
from collections.abc import Mapping
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from ponder.backends.overrides import Overrides, WithOverrides
from ponder.cli import app
from ponder.cli.live import live_line
from ponder.compute import ComputeReport, KVCacheType
from ponder.errors import InvalidParameter, PonderError, UnknownName
from ponder.ledger import Budget, Ledger
from ponder.strategies.build import build_strategy
from ponder.types import ModelInfo, Problem, Result

console = Console()
err_console = Console(stderr=True)

_TEXT_SHOWN = 1200


def open_backend(spec: str, **kwargs: Any) -> Any:
    """The backend for a model name, a GGUF path or a URL (the factory is imported only when a question is asked)."""
    from ponder.backends.factory import open_backend as factory

    return factory(spec, **kwargs)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _run(strategy: Any, problem: Problem, model: str, budget: Budget,
               backend_options: Mapping[str, Any], overrides: Overrides | None = None,
               live: Console | None = None) -> tuple[Result, Ledger, Any]:
    backend = await _maybe_await(open_backend(model, **backend_options))
    try:
        ledger = Ledger(budget, model=getattr(backend, "model", model))
        sampled = WithOverrides(backend, overrides) if overrides and overrides.sampler else backend
        async with live_line(live or err_console, ledger, backend, enabled=live is not None):
            result = await strategy.solve(problem, sampled, ledger)
    finally:
        close = getattr(backend, "aclose", None) or getattr(backend, "close", None)
        if callable(close):
            await _maybe_await(close())
    return result, ledger, getattr(backend, "info", None)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    model: str = typer.Option("qwen2.5-coder-1.5b", "--model", "-m", help="A model name, GGUF path or server URL."),
    strategy: str | None = typer.Option(
        None, "--strategy", "-s",
        help="A strategy (see `ponder strategies`); default self_consistency if --n > 1, else cot."),
    n: int | None = typer.Option(None, "--n", "-n", help="Samples (n, or n_max for adaptive_consistency)."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", help="Sampling temperature; 0 is greedy."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="Most tokens per generation."),
    budget_tokens: int | None = typer.Option(None, "--budget-tokens", help="Stop after this many generated tokens."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", help="Stop after spending this many dollars."),
    verifier: str | None = typer.Option(None, "--verifier", help="A verifier name, for strategies that score."),
    seed: int | None = typer.Option(None, "--seed", help="Base seed; sample i uses seed + i."),
    top_p: float | None = typer.Option(None, "--top-p", help="Nucleus sampling (default: the model's)."),
    top_k: int | None = typer.Option(None, "--top-k", help="Keep the k likeliest tokens; 0 keeps all (default: "
                                     "the model's)."),
    min_p: float | None = typer.Option(None, "--min-p", help="Drop tokens below min_p x the likeliest."),
    repetition_penalty: float | None = typer.Option(None, "--repetition-penalty", help="> 1 discourages repeats."),
    param: list[str] = typer.Option([], "--param", "-p", help="Any other strategy parameter, as NAME=VALUE."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for a local model."),
    n_ctx: int | None = typer.Option(None, "--n-ctx", help="Context window for a local model."),
    kv_cache_type: KVCacheType | None = typer.Option(None, "--kv-cache-type", help="A local model's KV cache: f16 "
                                                     "(default), q8_0 or q4_0."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Answer QUESTION with a test-time-compute strategy; show the candidates, the votes or scores, and the cost."""
    name = strategy or ("self_consistency" if n is not None and n > 1 else "cot")
    if n is not None and n < 1:
        err_console.print(f"[bold red]error:[/] invalid n={n}: ask for at least one sample (--n 1 or more)")
        raise typer.Exit(2)
    if not question.strip():
        err_console.print("[bold red]error:[/] the question is empty: give the question to answer as the argument")
        raise typer.Exit(2)
    options = {"n": n, "temperature": temperature, "max_tokens": max_tokens, "verifier": verifier, "seed": seed}
    backend_options = {k: v for k, v in (("n_threads", threads), ("n_ctx", n_ctx), ("kv_cache_type", kv_cache_type))
                       if v is not None}
    try:
        built = build_strategy(name, options, param)
        budget = Budget(tokens=budget_tokens, usd=budget_usd)
        overrides = Overrides.of({"top_p": top_p, "top_k": top_k, "min_p": min_p,
                                  "repetition_penalty": repetition_penalty})
        start = time.monotonic()
        result, ledger, info = asyncio.run(
            _run(built, Problem(id="ask", question=question), model, budget, backend_options, overrides,
                 live=err_console if err_console.is_terminal else None))
    except (InvalidParameter, UnknownName) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    seconds = time.monotonic() - start
    if (result.answer is None and not result.budget_exhausted and not as_json and result.candidates
            and all(c.finish_reason == "length" for c in result.candidates)):
        err_console.print(f"[yellow]hint:[/] every candidate was cut off at max_tokens before it answered: raise "
                          f"--max-tokens (it was {getattr(built, 'max_tokens', 'the default')})", highlight=False)
    if as_json:
        typer.echo(json.dumps(to_json(result, ledger, info, seconds), default=str))
    else:
        render(console, result, ledger, info, seconds)


# -- the view -------------------------------------------------------------------------------------------------
def _compute(result: Result, ledger: Ledger, info: Any) -> ComputeReport | None:
    if not isinstance(info, ModelInfo) or info.n_params <= 0:
        return None
    return ComputeReport.of(result, info, model=ledger.model, usd=ledger.usd)


def to_json(result: Result, ledger: Ledger, info: Any, seconds: float) -> dict[str, Any]:
    """Everything `ask` shows, as one JSON-ready dict."""
    report = _compute(result, ledger, info)
    return {
        "answer": result.answer,
        "text": result.text,
        "strategy": result.strategy,
        "model": ledger.model,
        "votes": dict(result.votes),
        "candidates": [{k: v for k, v in dataclasses.asdict(c).items() if k != "logprobs"} for c in result.candidates],
        "usage_by_role": {role: u.to_dict() for role, u in result.usage_by_role.items()},
        "usage": result.usage.to_dict(),
        "compute": report.to_dict() if report else None,
        "usd": ledger.usd,
        "seconds": seconds,
        "budget_exhausted": result.budget_exhausted,
        "trace": [dict(step) for step in result.trace],
    }


def _answer_panel(result: Result, model: str, seconds: float) -> Panel:
    answer = result.answer if result.answer is not None else "[yellow](no answer found)[/]"
    text = result.text if len(result.text) <= _TEXT_SHOWN else "..." + result.text[-_TEXT_SHOWN:]
    body = f"[bold]{answer}[/]" + (f"\n\n[dim]{escape(text.strip())}[/]" if text.strip() else "")
    if result.budget_exhausted:
        body += "\n\n[yellow]budget exhausted: this is the best answer found before it ran out[/]"
    return Panel(body, title="answer", subtitle=f"{result.strategy} on {model}, {seconds:.1f}s")


def _candidates_table(result: Result) -> Table:
    table = Table(title="candidates")
    for column in ("#", "answer", "votes", "score", "tokens", "finish"):
        table.add_column(column, justify="right" if column not in ("answer", "finish") else "left")
    for i, c in enumerate(result.candidates):
        mark = " [green]<[/]" if c.answer is not None and c.answer == result.answer else ""
        votes = result.votes.get(c.answer) if c.answer is not None else None
        table.add_row(str(i), escape(str(c.answer)) + mark, "" if votes is None else f"{votes:g}",
                      "" if c.score is None else f"{c.score:.3f}", str(c.completion_tokens), c.finish_reason)
    return table


def _usage_table(result: Result) -> Table:
    table = Table(title="usage by role")
    columns = ("prompt_tokens", "cached_tokens", "completion_tokens", "thinking_tokens", "calls", "seconds")
    table.add_column("role")
    for column in columns:
        table.add_column(column.removesuffix("_tokens"), justify="right")
    rows = [*result.usage_by_role.items(), ("total", result.usage)]
    for role, usage in rows:
        values = usage.to_dict()
        table.add_row(role, *(f"{values[c]:.2f}" if c == "seconds" else f"{values[c]:,}" for c in columns))
    return table


def render(out: Console, result: Result, ledger: Ledger, info: Any, seconds: float) -> None:
    """Print the answer panel, the candidates, the usage by role, and the compute and dollar cost."""
    out.print(_answer_panel(result, ledger.model, seconds))
    if result.candidates:
        out.print(_candidates_table(result))
    out.print(_usage_table(result))
    report = _compute(result, ledger, info)
    cost = f"dollars: ${ledger.usd:.6f}"
    if report is not None:
        cost = (f"FLOPs: {report.flops:.3e} (prefill {report.prefill_flops:.2e}, decode {report.decode_flops:.2e})"
                f"  bytes moved: {report.bytes_moved:.3e}  " + cost)
    out.print(cost + f"  seconds: {seconds:.2f}" + ("  [yellow]budget exhausted[/]" if result.budget_exhausted else ""))
