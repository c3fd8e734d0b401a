"""The report of a sweep on an open task: win-rate against the baseline on the four compute axes, the judge's
position bias and self-agreement, and side-by-side examples a reader can check the judge on.

An open problem has no checker, so a (strategy, budget)'s measure is its mean verdict score against the baseline
(experiments/judged.py: both orders, ties half), with a bootstrap interval over prompts; beside it the judge's
preference (its probability that the answer is better, averaged over both orders). Its compute is what the
strategy spent (a tournament's own judge included); the evaluation judge's tokens are reported apart. The
baseline itself scores exactly 0.5. This module owns those numbers and the open report's files; `ponder report`
(report.py) calls it for a run that holds judgments.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from pathlib import Path
from typing import Any

from ponder.experiments import curves
from ponder.experiments.judged import Verdict, baseline_strategy, win_rate
from ponder.experiments.judging import pool_subject
from ponder.experiments.outcomes import (
    AXES,
    AXIS_LABELS,
    CostModel,
    Outcome,
    pool_outcomes,
    pool_strategies,
    problem_order,
    result_outcomes,
)
from ponder.experiments.records import JudgmentRow, ProblemRow, ResultRow, SampleRow
from ponder.types import Usage

EXAMPLES = 3
"""Prompts shown side by side in the report."""
_SIDE_CSS = "table.side td{vertical-align:top;width:45%}table.side pre{white-space:pre-wrap}"


@dataclass(frozen=True)
class OpenAnalysis:
    pids: tuple[str, ...]
    outcomes: tuple[Outcome, ...]
    points: tuple[curves.Point, ...]
    preference_points: tuple[curves.Point, ...]
    """The same curves with each verdict's `preference` (the judge's probabilities) in place of its win."""
    verdicts: Mapping[tuple[str, int], tuple[Verdict, ...]]
    """(strategy, budget) -> its verdicts, in problem order."""
    judge_usage: Usage


Measure = Callable[[Verdict], float]
WIN: Measure = attrgetter("score")
PREFERENCE: Measure = attrgetter("preference")


def judged_outcomes(pids: Sequence[str], results: Sequence[ResultRow], judgments: Sequence[JudgmentRow],
                    cost_model: CostModel, measure: Measure = WIN) -> list[Outcome]:
    """Per (strategy, budget): each prompt's verdict score against the baseline (or another `measure` of the
    verdict), and the strategy's own compute; the baseline scores 0.5 on every prompt it answered. NaN where a
    prompt has no judgment."""
    score = {(j.problem_id, j.strategy, j.budget): measure(Verdict(j.response_first, j.baseline_first))
             for j in judgments}
    base = baseline_strategy()

    def grade(r: ResultRow) -> float:
        return 0.5 if r.strategy == base else score.get((r.problem_id, r.strategy, r.budget), math.nan)

    return result_outcomes(pids, results, cost_model, grade)


def judged_pool_outcomes(pids: Sequence[str], samples: Sequence[SampleRow], judgments: Sequence[JudgmentRow],
                         cost_model: CostModel, budgets: Sequence[int] | None, seed: int,
                         measure: Measure = WIN) -> list[Outcome]:
    """The pooled curves (best-of-N with the judge's scores, ...) over k-subsets of each pool, as on math, with
    each sample's verdict score standing for its correctness: the expected win of the sample each selects."""
    score = {(j.problem_id, j.strategy, j.budget): measure(Verdict(j.response_first, j.baseline_first))
             for j in judgments}
    judged = [replace(s, correct=score[key]) for s in samples  # type: ignore[arg-type]
              if (key := (s.problem_id, pool_subject(s.pool), s.index)) in score]
    deployable = [st for st in pool_strategies() if st.deployable]
    return pool_outcomes(pids, judged, cost_model, budgets, seed, deployable) if judged else []


def analyze_open(problems: Sequence[ProblemRow], results: Sequence[ResultRow], judgments: Sequence[JudgmentRow],
                 config: Mapping[str, Any], samples: Sequence[SampleRow] = (), resamples: int = 1000) -> OpenAnalysis:
    seed = int(config.get("seed", 0) or 0)
    cost_model = CostModel.from_config(config)
    if config.get("machine_seconds"):
        cost_model = cost_model.amortised(float(config["machine_seconds"]), [*samples, *results])
    pids = problem_order(problems, results, samples)
    budgets = config.get("budgets")
    outcomes = judged_pool_outcomes(pids, samples, judgments, cost_model, budgets, seed)
    outcomes += judged_outcomes(pids, results, judgments, cost_model)
    soft = judged_pool_outcomes(pids, samples, judgments, cost_model, budgets, seed, PREFERENCE)
    soft += judged_outcomes(pids, results, judgments, cost_model, PREFERENCE)
    order = {pid: i for i, pid in enumerate(pids)}
    verdicts: dict[tuple[str, int], list[Verdict]] = defaultdict(list)
    for j in sorted(judgments, key=lambda j: order.get(j.problem_id, len(order))):
        verdicts[(j.strategy, j.budget)].append(Verdict(j.response_first, j.baseline_first))
    usage = sum((u for j in judgments for u in j.usage_by_role.values()), Usage())
    return OpenAnalysis(tuple(pids), tuple(outcomes), tuple(curves.curve_points(outcomes, seed, resamples)),
                        tuple(curves.curve_points(soft, seed, resamples)), {k: tuple(v) for k, v in verdicts.items()},
                        usage)


def open_headline(a: OpenAnalysis, config: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of an open run's summary.json: the curves, the best point, and the judge's own behaviour."""
    every = [v for vs in a.verdicts.values() for v in vs]
    overall = win_rate(every)
    soft = {(p.strategy, p.budget): p for p in a.preference_points}
    rows = [{"strategy": p.strategy, "budget": p.budget, "win_rate": p.accuracy, "ci_low": p.ci_low,
             "ci_high": p.ci_high, "preference": soft[(p.strategy, p.budget)].accuracy,
             "preference_ci_low": soft[(p.strategy, p.budget)].ci_low,
             "preference_ci_high": soft[(p.strategy, p.budget)].ci_high, "n_prompts": p.n_problems,
             **{a_: p.cost[a_] for a_ in AXES}}
            for p in sorted(a.points, key=lambda p: (p.strategy, p.budget))]
    judged = [r for r in rows if r["strategy"] != baseline_strategy() and math.isfinite(r["win_rate"])]
    best = max(judged, key=lambda r: (r["win_rate"], -r["tokens"]), default=None)
    return {
        "measure": "win rate against the baseline (judged in both orders, ties half); preference: the judge's "
                   "probability that the answer is better, averaged over both orders",
        "baseline": baseline_strategy(),
        "judge": config.get("judge") or config.get("model_name") or config.get("model"),
        "n_prompts": len(a.pids),
        "curves": rows,
        "best": best,
        "position_bias": overall.position_bias,
        "position_bias_in_probability": overall.mean_p_first,
        "self_agreement": overall.self_agreement,
        "n_verdicts": overall.n,
        "judge_usage": {"prompt_tokens": a.judge_usage.prompt_tokens,
                        "completion_tokens": a.judge_usage.completion_tokens, "calls": a.judge_usage.calls,
                        "seconds": a.judge_usage.seconds},
    }


def draw(a: OpenAnalysis, folder: Path) -> dict[str, Path]:
    """Win rate against mean compute per prompt, one figure per axis, a 95% CI band per strategy."""
    from ponder.experiments.plots import _by_strategy, _draw_curve, _finish, _pyplot

    plt = _pyplot()
    out = {}
    for name, points, label in (("win_rate", a.points, "win rate"), ("preference", a.preference_points,
                                                                      "judge's preference")):
        for axis in AXES:
            fig, ax = plt.subplots(figsize=(7.5, 4.6))
            for strategy, pts in _by_strategy(points).items():
                _draw_curve(ax, pts, [p.cost[axis] for p in pts], strategy)
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_xscale("log")
            out[f"{name}_vs_{axis}"] = _finish(
                fig, ax, folder / f"{name}_vs_{axis}.png", f"{AXIS_LABELS[axis]} per prompt (log scale)",
                f"{label} vs baseline", f"{label.capitalize()} vs {AXIS_LABELS[axis]} (95% bootstrap CI over prompts)")
    return out


def summary_markdown(s: Mapping[str, Any], name: str = "") -> str:
    best = s["best"]
    lines = [f"# ponder report{': ' + name if name else ''} (open task)", "",
             f"- Prompts: {s['n_prompts']}; measure: {s['measure']}, against {s['baseline']} (greedy)",
             f"- Judge: {s['judge']}; position bias {s['position_bias']:+.3f} (0 none, +0.5 always the first "
             f"shown); agrees with itself across orders on {100 * s['self_agreement']:.0f}% of "
             f"{s['n_verdicts']} verdicts; in its probabilities the first shown gains "
             f"{s['position_bias_in_probability']:+.3f}",
             "- Best: " + (f"{best['strategy']}@{best['budget']} wins {100 * best['win_rate']:.1f}% "
                           f"[{100 * best['ci_low']:.1f}, {100 * best['ci_high']:.1f}] at {best['tokens']:.0f} "
                           "tokens per prompt" if best else "n/a (nothing judged)"),
             "", "| strategy | budget | win rate | 95% CI | preference | 95% CI | tokens / prompt |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['strategy']} | {r['budget']} | {100 * r['win_rate']:.1f}% | {100 * r['ci_low']:.1f} - "
              f"{100 * r['ci_high']:.1f} | {100 * r['preference']:.1f}% | {100 * r['preference_ci_low']:.1f} - "
              f"{100 * r['preference_ci_high']:.1f} | {r['tokens']:.0f} |" for r in s["curves"]]
    return "\n".join([*lines, ""])


def examples_html(problems: Sequence[ProblemRow], results: Sequence[ResultRow],
                  judgments: Sequence[JudgmentRow], n: int = EXAMPLES) -> str:
    """For the first `n` prompts: each strategy's response (its thinking included) in a column beside the
    baseline's, with both verdicts, so a reader can check the judge."""
    base = baseline_strategy()
    by_key = {(r.problem_id, r.strategy, r.budget): r for r in results}
    parts = ["<h2>Side by side</h2><p>Each strategy's response, thinking included (the judge reads only what "
             "follows it), beside the baseline's, with the judge's verdict in each order: P(the first shown is "
             "better).</p>"]
    for p in problems[:n]:
        baseline = by_key.get((p.problem_id, base, 1))
        mine = [j for j in judgments if (j.problem_id, j.strategy, j.budget) in by_key and j.problem_id == p.problem_id]
        if baseline is None or not mine:
            continue
        parts.append(f"<h3>{html.escape(p.question)}</h3><table class=side>"
                     f"<tr><th class=l>response</th><th class=l>{base} (the baseline)</th><th>verdicts</th></tr>")
        for j in mine:
            r = by_key[(j.problem_id, j.strategy, j.budget)]
            v = Verdict(j.response_first, j.baseline_first)
            parts.append(f"<tr><td class=l><b>{html.escape(j.strategy)}@{j.budget}</b><pre>{html.escape(r.text)}"
                         f"</pre></td><td class=l><pre>{html.escape(baseline.text)}</pre></td><td>score "
                         f"{v.score:g}<br>response first: {j.response_first:.2f}<br>baseline first: "
                         f"{j.baseline_first:.2f}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts)


def write_open_report(store: Any, folder: Path, config: Mapping[str, Any], provenance: Mapping[str, Any],
                      name: str = "") -> tuple[dict[str, Any], dict[str, Path]]:
    """summary.json, summary.md, index.html and the win-rate figures of an open run; returns (summary, figures)."""
    from ponder.experiments.report import _CSS, _fmt, _img, _table

    problems, results, judgments = store.problems(), store.results(), store.judgments()
    a = analyze_open(problems, results, judgments, config, store.samples())
    summary = open_headline(a, config)
    folder.mkdir(parents=True, exist_ok=True)
    figures = draw(a, folder)
    (folder / "summary.json").write_text(json.dumps({**summary, "provenance": dict(provenance)}, indent=2,
                                                    default=str) + "\n")
    (folder / "summary.md").write_text(summary_markdown(summary, name))
    rows = [[r["strategy"], r["budget"], _fmt(r["win_rate"], pct=True),
             f"{_fmt(r['ci_low'], pct=True)} - {_fmt(r['ci_high'], pct=True)}",
             *(_fmt(r[axis], digits=4) for axis in AXES), r["n_prompts"]] for r in summary["curves"]]
    page = [f"<!doctype html><html><head><meta charset=utf-8><title>ponder report {html.escape(name)}</title>"
            f"<style>{_CSS}{_SIDE_CSS}</style></head><body><h1>ponder report {html.escape(name)} (open task)</h1>",
            f"<pre>{html.escape(summary_markdown(summary, name))}</pre>",
            "<h2>Win rate against compute</h2>",
            *(_img(figures[f"win_rate_vs_{axis}"], f"win rate vs {AXIS_LABELS[axis]}") for axis in AXES),
            "<h2>The judge's preference against compute</h2><p>Its probability that the answer is better, "
            "averaged over both orders: a constant lean towards one position cancels, and what a judge too "
            "position-bound to flip its verdict still says through its probabilities is kept.</p>",
            *(_img(figures[f"preference_vs_{axis}"], f"preference vs {AXIS_LABELS[axis]}") for axis in AXES),
            _table(["strategy", "budget", "win rate", "95% CI", *(f"{AXIS_LABELS[x]} / prompt" for x in AXES),
                    "prompts"], rows, "win-rate"),
            examples_html(problems, results, judgments),
            "<h2>Provenance</h2>", _table(["field", "value"], [[k, json.dumps(v, default=str)]
                                                              for k, v in provenance.items()], "provenance"),
            "</body></html>\n"]
    (folder / "index.html").write_text("\n".join(page))
    return summary, figures
