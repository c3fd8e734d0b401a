"""Synthetic sweep rows (no model, no store) for the curves and report tests."""

from __future__ import annotations

import numpy as np

from ponder.experiments.records import ProblemRow, ResultRow, SampleRow
from ponder.types import Usage

CONFIG = {
    "model": "synthetic-0.5b",
    "model_info": {"name": "synthetic-0.5b", "n_params": 500_000_000, "sha256": "ab" * 32},
    "budgets": [1, 2, 4, 8],
    "seed": 0,
    "sampling": {"temperature": 0.8, "top_p": 1.0, "max_tokens": 256},
    "hardware_usd_per_hour": 0.085,
}


def stop_after_two_agree(k, answers):
    """A stand-in adaptive rule: stop once two samples agree (or at k)."""
    seen = set()
    for i, a in enumerate(answers[:k]):
        if a is not None and a in seen:
            return i + 1
        seen.add(a)
    return k


def make_rows(n_problems: int = 20, n_samples: int = 8, seed: int = 0):
    """Problems of graded difficulty; a cot pool with verifier scores; greedy cot and beam_search results."""
    rng = np.random.default_rng(seed)
    problems, samples, results = [], [], []
    for p in range(n_problems):
        pid = f"p{p:02d}"
        right = str(p + 100)
        p_right = 0.1 + 0.8 * p / max(1, n_problems - 1)
        problems.append(ProblemRow(pid, f"question {p}", right))
        for i in range(n_samples):
            ok = rng.random() < p_right
            answer = right if ok else rng.choice(["1", "2", None])
            tokens = int(rng.integers(50, 150))
            samples.append(SampleRow(
                pid, "cot", i, 1000 * p + i, f"... {answer}", answer, ok,
                float(np.clip(0.6 * ok + 0.4 * rng.random(), 0, 1)),
                "length" if tokens > 140 else "stop",
                {"policy": Usage(prompt_tokens=40, completion_tokens=tokens, calls=1, seconds=tokens / 40),
                 "verifier": Usage(prompt_tokens=tokens + 40, completion_tokens=2, calls=1, seconds=0.1)},
                tokens / 40 + 0.1))
        greedy_ok = bool(rng.random() < p_right)
        results.append(ResultRow(pid, "cot", 1, right if greedy_ok else "1", greedy_ok, "stop", False,
                                 {"policy": Usage(40, 90, 0, 0, 1, 2.25)}, 2.25))
        for budget in (2, 4):
            ok = bool(rng.random() < min(1.0, p_right + 0.1 * budget))
            results.append(ResultRow(pid, "beam_search", budget, right if ok else "2", ok, "stop", False,
                                     {"policy": Usage(40 * budget, 100 * budget, 0, 0, budget, 2.5 * budget)},
                                     2.5 * budget))
    return problems, samples, results
