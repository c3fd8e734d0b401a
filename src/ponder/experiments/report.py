"""`ponder report runs/NAME`: a run's store -> runs/NAME/report/ (PNGs, index.html, summary.md, summary.json).

This module owns the files and their text; the numbers come from summary.py, the figures from plots.py. The
HTML is self-contained (PNGs inlined as data URIs), so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ponder.experiments import plots
from ponder.experiments.curves import pass_rates
from ponder.experiments.outcomes import AXES, AXIS_LABELS, StoppingPoint
from ponder.experiments.summary import Analysis, analyze, headline


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written, and its headline figures."""

    folder: Path
    html: Path
    summary_md: Path
    summary_json: Path
    figures: Mapping[str, Path]
    summary: Mapping[str, Any]
    policy: Path | None = None
    """policy.json: the compute-optimal policy fitted on every problem, for `ponder serve --policy`."""
    deterministic: bool = False
    """The run decoded each request alone (`ponder sweep --deterministic`): its rows repeat bit for bit."""


def write_report(run_dir: str | Path, out_dir: str | Path | None = None,
                 stopping_point: StoppingPoint | None = None, learned: bool = False) -> ReportFiles:
    """Open the run's store (StoreError if it is corrupt) and write its report; `learned` adds a verifier learned
    from the run's own samples, cross-fitted (needs scikit-learn and at least 5 problems)."""
    from ponder.experiments.store import Store

    run_dir = Path(run_dir)
    extra = learned_section(run_dir) if learned else None
    with Store.open(run_dir) as store:
        return build_report(store, Path(out_dir) if out_dir else run_dir / "report", stopping_point, run_dir.name,
                            extra)


LEARNED_KS = (1, 2, 4, 8, 16)


def learned_section(run_dir: Path) -> dict[str, Any]:
    """Best-of-k with a verifier cross-fitted on the run's own samples, beside the vote and pass@k."""
    from ponder.experiments.verifier_train import evaluate, train

    training = train([run_dir], "all")
    n = min(len(p.candidates) for p in training.problems)
    curves = [c.summary() for c in evaluate(training, [k for k in LEARNED_KS if k <= n])]
    card = training.scorer.card
    return {"estimator": card.estimator, "cv_auc": card.cv_auc, "cv_ece": card.cv_ece, "n_samples": card.n_samples,
            "curves": curves}


def build_report(store: Any, folder: Path, stopping_point: StoppingPoint | None = None,
                 name: str = "", learned: Mapping[str, Any] | None = None) -> ReportFiles:
    """Write the report of anything with `.config`, `.problems()`, `.samples()` and `.results()`."""
    config = dict(store.config)
    wall = getattr(store, "wall_seconds", None)
    if callable(wall) and wall() > 0:
        config["machine_seconds"] = wall()
    judgments = getattr(store, "judgments", None)
    if callable(judgments) and judgments():  # an open task: judged, not checked
        from ponder.experiments.open_report import write_open_report

        provenance = _provenance(config, name)
        summary, figures = write_open_report(store, folder, config, provenance, name)
        return ReportFiles(folder, folder / "index.html", folder / "summary.md", folder / "summary.json", figures,
                           summary, None, provenance["deterministic"])
    samples = store.samples()
    analysis = analyze(store.problems(), samples, store.results(), config, stopping_point)
    summary = headline(analysis)
    if learned is not None:
        summary = {**summary, "learned_verifier": dict(learned)}
    folder.mkdir(parents=True, exist_ok=True)
    figures = plots.draw_all(analysis, folder)
    provenance = _provenance(config, name)
    (folder / "summary.json").write_text(json.dumps({**summary, "provenance": provenance}, indent=2,
                                                    default=_jsonable) + "\n")
    (folder / "summary.md").write_text(summary_markdown(summary, analysis, name, provenance["deterministic"]))
    (folder / "index.html").write_text(render_html(analysis, summary, figures, provenance, samples, name))
    return ReportFiles(folder, folder / "index.html", folder / "summary.md", folder / "summary.json", figures,
                       summary, _write_policy(analysis, config, summary, folder), provenance["deterministic"])


