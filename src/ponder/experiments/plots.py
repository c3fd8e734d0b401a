"""The report's PNG figures (matplotlib, Agg): scaling curves per compute axis, coverage, frontier, bins.

Each function draws one figure from an `Analysis` and writes it to a path; nothing here computes a number
the tables do not also show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ponder.experiments.curves import Point
from ponder.experiments.outcomes import AXIS_LABELS
from ponder.experiments.summary import BEST_OF_N, MAJORITY, Analysis
from ponder.extras import require


def _pyplot() -> Any:
    mpl = require("matplotlib", "plots")
    mpl.use("Agg")  # files only; never a window
    return require("matplotlib.pyplot", "plots")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _by_strategy(points: Sequence[Point], deployable: bool | None = True) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for p in points:
        if deployable is None or p.deployable == deployable:
            out.setdefault(p.strategy, []).append(p)
    return {s: sorted(ps, key=lambda p: p.budget) for s, ps in sorted(out.items())}


def _draw_curve(ax: Any, pts: Sequence[Point], xs: Sequence[float], label: str, **style: Any) -> None:
    ok = [i for i, x in enumerate(xs) if x > 0 and math.isfinite(x) and math.isfinite(pts[i].accuracy)]
    if not ok:
        return
    x = np.array([xs[i] for i in ok])
    y = np.array([pts[i].accuracy for i in ok])
    lo = np.array([pts[i].ci_low for i in ok])
    hi = np.array([pts[i].ci_high for i in ok])
    if len(ok) == 1:
        ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", capsize=4, label=label, **style)
        return
    (line,) = ax.plot(x, y, marker="o", label=label, **style)
    ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())


def accuracy_vs_compute(a: Analysis, axis: str, path: Path) -> Path:
    """Accuracy against mean compute per problem on one axis, a 95% CI band per strategy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for strategy, pts in _by_strategy(a.points).items():
        _draw_curve(ax, pts, [p.cost[axis] for p in pts], strategy)
    ax.set_xscale("log")
    return _finish(fig, ax, path, f"{AXIS_LABELS[axis]} per problem (log scale)", "accuracy",
                   f"Accuracy vs {AXIS_LABELS[axis]} (95% bootstrap CI over problems)")


def _finish(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and legend one single-axes figure, then save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an axis with no data (e.g. dollars unpriced) draws no legend
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def coverage_vs_samples(a: Analysis, path: Path) -> Path:
    """pass@k (oracle coverage) against k, with the deployable votes for comparison."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    groups = _by_strategy(a.points, deployable=None)
    for strategy in ("pass_at_k", MAJORITY, BEST_OF_N, "best_of_n_max", "program_aided"):
        pts = groups.get(strategy)
        if pts:
            style = {"linewidth": 2.5} if strategy == "pass_at_k" else {"linestyle": "--"}
            label = "coverage (pass@k, oracle)" if strategy == "pass_at_k" else strategy
            _draw_curve(ax, pts, [float(p.budget) for p in pts], label, **style)
    ax.set_xscale("log", base=2)
    return _finish(fig, ax, path, "samples k (log2 scale)", "share of problems",
                   "Coverage and accuracy against samples from one pool")


def frontier(a: Analysis, path: Path) -> Path:
    """The two-fold compute-optimal policy's held-out accuracy against tokens, with the baselines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for kind, pts in a.frontiers.items():
        if pts:
            xs = [p.cost for p in pts]
            ax.plot(xs, [p.accuracy for p in pts], marker="s", linewidth=2,
                    label=f"compute-optimal ({kind} difficulty, held out)")
    groups = _by_strategy(a.points)
    for strategy in (MAJORITY, BEST_OF_N):
        pts = groups.get(strategy)
        if pts:
            _draw_curve(ax, pts, [p.cost["tokens"] for p in pts], strategy, linestyle="--")
            ax.axhline(pts[-1].accuracy, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    return _finish(fig, ax, path, "generated tokens per problem (log scale)", "accuracy",
                   "Compute-optimal policy vs majority voting and best-of-N")


def per_bin(a: Analysis, path: Path, kind: str = "oracle") -> Path:
    """Accuracy against tokens within each difficulty bin (1 easiest .. 5 hardest)."""
    plt = _pyplot()
    bins = a.bins[kind]
    ids = sorted(int(b) for b in set(bins.tolist()) if b > 0) or [0]
    fig, axes = plt.subplots(1, len(ids), figsize=(3.2 * len(ids), 3.6), sharey=True, squeeze=False)
    for ax, b in zip(axes[0], ids, strict=True):
        mask = bins == b
        for strategy in sorted({o.strategy for o in a.outcomes if o.deployable}):
            mine = sorted((o for o in a.outcomes if o.strategy == strategy), key=lambda o: o.budget)
            xy = [(o.mean_cost("tokens", mask), o.accuracy(mask)) for o in mine]
            xy = [(x, y) for x, y in xy if x > 0 and math.isfinite(y)]
            if xy:
                ax.plot(*zip(*xy, strict=True), marker="o", markersize=3, label=strategy)
        ax.set_xscale("log")
        ax.set_title(f"bin {b} ({int(mask.sum())} problems)", fontsize=9)
        ax.set_xlabel("tokens", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.suptitle(f"Accuracy vs tokens by {kind} difficulty (1 = easiest)", fontsize=10)
    return _save(fig, path)


def draw_all(a: Analysis, folder: Path) -> dict[str, Path]:
    """Every figure of the report, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {f"accuracy_vs_{axis}": accuracy_vs_compute(a, axis, folder / f"accuracy_vs_{axis}.png")
           for axis in AXIS_LABELS}
    out["coverage_vs_samples"] = coverage_vs_samples(a, folder / "coverage_vs_samples.png")
    out["compute_optimal_frontier"] = frontier(a, folder / "compute_optimal_frontier.png")
    out["per_bin_oracle"] = per_bin(a, folder / "per_bin_oracle.png", "oracle")
    return out
