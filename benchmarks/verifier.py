"""Learned-verifier benchmark: what a scorer learned from the model's own labelled samples buys over the vote;
writes benchmarks/results/verifier.json (the README's figures come from it, and a test checks that they match).

    .venv/bin/python benchmarks/verifier.py [--runs runs/verifier] [--limit 100] [--ood runs/verifier-ood]
                                            [--model ...] [--ood-limit 30] [--analyse-only]

In-distribution: pools drawn as benchmarks/quality.py's `chosen` run draws them (8 chains of thought and 8
programs per GSM8K test problem, on the default model), on the first --limit problems: the sweep is started (or
copied from runs/quality/chosen when that exists) and grown with `ponder sweep --resume RUN --limit N`, so the
problems quality.py drew are not drawn twice. A stopped run resumes; only problems with both pools drawn count.
Every candidate is scored
cross-fitted (5 grouped folds by GSM template: no problem is scored by a scorer that saw it or its template), and
best-of-k curves are drawn from random k-subsets with the pool features of each subset.

Out of distribution: a scorer trained on all the GSM8K pools scores reasoning-gym leg_counting (an arithmetic word
problem it never saw; pools of 4 chains and 4 programs, the sweep below, resumable). Only problems with both
pools complete are counted, and how many is recorded.

Step value: the same chains of thought cut after each step, each prefix labelled by its sample's outcome
(`ponder verifier train --level step`), cross-fitted by template: AUC over all prefixes and among one problem's
prefixes at one step (the ranking beam search and particle filtering need). benchmarks/search.py runs the searches.

Cost: fitting seconds against the sampling seconds of the training pools (the store's wall time), and re-scoring
seconds per sample (teacher forcing, with and without the final hidden state) on a copy of one problem.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from figures import verifier_table  # benchmarks/figures.py: the README's blocks
from ponder.benchmarking import write_result
from ponder.experiments.estimators import bootstrap_ci
from ponder.experiments.labelled import load_pools
from ponder.experiments.store import Store
from ponder.experiments.verifier_fit import auc
from ponder.experiments.verifier_train import evaluate, score_pools, train

HERE = Path(__file__).parent
KS = (1, 2, 4, 8)


def pools(runs: Path, model: str, limit: int) -> None:
    from quality import sweeps  # benchmarks/quality.py: the same sweep settings

    ponder = str(Path(sys.executable).with_name("ponder"))
    out, drawn = runs / "chosen", HERE.parent / "runs" / "quality" / "chosen"
    if not (out / "store.sqlite").exists():
        if (drawn / "store.sqlite").exists():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(drawn / "store.sqlite", out / "store.sqlite")
        else:
            cmd = [ponder, "sweep", *sweeps(model, limit, 1)["chosen"], "--out", str(out)]
            print("$", " ".join(cmd), flush=True)
            subprocess.run([*cmd, "--concurrency", "6"], check=True)
    cmd = [ponder, "sweep", "--resume", str(out), "--limit", str(limit), "--concurrency", "6"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def ood_sweep(out: Path, model: str, limit: int) -> None:
    ponder = str(Path(sys.executable).with_name("ponder"))
    cmd = [ponder, "sweep", "--resume", str(out)] if (out / "store.sqlite").exists() else [
        ponder, "sweep", "--task", "reasoning_gym:leg_counting", "--model", model, "--strategies",
        "self_consistency,program_aided", "--budgets", "1,2,4", "--limit", str(limit), "--seed", "0", "--out",
        str(out)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def rescoring_cost(run: Path, problems: int = 1) -> dict[str, Any]:
    """Seconds per sample of teacher-forced re-scoring, without and with the hidden state, on a copy of `run`
    cut to its first `problems` problems (the benchmark's stores stay as they were sampled)."""
    from ponder.experiments.featurize import featurize

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy)
        with Store.open(copy) as store:
            keep = store.problem_ids()[:problems]
            marks = ",".join("?" * len(keep))
            with store._conn:
                store._conn.execute(f"DELETE FROM samples WHERE problem_id NOT IN ({marks})", keep)
                store._conn.execute("DELETE FROM features")
        for hidden in (False, True):
            report = featurize(copy, hidden=hidden)
            out["with_hidden" if hidden else "logprobs_only"] = {
                "samples": report.samples, "tokens": report.tokens, "seconds": report.seconds,
                "seconds_per_sample": report.seconds / max(1, report.samples)}
    return out


def sampling_seconds_per_sample(run: Path) -> float:
    with Store.open(run) as store:
        return store.wall_seconds() / max(1, len(store.samples()))


