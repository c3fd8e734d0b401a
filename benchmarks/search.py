"""Step-level search with a learned step value: what beam search and particle filtering buy over best-of-N at
equal tokens; writes benchmarks/results/search.json.

    .venv/bin/python benchmarks/search.py [--pools runs/quality/chosen] [--limit 30] [--budget 4]
                                          [--out runs/search] [--analyse-only]

The step value is trained on the pools of benchmarks/quality.py's `chosen` run (the first 50 GSM8K test problems,
8 chains of thought each, default model), cross-fitted in 5 folds by GSM template: each searched problem is
scored by the fold model that never saw it (or its template). Its AUC is reported over all prefixes and within a
problem (prefixes of one problem at one step, the ranking a search needs).

Searched, on the first --limit of those problems, at --budget candidates per step:
  beam_search                 step_value, search-and-learn's N = budget (budget / 2 beams, 2 expansions each)
  particle_filtering          step_value, budget particles
  particle_filtering_uniform  with --control: a constant verifier (uniform resampling: the same steps, no
                              guidance), what the value adds to particle filtering
Best-of-N at the same budget comes from the pools of the same problems (majority, and the learned outcome scorer's
weighted vote, cross-fitted as benchmarks/verifier.py does), with their generated tokens. Every arm is paired by
problem with best-of-N's weighted vote. Each finished problem is appended to --out/rows.jsonl (a stopped run
resumes); the problems every arm has finished are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ponder.benchmarking import write_result
from ponder.experiments.estimators import bootstrap_ci

HERE = Path(__file__).parent
ARMS = ("beam_search", "particle_filtering")
CONTROL = "particle_filtering_uniform"


class Constant:
    """A verifier with no opinion: every candidate 0.5 (uniform resampling, first-found beams)."""

    async def score(self, problem: Any, candidates: Any) -> list[Any]:
        from ponder.types import Score

        return [Score(0.5) for _ in candidates]


def strategy(arm: str, budget: int, verifier: Any) -> Any:
    from ponder.strategies.build import build_strategy

    name = "beam_search" if arm == "beam_search" else "particle_filtering"
    return build_strategy(name, {"verifier": verifier, "seed": 0}).at_budget(budget)


async def search(pools: Path, out: Path, limit: int, budget: int, model: str, arms: tuple[str, ...]) -> None:
    from ponder.backends.factory import open_backend
    from ponder.experiments.step_train import train_steps
    from ponder.ledger import Ledger
    from ponder.tasks import load_task
    from ponder.verifiers.step_value import StepValueVerifier

    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.jsonl"
    done = {(r["problem_id"], r["arm"]) for r in _rows(rows_file)}
    training = train_steps([pools])
    groups = dict(zip(training.rows.problem_ids, training.rows.groups, strict=True))
    problems = [p for p in load_task("gsm8k").problems(limit)]
    backend = open_backend(model)
    try:
        with rows_file.open("a") as sink:
            for i, problem in enumerate(problems):
                value = StepValueVerifier(scorer=training.fold_scorer(groups[problem.id]))
                for arm in arms:
                    if (problem.id, arm) in done:
                        continue
                    s = strategy(arm, budget, Constant() if arm.endswith("uniform") else value)
                    ledger, start = Ledger(), time.monotonic()
                    result = await s.solve(problem, backend, ledger)
                    usage = ledger.usage_by_role.get("policy")
                    row = {"problem_id": problem.id, "arm": arm, "budget": budget, "answer": result.answer,
                           "correct": bool(problem.checker(result.answer)) if result.answer is not None else False,
                           "completion_tokens": usage.completion_tokens if usage else 0,
                           "prompt_tokens": usage.prompt_tokens if usage else 0,
                           "cached_tokens": usage.cached_tokens if usage else 0,
                           "candidates": len(result.candidates), "seconds": time.monotonic() - start}
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    print(f"[{i + 1}/{len(problems)}] {arm}: {'right' if row['correct'] else 'wrong'} "
                          f"({row['completion_tokens']} tokens, {row['seconds']:.0f} s)", flush=True)
    finally:
        backend.close()


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the line a kill cut short
            continue
    return out


def best_of_n(pools: Path, ids: list[str], budget: int) -> dict[str, dict[str, Any]]:
    """maj@budget and the learned outcome scorer's weighted@budget on the pools of `ids` (cross-fitted), with the
    mean generated tokens of `budget` chain-of-thought samples."""
    from ponder.experiments.verifier_train import curves, train

    training = train([pools], "all")
    problems = [p for p in training.problems if p.problem_id in set(ids)]
    problems.sort(key=lambda p: ids.index(p.problem_id))
    (curve,) = curves(problems, training.scorer.card.features, training.fit.model_for, [budget])
    tokens = [sum(c.completion_tokens for c in p.candidates) * budget / len(p.candidates) for p in problems]
    return {"majority": {"per_problem": list(curve.majority), "tokens": tokens},
            "learned_weighted": {"per_problem": list(curve.learned_weighted), "tokens": tokens},
            "pass_at_k": {"per_problem": list(curve.pass_at_k), "tokens": tokens}}


def analyse(pools: Path, out: Path, budget: int) -> dict[str, Any]:
    from ponder.experiments.step_train import train_steps, within_problem_auc

    training = train_steps([pools])
    within, pairs = within_problem_auc(training.rows, training.fit.scores)
    rows = _rows(out / "rows.jsonl")
    by_arm: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_arm[row["arm"]][row["problem_id"]] = row
    ran = [a for a in (*ARMS, CONTROL) if a in by_arm]
    ids = [pid for pid in by_arm.get(ARMS[0], {}) if all(pid in by_arm[a] for a in ran)]
    arms: dict[str, Any] = {}
    if ids:
        pooled = best_of_n(pools, ids, budget)
        reference = pooled["learned_weighted"]["per_problem"]
        for name, got in pooled.items():
            arms[f"best_of_n_{name}"] = _arm(got["per_problem"], got["tokens"], reference)
        for arm in ran:
            acc = [float(by_arm[arm][pid]["correct"]) for pid in ids]
            arms[arm] = _arm(acc, [by_arm[arm][pid]["completion_tokens"] for pid in ids], reference)
            for key in ("prompt_tokens", "cached_tokens", "seconds"):
                arms[arm][f"{key}_mean"] = _mean([by_arm[arm][pid][key] for pid in ids])
    card = training.scorer.card
    return {
        "benchmark": "search", "task": "gsm8k", "model": card.model_name, "model_sha256": card.model_sha256,
        "budget": budget, "n_problems": len(ids),
        "step_value": {"estimator": card.estimator, "n_prefixes": card.n_samples, "n_groups": card.n_groups,
                       "cv_auc": card.cv_auc, "cv_ece": card.cv_ece, "auc_by_step": card.extra["auc_by_depth"],
                       "within_problem_auc": within, "within_problem_pairs": pairs,
                       "fit_seconds": card.fit_seconds},
        "arms": arms,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()},
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _arm(acc: list[float], tokens: list[float], reference: list[float]) -> dict[str, Any]:
    """Accuracy, tokens, and the paired gain over `reference` (best-of-N's learned weighted vote)."""
    gain = [a - c for a, c in zip(acc, reference, strict=True)]
    return {"accuracy": _mean(acc), "accuracy_ci": bootstrap_ci(acc, 0), "tokens_mean": _mean(tokens),
            "gain_over_best_of_n": _mean(gain), "gain_over_best_of_n_ci": bootstrap_ci(gain, 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", type=Path, default=Path("runs/quality/chosen"))
    ap.add_argument("--out", type=Path, default=Path("runs/search"))
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--control", action="store_true", help="Also run particle filtering with uniform weights.")
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()
    if not (args.pools / "store.sqlite").exists():
        sys.exit(f"no pools at {args.pools}: run benchmarks/quality.py first")
    if not args.analyse_only:
        arms = (*ARMS, CONTROL) if args.control else ARMS
        asyncio.run(search(args.pools, args.out, args.limit, args.budget, args.model, arms))
    result = analyse(args.pools, args.out, args.budget)
    path = write_result(result, HERE / "results" / "search.json")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
