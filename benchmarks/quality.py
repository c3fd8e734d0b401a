"""Quality benchmark: what the extra compute buys on GSM8K with the default model; writes
benchmarks/results/quality.json (the README's figures come from it, and a test checks that they match).

    .venv/bin/python benchmarks/quality.py [--model qwen2.5-coder-1.5b] [--limit 50] [--pure-limit 30]
                                           [--runs runs/quality] [--analyse-only]

Two sweeps, each resumable (run the command again after an interruption):
  chosen  the first --limit GSM8K test problems: greedy chain of thought, and pools of 8 chains of thought and 8
          programs with the model's recommended sampler (Qwen2.5: T 0.7, top_p 0.8, top_k 20, repetition 1.05).
          Every pooled strategy (majority, program-aided, hybrid CoT + program voting, adaptive consistency,
          pass@k) is derived from those pools.
  pure    the first --pure-limit of the same problems: 4 chains of thought with the pure-temperature sampler the
          pools used before (T 0.8, the whole vocabulary, no penalty), to show what the sampler choice does.
Figures: every deployable strategy's accuracy and its gain over greedy with a paired bootstrap interval over
problems; the best within 8x greedy's generated tokens; single-sample accuracy, maj@k and pass@k for both
samplers on the same problems; the cross-validated compute-optimal policy against the best fixed strategy.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from figures import quality_table  # benchmarks/figures.py: the README's blocks
from ponder.benchmarking import write_result
from ponder.experiments.gains import best, gains_over, paired_gain
from ponder.experiments.store import Store
from ponder.experiments.summary import Analysis, analyze, headline

HERE = Path(__file__).parent
ROOT = HERE.parent
MAX_TOKENS_RATIO = 8.0
"""The best strategy is sought within this many times greedy's generated tokens (the issue's cap)."""
PURE_SAMPLER = ["--temperature", "0.8", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--repetition-penalty", "1"]


def sweeps(model: str, limit: int, pure_limit: int) -> dict[str, list[str]]:
    common = ["--task", "gsm8k", "--model", model, "--seed", "0", "--max-tokens", "512"]
    return {
        "chosen": [*common, "--strategies", "cot,self_consistency,program_aided", "--budgets", "1,2,4,8",
                   "--limit", str(limit)],
        "pure": [*common, "--strategies", "self_consistency", "--budgets", "1,2,4", "--limit", str(pure_limit),
                 *PURE_SAMPLER],
    }


def generate(runs: Path, model: str, limit: int, pure_limit: int, concurrency: int) -> None:
    """Run (or resume) each sweep with `ponder sweep`, which shows its own progress."""
    ponder = str(Path(sys.executable).with_name("ponder"))
    for name, args in sweeps(model, limit, pure_limit).items():
        out = runs / name
        cmd = [ponder, "sweep", "--resume", str(out)] if (out / "store.sqlite").exists() else \
            [ponder, "sweep", *args, "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run([*cmd, "--concurrency", str(concurrency)], check=True)


def load(run: Path) -> tuple[Analysis, dict[str, Any]]:
    with Store.open(run) as store:
        tokens = sum(u.completion_tokens for r in [*store.samples(), *store.results()]
                     for u in r.usage_by_role.values())
        config = {**store.config, "machine_seconds": store.wall_seconds(), "generated_tokens": tokens}
        return analyze(store.problems(), store.samples(), store.results(), config), config


def _acc(a: Analysis, strategy: str, k: int, mask: np.ndarray | None = None) -> float | None:
    o = a.outcome(strategy, k)
    return None if o is None else o.accuracy(mask)


def sampler_comparison(chosen: Analysis, pure: Analysis, chosen_cfg: dict, pure_cfg: dict) -> dict[str, Any]:
    """Single-sample accuracy, maj@k and pass@k of both samplers on the problems both runs have pools for."""
    held = pure.outcome("self_consistency", 1)
    done = [pid for pid, c in zip(pure.pids, held.correct, strict=True) if np.isfinite(c)] if held else []
    mask = np.isin(np.array(chosen.pids), np.array(done))
    out: dict[str, Any] = {"n_problems": int(mask.sum()), "chosen_sampler": chosen_cfg.get("sampling"),
                           "pure_sampler": pure_cfg.get("sampling")}
    pure_mask = np.isin(np.array(pure.pids), np.array(done))
    for name, a, m in (("chosen", chosen, mask), ("pure", pure, pure_mask)):
        out[name] = {f"{metric}_at_{k}": _acc(a, strategy, k, m) for metric, strategy in
                     (("maj", "self_consistency"), ("pass", "pass_at_k")) for k in (1, 2, 4)}
    c1, p1 = chosen.outcome("self_consistency", 1), pure.outcome("self_consistency", 1)
    if c1 is not None and p1 is not None:
        g = paired_gain(c1.on(mask), p1.on(pure_mask))
        out["single_sample_gain_of_chosen"] = {"gain": g.gain, "ci": list(g.gain_ci)}
    return out


def analyse(runs: Path) -> dict[str, Any]:
    chosen, chosen_cfg = load(runs / "chosen")
    greedy = chosen.outcome("cot", 1)
    if greedy is None:
        raise SystemExit("the chosen run has no greedy chain of thought yet: run without --analyse-only")
    candidates = gains_over(greedy, chosen.outcomes, "tokens", MAX_TOKENS_RATIO)
    top = best(candidates)
    summary = headline(chosen)
    result: dict[str, Any] = {
        "benchmark": "quality", "task": "gsm8k", "model": chosen_cfg.get("model_name"),
        "model_sha256": chosen_cfg.get("model_sha256"), "sampling": chosen_cfg.get("sampling"),
        "n_problems": int(np.isfinite(greedy.correct).sum()),
        "greedy_accuracy": greedy.accuracy(),
        "greedy_tokens_per_problem": greedy.mean_cost("tokens"),
        "best_strategy": top.label if top else None,
        "gain_over_greedy": top.gain if top else None,
        "gain_over_greedy_ci_low": top.gain_ci[0] if top else None,
        "gain_over_greedy_ci_high": top.gain_ci[1] if top else None,
        "best_accuracy": top.accuracy if top else None,
        "tokens_ratio_vs_greedy": top.cost_ratio if top else None,
        "tokens_per_problem": top.cost if top else None,
        "selection": f"the largest point gain among {len(candidates)} deployable (strategy, budget) pairs within "
                     f"{MAX_TOKENS_RATIO:g}x greedy's generated tokens, on the same problems; every candidate is "
                     "listed in `candidates`",
        "candidates": [g.to_dict() for g in candidates],
        "pass_at_k": summary.get("pass_at_k"),
        "maj_at_k": summary.get("maj_at_k"),
        "compute_optimal_vs_best_fixed": summary.get("compute_optimal_vs_best_fixed"),
        "compute_optimal_vs_majority": summary.get("compute_optimal_vs_majority"),
        "truncation_share": summary.get("truncation_share"),
        "machine_seconds": chosen_cfg.get("machine_seconds"),
        "generated_tokens": chosen_cfg.get("generated_tokens"),
        "generated_tokens_per_second": chosen_cfg["generated_tokens"] / chosen_cfg["machine_seconds"]
        if chosen_cfg.get("machine_seconds") else None,
    }
    if (runs / "pure" / "store.sqlite").exists():
        pure, pure_cfg = load(runs / "pure")
        result["sampler_comparison"] = sampler_comparison(chosen, pure, chosen_cfg, pure_cfg)
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "load_average": list(os.getloadavg()), "date": time.strftime("%Y-%m-%d")}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--pure-limit", type=int, default=30)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "quality"))
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--analyse-only", action="store_true", help="Analyse the stored runs without sampling.")
    ap.add_argument("--out", default=str(HERE / "results" / "quality.json"))
    args = ap.parse_args()
    runs = Path(args.runs)
    if not args.analyse_only:
        generate(runs, args.model, args.limit, args.pure_limit, args.concurrency)
    result = analyse(runs)
    write_result(result, args.out)
    print(quality_table(result))


if __name__ == "__main__":
    main()