def analyse(runs: Path, ood: Path | None, measure_rescoring: bool) -> dict[str, Any]:
    chosen = runs / "chosen"
    if not (chosen / "store.sqlite").exists():
        raise SystemExit(f"no {chosen}: run this benchmark without --analyse-only first (it draws the pools)")
    start = time.monotonic()
    training = train([chosen], "all", folds=5, seed=0, complete_only=True)
    curves = {c.k: c.summary() for c in evaluate(training, KS)}
    fit_seconds = time.monotonic() - start
    pool_only = train([chosen], "pool", folds=5, seed=0, complete_only=True)
    pool_curve = evaluate(pool_only, [8])[0].summary()
    card = training.scorer.card
    at8 = curves[8]
    result: dict[str, Any] = {
        "benchmark": "verifier", "task": "gsm8k", "model": card.model_name, "model_sha256": card.model_sha256,
        "n_problems": at8["n_problems"],
        "maj_at_8": at8["majority"], "pass_at_8": at8["pass_at_k"],
        "learned_best_of_n_at_8": at8["learned_weighted"],
        "gap_closed": at8["gap_closed"],
        "gain_over_majority": at8["gain_over_majority"],
        "gain_over_majority_ci_low": at8["gain_over_majority_ci"][0],
        "gain_over_majority_ci_high": at8["gain_over_majority_ci"][1],
        "learned_max_at_8": at8["learned_max"],
        "max_gain_over_majority_ci": list(at8["max_gain_over_majority_ci"]),
        "curves": [curves[k] for k in KS],
        "scorer": {"estimator": card.estimator, "features": list(card.features), "cv_auc": card.cv_auc,
                   "cv_brier": card.cv_brier, "cv_ece": card.cv_ece, "family_auc": dict(card.extra["family_auc"]),
                   "n_samples": card.n_samples, "n_groups": card.n_groups},
        "pool_features_only": {"cv_auc": pool_only.scorer.card.cv_auc, "learned_best_of_n_at_8":
                               pool_curve["learned_weighted"], "learned_max_at_8": pool_curve["learned_max"]},
        "self_eval_best_of_n": "not in this run: the chosen sweep drew no self_eval scores",
        "cost": {"fit_and_evaluate_seconds": fit_seconds,
                 "sampling_seconds_per_sample": sampling_seconds_per_sample(chosen)},
    }
    result["cost"]["fit_share_of_sampling"] = fit_seconds / (result["cost"]["sampling_seconds_per_sample"]
                                                             * card.n_samples)
    result["step_value"] = step_value(chosen)
    if ood is not None and (ood / "store.sqlite").exists():
        result["out_of_distribution"] = out_of_distribution(training, ood)
    if measure_rescoring:
        result["cost"]["rescoring"] = rescoring_cost(chosen)
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "load_average": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d")}
    return result


def step_value(run: Path) -> dict[str, Any]:
    """The step-level value (ponder verifier train --level step) on the same pools, cross-fitted by template."""
    from ponder.experiments.step_train import train_steps

    t = train_steps([run], folds=5, seed=0)
    card = t.scorer.card
    return {"estimator": card.estimator, "n_prefixes": card.n_samples, "n_groups": card.n_groups,
            "cv_auc": card.cv_auc, "cv_ece": card.cv_ece, "auc_by_step": card.extra["auc_by_depth"],
            "within_problem_auc": t.within_problem_auc, "fit_seconds": card.fit_seconds}


def out_of_distribution(training: Any, ood: Path) -> dict[str, Any]:
    problems, infos = load_pools([ood])
    complete = [p for p in problems if len(p.candidates) >= 4 and len(p.programs) >= 4]
    k = min(len(p.candidates) for p in complete) if complete else 0
    if not complete:
        return {"n_problems": 0, "note": "the out-of-distribution sweep has no complete problem yet"}
    curve, labels, scores = score_pools(training.scorer, complete, k)
    s = curve.summary()
    return {"task": infos[0].task, "n_problems": len(complete), "k": k, "auc": auc(labels, scores),
            "majority": s["majority"], "pass_at_k": s["pass_at_k"], "learned_weighted": s["learned_weighted"],
            "learned_max": s["learned_max"], "gain_over_majority": s["gain_over_majority"],
            "gain_over_majority_ci": list(s["gain_over_majority_ci"]),
            "base_rate": sum(labels) / len(labels), "base_rate_ci": list(bootstrap_ci([float(x) for x in labels]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/verifier"))
    parser.add_argument("--limit", type=int, default=100, help="GSM8K problems in the training pools.")
    parser.add_argument("--ood", type=Path, default=Path("runs/verifier-ood"))
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--ood-limit", type=int, default=30)
    parser.add_argument("--analyse-only", action="store_true", help="Use the stores as they are; sample nothing.")
    parser.add_argument("--no-rescoring", action="store_true", help="Skip the re-scoring cost measurement and keep "
                        "the one the committed verifier.json holds (it depends on the model, not on the pools).")
    args = parser.parse_args()
    if not args.analyse_only:
        pools(args.runs, args.model, args.limit)
        ood_sweep(args.ood, args.model, args.ood_limit)
    result = analyse(args.runs, args.ood, not args.no_rescoring)
    committed = HERE / "results" / "verifier.json"
    if args.no_rescoring and committed.exists():
        kept = json.loads(committed.read_text()).get("cost", {}).get("rescoring")
        if kept:
            result["cost"]["rescoring"] = kept
    path = write_result(result, HERE / "results" / "verifier.json")
    print(verifier_table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
