"""Open-task benchmark: does thinking pay on prompts with no checker? Writes benchmarks/results/open.json and
commits the run's report summary as benchmarks/results/open/summary.json (the README's figures come from them).

    .venv/bin/python benchmarks/open.py [--out runs/open] [--limit 32] [--model qwen2.5-coder-1.5b]
                                        [--strategies cot,budget_forcing,tournament] [--budgets 1,2,4]
                                        [--kill-after 3] [--analyse-only]

One `ponder sweep --task open` on ponder's built-in open prompts (essays, explanations, advice, open questions),
judged by the same model against its own greedy answer, in both orders (experiments/judged.py). Budget forcing
thinks 128 x budget tokens; a tournament samples `budget` responses and knocks them out with the judge. The
sweep is killed with SIGKILL once `--kill-after` results are stored and then resumed (`ponder sweep --resume`),
to show that a killed open sweep loses nothing; the benchmark records the row counts before and after (a run
grown later with a larger --limit keeps that record). Intervals
are bootstrap 95% over prompts. The judge's own position bias (its preference for whichever answer is shown
first) and its agreement with itself across the two orders are reported, since they bound what a win-rate means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ponder.benchmarking import write_result
from ponder.experiments.judging import visible
from ponder.experiments.store import Store

HERE = Path(__file__).parent


def _ponder() -> str:
    return str(Path(sys.executable).with_name("ponder"))


def _rows(out: Path) -> tuple[int, int]:
    """(results, judgments) stored so far (0, 0 before the store exists)."""
    if not (out / "store.sqlite").exists():
        return 0, 0
    with Store.open(out) as store:
        return len(store.results()), len(store.judgments())


def sweep(out: Path, model: str, strategies: str, budgets: str, limit: int, max_tokens: int,
          kill_after: int) -> dict[str, Any]:
    """Run the sweep, SIGKILL it once `kill_after` results are stored, resume it; the counts on each side."""
    killed: dict[str, Any] = {}
    new = [_ponder(), "sweep", "--task", "open", "--model", model, "--strategies", strategies, "--budgets", budgets,
           "--limit", str(limit), "--max-tokens", str(max_tokens), "--seed", "0", "--out", str(out)]
    if not (out / "store.sqlite").exists() and kill_after > 0:
        print("$", " ".join(new), flush=True)
        proc = subprocess.Popen(new, start_new_session=True)
        while proc.poll() is None and _rows(out)[0] < kill_after:
            time.sleep(5)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            results, judgments = _rows(out)
            killed = {"killed_with": "SIGKILL", "results_at_kill": results, "judgments_at_kill": judgments}
            print("killed:", killed, flush=True)
    resumed = (out / "store.sqlite").exists()
    cmd = [_ponder(), "sweep", "--resume", str(out), "--limit", str(limit)] if resumed else new
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    if killed:
        killed["results_after_resume"], killed["judgments_after_resume"] = _rows(out)
    return killed


def analyse(out: Path, resumed: dict[str, Any]) -> dict[str, Any]:
    subprocess.run([_ponder(), "report", str(out)], check=True)
    summary = json.loads((out / "report" / "summary.json").read_text())
    committed = HERE / "results" / "open"
    committed.mkdir(parents=True, exist_ok=True)
    shutil.copy2(out / "report" / "summary.json", committed / "summary.json")
    with Store.open(out) as store:
        config, wall = store.config, store.wall_seconds()
        words: dict[tuple[str, int], list[int]] = {}
        for r in store.results():  # what the judge read: the answer after any thinking
            words.setdefault((r.strategy, r.budget), []).append(len(visible(r.text, r.answer).split()))
    keep = ("strategy", "budget", "tokens", "flops", "seconds", "usd", "win_rate", "ci_low", "ci_high", "preference",
            "preference_ci_low", "preference_ci_high", "n_prompts")
    return {
        "benchmark": "open",
        "command": "benchmarks/open.py " + " ".join(sys.argv[1:]),
        "task": "open (ponder's built-in prompts)",
        "model": config.get("model_name"),
        "model_sha256": config.get("model_sha256"),
        "judge": summary["judge"],
        "baseline": f"{summary['baseline']} (greedy, temperature 0)",
        "n_prompts": summary["n_prompts"],
        "max_tokens": config.get("max_tokens"),
        "measure": summary["measure"],
        "curves": [{**{k: row[k] for k in keep},
                    "answer_words_median": statistics.median(words[(row["strategy"], row["budget"])])}
                   for row in summary["curves"]],
        "best": summary["best"],
        "position_bias": summary["position_bias"],
        "position_bias_in_probability": summary["position_bias_in_probability"],
        "self_agreement": summary["self_agreement"],
        "n_verdicts": summary["n_verdicts"],
        "judge_usage": summary["judge_usage"],
        "sweep_wall_seconds": wall,
        "resumed_after_kill": resumed or None,
        "summary": "benchmarks/results/open/summary.json",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_after": os.getloadavg()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/open"))
    ap.add_argument("--limit", type=int, default=32, help="Prompts (the first ones; a larger limit grows the run)")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--strategies", default="cot,budget_forcing,tournament")
    ap.add_argument("--budgets", default="1,2,4")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--kill-after", type=int, default=3, help="SIGKILL the sweep once this many results are stored, "
                    "then resume it (0: never)")
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args()
    previous = HERE / "results" / "open.json"
    resumed: dict[str, Any] = {}
    if previous.exists():  # a run grown or re-analysed keeps the record of the kill it survived
        resumed = json.loads(previous.read_text()).get("resumed_after_kill") or {}
    if not args.analyse_only:
        resumed = sweep(args.out, args.model, args.strategies, args.budgets, args.limit, args.max_tokens,
                        args.kill_after) or resumed
    result = analyse(args.out, resumed)
    path = write_result(result, previous)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