def _write_policy(a: Any, config: Mapping[str, Any], summary: Mapping[str, Any], folder: Path) -> Path | None:
    """policy.json, when the run has a probe pool and the policy can match the best fixed strategy."""
    from ponder.experiments import policy
    from ponder.experiments.outcomes import owner_of

    fit = policy.deployable(a.outcomes, a.probe) if a.probe is not None else None
    if fit is None:
        return None
    held_out = summary.get("compute_optimal_vs_best_fixed")
    doc = policy.policy_document(fit, a.probe_spec, owner_of, config, held_out)
    path = folder / "policy.json"
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def _provenance(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    from ponder import __version__

    info = config.get("model_info") or {}
    return {
        "run": name,
        "task": config.get("task"),
        "strategies": config.get("strategies"),
        "model": config.get("model_name") or config.get("model", info.get("name")),
        "model_sha256": info.get("sha256") or config.get("model_sha256"),
        "model_params": info.get("n_params"),
        "sampling": config.get("sampling"),
        "seed": config.get("seed"),
        "budgets": config.get("budgets"),
        "limit": config.get("limit"),
        "deterministic": bool(config.get("deterministic", False)),  # stores made before the flag were not
        "created": config.get("created"),
        "run_ponder_version": config.get("ponder_version"),
        "report_generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "report_ponder_version": __version__,
    }


# -- summary.md ---------------------------------------------------------------------------------------------
def _fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _at_k(table: Mapping[str, float]) -> str:
    return ", ".join(f"@{k}: {_fmt(v, pct=True)}" for k, v in table.items()) or "n/a (not in this run)"


BATCHING = {True: "deterministic (each request decoded alone: a rerun, a resume or a Ray run stores the same rows)",
            False: "default (continuous batching: a rerun may re-draw some samples, docs/ray.md)"}
"""How a run's batches were made, as summary.md says it."""


def summary_markdown(s: Mapping[str, Any], a: Analysis, name: str = "", deterministic: bool = False) -> str:
    """The headline in prose: greedy, maj@k, best-of-N@k, adaptive savings, efficiency and dollars."""
    vs_bon, vs_maj = s["oracle_upper_bound_efficiency_vs_best_of_n"], s["oracle_upper_bound_efficiency_vs_majority"]
    lines = [
        f"# ponder report{': ' + name if name else ''}",
        "",
        f"- Problems: {s['n_problems']}",
        f"- Greedy accuracy: {_fmt(s['greedy_accuracy'], pct=True)}",
        f"- Majority voting (maj@k): {_at_k(s['maj_at_k'])}",
        f"- Best-of-N (weighted, @k): {_at_k(s['best_of_n_at_k'])}",
        f"- Coverage (pass@k, oracle): {_at_k(s['pass_at_k'])}",
        f"- Best deployable strategy: {s['best_strategy']}@{s['best_budget']} at "
        f"{_fmt(s['best_accuracy'], pct=True)}, using {_fmt(s['best_tokens_ratio_vs_greedy'])}x greedy's tokens",
        f"- Gain over greedy: {s['gain_over_greedy']['text'] if s['gain_over_greedy'] else 'n/a'}",
        f"- Adaptive consistency saves {_fmt(s['adaptive_token_savings_vs_majority'], pct=True)} of the tokens "
        f"of maj@{s['majority_largest_budget']}",
        f"- Compute-optimal policy (probe-binned, 5 x 2-fold held out, tokens): "
        f"{_policy_text(s['compute_optimal_vs_best_fixed'])} than the best fixed strategy; "
        f"{_policy_text(s['compute_optimal_vs_majority'])} than maj@{s['majority_largest_budget']}; "
        f"{_policy_text(s['compute_optimal_vs_best_of_n'])} than best-of-N@{s['best_of_n_largest_budget']}",
        f"- Oracle-binned upper bound (bins from the graded pool; not deployable): {_ratio_text(vs_maj)} vs "
        f"majority voting, {_ratio_text(vs_bon)} vs best-of-N",
        f"- Cost: ${_fmt(s['usd_per_solved_problem'], digits=4)} per solved problem (best strategy)",
        f"- Truncated samples (hit max_tokens): {_fmt(s['truncation_share'], pct=True)}",
        f"- Batching: {BATCHING[deterministic]}",
        *_learned_lines(s.get("learned_verifier")),
        "",
    ]
    if a.notes:
        lines += ["Notes:", *[f"- {n}" for n in a.notes], ""]
    return "\n".join(lines)


def _learned_lines(learned: Mapping[str, Any] | None) -> list[str]:
    if not learned:
        return []
    return [f"- Learned verifier ({learned['estimator']}, cross-fitted AUC {learned['cv_auc']:.3f}), best-of-k "
            "weighted: " + ", ".join(f"@{c['k']} {_fmt(c['learned_weighted'], pct=True)} (maj "
                                     f"{_fmt(c['majority'], pct=True)})" for c in learned["curves"])]


def _policy_text(figure: Mapping[str, Any] | None) -> str:
    return figure["text"] if figure else "n/a"


def _ratio_text(r: float | None) -> str:
    return f"{r:.2f}x less compute" if r is not None else "never matched (null)"


# -- index.html ---------------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:1em;overflow-x:auto}"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str) -> str:
    head = "".join(f"<th{' class=l' if i == 0 else ''}>{html.escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{' class=l' if i == 0 else ''}>{html.escape(str(c))}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _accuracy_rows(a: Analysis) -> list[list[str]]:
    rows = []
    for p in sorted(a.points, key=lambda p: (not p.deployable, p.strategy, p.budget)):
        rows.append([p.strategy + ("" if p.deployable else " (oracle)"), p.budget, _fmt(p.accuracy, pct=True),
                     f"{_fmt(p.ci_low, pct=True)} - {_fmt(p.ci_high, pct=True)}",
                     *(_fmt(p.cost[axis], digits=4) for axis in AXES), p.n_problems,
                     "exact" if p.exact else "sampled subsets"])
    return rows


def _bin_rows(a: Analysis, samples: Sequence[Any]) -> list[list[str]]:
    rates = pass_rates(samples)
    bins = a.bins["oracle"]
    rows = []
    for b in sorted({int(x) for x in bins.tolist() if x > 0}):
        mask = bins == b
        r = [rates[pid] for pid, m in zip(a.pids, mask, strict=True) if m and pid in rates]
        accs = [_fmt(o.accuracy(mask), pct=True) if (o := a.outcome(s)) else "n/a"
                for s in ("cot", "self_consistency", "best_of_n")]
        rows.append([b, int(mask.sum()), f"{min(r):.2f} - {max(r):.2f}",
                     int((a.bins["predicted"][mask] == b).sum()), *accs])
    return rows


def _learned_html(a: Analysis, learned: Mapping[str, Any] | None) -> list[str]:
    """The learned verifier's best-of-k beside the vote, self_eval best-of-N (where the run scored its pool) and
    pass@k, from one pool; every learned score cross-fitted."""
    if not learned:
        return []
    rows = []
    for c in learned["curves"]:
        self_eval = a.outcome("best_of_n", c["k"])
        lo, hi = c["gain_over_majority_ci"]
        rows.append([c["k"], _fmt(c["majority"], pct=True), _fmt(c["learned_weighted"], pct=True),
                     _fmt(c["learned_max"], pct=True), "n/a" if self_eval is None else
                     _fmt(self_eval.accuracy(), pct=True), _fmt(c["pass_at_k"], pct=True),
                     f"{100 * c['gain_over_majority']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"])
    intro = (f"<h2>Learned verifier</h2><p>A {html.escape(str(learned['estimator']))} scorer learned from this "
             f"run's own {learned['n_samples']} labelled samples (cross-fitted AUC {learned['cv_auc']:.3f}, ECE "
             f"{learned['cv_ece']:.3f}): no problem is scored by a scorer that saw it or its template.</p>")
    return [intro, _table(["k", "maj@k", "learned weighted", "learned max", "self_eval best-of-k", "pass@k",
                           "gain over maj (points, 95% CI)"], rows, "learned")]


def _frontier_rows(a: Analysis, kind: str) -> list[list[str]]:
    return [[_fmt(p.level, digits=4), _fmt(p.accuracy, pct=True), _fmt(p.cost, digits=4), "; ".join(
        f"bin {i + 1}: {c}" for i, c in enumerate(p.choices))] for p in a.frontiers.get(kind, ())]


def render_html(a: Analysis, s: Mapping[str, Any], figures: Mapping[str, Path], provenance: Mapping[str, Any],
                samples: Sequence[Any], name: str = "") -> str:
    """One self-contained page: headline, figures, tables and provenance."""
    head = [[k, _fmt(v) if not isinstance(v, dict) else v["text"] if "text" in v else _at_k(v)]
            for k, v in s.items() if k not in ("scaling_fit_tokens", "learned_verifier")]  # own tables below
    fits = [[f.strategy, f.axis, _fmt(f.slope, digits=4), _fmt(f.intercept, digits=4), _fmt(f.r2, digits=3),
             f.n_points] for f in a.fits]
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>ponder report {html.escape(name)}</title>"
        f"<style>{_CSS}</style></head><body><h1>ponder report {html.escape(name)}</h1>",
        "<h2>Headline</h2>", _table(["figure", "value"], head, "summary"),
        "<h2>Accuracy against compute</h2>",
        *(_img(figures[f"accuracy_vs_{axis}"], f"accuracy vs {AXIS_LABELS[axis]}") for axis in AXES),
        _table(["strategy", "budget", "accuracy", "95% CI", *(f"{AXIS_LABELS[x]} / problem" for x in AXES),
                "problems", "estimate"], _accuracy_rows(a), "accuracy"),
        "<h2>Coverage against samples</h2>", _img(figures["coverage_vs_samples"], "coverage vs samples"),
        "<h2>Truncation</h2><p>Share of samples and runs that hit max_tokens (finish_reason \"length\").</p>",
        _table(["rows", "share truncated"], [[k, _fmt(v, pct=True)] for k, v in a.truncation.items()], "truncation"),
        "<h2>Difficulty bins</h2><p>Oracle bins by the pool's single-sample pass rate (1 = easiest); the "
        "predicted bins use the agreement among the first 4 samples and no answers.</p>",
        _img(figures["per_bin_oracle"], "accuracy per difficulty bin"),
        _table(["bin", "problems", "pass rate", "same predicted bin", "greedy", "maj@N", "best-of-N@N"],
               _bin_rows(a, samples), "bins"),
        "<h2>Compute-optimal policy</h2><p>Per bin and token level, the (strategy, budget) best on one half of "
        "the problems, scored on the other half, both ways (two-fold). Oracle bins use the answers (as Snell et "
        "al. 2024 do), so that policy is an upper bound; the predicted bins need no answers.</p>",
        _img(figures["compute_optimal_frontier"], "compute-optimal frontier"),
        *(f"<h3>{kind} difficulty</h3>" + _table(["token level", "held-out accuracy", "tokens / problem",
                                                  "choice per bin (trained on A / on B)"],
                                                 _frontier_rows(a, kind), f"frontier-{kind}")
          for kind in a.frontiers),
        *_learned_html(a, s.get("learned_verifier")),
        "<h2>Scaling fits</h2><p>accuracy ≈ intercept + slope × ln(compute), least squares.</p>",
        _table(["strategy", "axis", "slope", "intercept", "R²", "points"], fits, "fits"),
        "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in a.notes) + "</ul>",
        "<h2>Provenance</h2>", _table(["field", "value"], [[k, json.dumps(v, default=str)]
                                                          for k, v in provenance.items()], "provenance"),
        "</body></html>\n",
    ]
    return "\n".join(parts)
