"""`ponder verifier`: learn a verifier from a model's own labelled samples, and give samples their features.

    ponder verifier featurize runs/NAME [--hidden]       # re-score stored samples: entropies, hidden state
    ponder verifier train runs/A runs/B --out scorer.json  # cross-fitted, then refit on everything
    ponder verifier train runs/A --level step --out steps.json  # a step-level value for beam search, particles
    ponder ask "..." -s best_of_n -p verifier=learned:scorer.json
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ponder.cli import app
from ponder.errors import InvalidParameter, PonderError
from ponder.verifiers.scorer import ScorerLevel

console = Console()
err_console = Console(stderr=True)
verifier_app = typer.Typer(help="Learn a verifier from a model's own labelled samples.", no_args_is_help=True)
app.add_typer(verifier_app, name="verifier")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console)


@verifier_app.command()
def train(
    runs: list[Path] = typer.Argument(..., help="Sweep run folders whose candidate samples to learn from."),
    out: Path = typer.Option(..., "--out", help="The scorer file to write (JSON)."),
    features: str = typer.Option("all", "--features", help="all | pool (no log-probabilities: usable over "
                                 "HTTP) | sample; +hidden adds the final hidden state (after featurize --hidden)."),
    folds: int = typer.Option(5, "--folds", help="Grouped cross-validation folds (by problem or template)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    k: list[int] = typer.Option([], "--k", help="Also show best-of-k curves at these k (cross-fitted)."),
    level: ScorerLevel = typer.Option(ScorerLevel.OUTCOME, "--level", help="outcome: whole candidates (the "
                                      "learned verifier); step: partial solutions cut after each step, labelled "
                                      "by their outcome (the step_value verifier, for beam search and particle "
                                      "filtering)."),
) -> None:
    """Fit a scorer on the runs' samples, labelled by each problem's checker, and write it to --out."""
    try:
        from ponder.experiments.step_train import train_steps
        from ponder.experiments.verifier_train import evaluate
        from ponder.experiments.verifier_train import train as fit

        if folds < 2:
            raise InvalidParameter("folds", folds, "use 2 or more")
        if level == ScorerLevel.STEP and (k or features != "all"):
            raise InvalidParameter("level", level.value, "a step scorer has its own features and no best-of-k "
                                   "curves: drop --features and --k")
        with _progress() as progress:
            bar = progress.add_task("cross-fitting", total=folds)
            on_fold = lambda i, n: progress.update(bar, completed=i, total=n)  # noqa: E731
            training = (train_steps(runs, folds=folds, seed=seed, on_fold=on_fold) if level == ScorerLevel.STEP
                        else fit(runs, features, folds=folds, seed=seed, on_fold=on_fold))
        path = training.scorer.save(out)
        card = training.scorer.card
        rows = "prefixes" if level == ScorerLevel.STEP else "samples"
        console.print(f"{level.value} scorer: {path} ({card.estimator}, {len(card.features)} features, "
                      f"{card.n_samples} {rows} in {card.n_groups} groups, model {card.model_name})")
        console.print(f"cross-fitted AUC {card.cv_auc:.3f}  Brier {card.cv_brier:.3f}  ECE {card.cv_ece:.3f}  "
                      f"({card.fit_seconds:.1f} s)")
        if level == ScorerLevel.STEP:
            console.print("AUC by step: " + "  ".join(f"{d}{'+' if d == '4' else ''}: {a:.3f}"
                                                      for d, a in card.extra["auc_by_depth"].items()))
            console.print(f"use it as: -p verifier=step_value:{path} (beam_search, particle_filtering)")
        elif k:
            _show_curves(evaluate(training, k))
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _show_curves(curves: list) -> None:
    table = Table(title="best-of-k on the training pools (cross-fitted: no problem scored by a model that saw it)")
    for column in ("k", "maj@k", "pass@k", "learned weighted", "learned max", "gain (weighted) [95% CI]"):
        table.add_column(column, justify="right")
    for c in curves:
        s = c.summary()
        lo, hi = s["gain_over_majority_ci"]
        gain = f"{100 * s['gain_over_majority']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        table.add_row(str(c.k), _pct(s["majority"]), _pct(s["pass_at_k"]), _pct(s["learned_weighted"]),
                      _pct(s["learned_max"]), gain)
    console.print(table)


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


@verifier_app.command()
def featurize(
    run: Path = typer.Argument(..., help="A sweep run folder on a local model."),
    hidden: bool = typer.Option(False, "--hidden", help="Also store the final hidden state of each sample."),
    n_threads: int = typer.Option(2, "--n-threads", help="CPU threads."),
) -> None:
    """Re-score the run's candidate samples on the model (teacher forcing) and store their full features."""
    try:
        from ponder.experiments.featurize import featurize as rescore

        with _progress() as progress:
            bar = progress.add_task("re-scoring", total=None)
            report = rescore(run, hidden=hidden, n_threads=n_threads,
                             on_problem=lambda i, n: progress.update(bar, completed=i, total=n))
        rate = report.tokens / report.seconds if report.seconds else 0.0
        console.print(f"re-scored {report.samples} samples ({report.skipped} already were): {report.tokens:,} "
                      f"tokens in {report.seconds:.1f} s ({rate:.0f} tok/s)")
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
