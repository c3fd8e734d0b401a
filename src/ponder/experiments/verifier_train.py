"""Training a learned verifier on stores, and what it buys on their pools: `ponder verifier train`, the benchmark.

`train` reads labelled candidates (labelled.py), cross-fits them (verifier_fit.py), refits the winning family on
everything and returns the Scorer with its card. `evaluate` draws best-of-k curves from the same pools: for each
k, random k-subsets of each problem's candidates (and k of its programs, for agreement), pool features computed
on the subset, every subset scored by the fold model that never saw the problem; then majority, pass@k and the
learned selections (weighted and max, with best_of_n's own `select`) on the same subsets, with paired intervals.

It owns the assembly of rows and the curves; it ignores the file format and the estimators' insides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.errors import InvalidParameter
from ponder.experiments.estimators import bootstrap_ci
from ponder.experiments.labelled import ProblemPools, RunInfo, load_pools, subsets
from ponder.experiments.verifier_fit import CrossFit, cross_fit, fit_final
from ponder.strategies.best_of_n import select
from ponder.strategies.pooling import PoolSample, majority
from ponder.verifiers.features import HIDDEN_PREFIX, POOL_FEATURES, SAMPLE_FEATURES
from ponder.verifiers.scorer import Scorer, ScorerCard

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "all": SAMPLE_FEATURES + POOL_FEATURES,
    "pool": (*POOL_FEATURES, "log_tokens", "truncated"),
    "sample": SAMPLE_FEATURES,
}
"""--features: everything stored; what an HTTP backend can give live (no logits); the sample alone."""


def feature_names(spec: str, hidden_size: int = 0) -> tuple[str, ...]:
    """The names of a --features spec ("all", "pool", "sample"; "+hidden" adds the final hidden state)."""
    base, plus, extra = spec.partition("+")
    if base not in FEATURE_SETS or (plus and extra != "hidden"):
        raise InvalidParameter("features", spec, f"use one of {', '.join(FEATURE_SETS)}, optionally with "
                               "+hidden (e.g. all+hidden; needs `ponder verifier featurize --hidden`)")
    names = FEATURE_SETS[base]
    if extra == "hidden":
        if hidden_size <= 0:
            raise InvalidParameter("features", spec, "no sample has a stored hidden state: run `ponder verifier "
                                   "featurize RUN --hidden` first")
        names = names + tuple(f"{HIDDEN_PREFIX}{i}" for i in range(hidden_size))
    return names


@dataclass(frozen=True)
class Training:
    scorer: Scorer
    fit: CrossFit
    problems: tuple[ProblemPools, ...]
    runs: tuple[RunInfo, ...]


def train(runs: Sequence[str | Path], features: str = "all", *, folds: int = 5, seed: int = 0,
          on_fold: Callable[[int, int], None] | None = None, complete_only: bool = False) -> Training:
    """A scorer fitted on every candidate of `runs` (one model only), with its cross-validated card.
    `complete_only` keeps the problems whose candidate and program pools are both as full as their run's fullest
    (a run stopped mid-way has problems with one pool drawn, which a benchmark should not count)."""
    problems, infos = load_pools(runs)
    if complete_only:
        problems = complete(problems)
    shas = {i.model_sha256 for i in infos}
    if len(shas) > 1:
        raise InvalidParameter("runs", [i.path for i in infos], "the runs were sampled from different models: a "
                               "scorer learns one model's samples, so train one per model")
    hidden = min((sum(k.startswith(HIDDEN_PREFIX) for k in c.features.values) for p in problems
                  for c in p.candidates), default=0)
    names = feature_names(features, hidden)
    X: list[list[float]] = []
    y: list[bool] = []
    groups: list[str] = []
    for p in problems:
        rows, labels, _ = p.rows(names)
        X += rows
        y += labels
        groups += [p.group] * len(rows)
    if len(set(groups)) < folds:
        raise InvalidParameter("folds", folds, f"only {len(set(groups))} problem groups: use fewer folds or more "
                               "problems")
    fit = cross_fit(X, y, groups, folds=folds, seed=seed, on_fold=on_fold)
    start = time.monotonic()
    final = fit_final(fit.chosen, X, y, seed)
    card = ScorerCard(features=names, model_name=infos[0].model_name, model_sha256=infos[0].model_sha256,
                      estimator=fit.chosen, training_runs=tuple(vars(i) for i in infos), cv_auc=fit.auc,
                      cv_brier=fit.brier, cv_ece=fit.ece, n_samples=len(y), n_groups=len(set(groups)),
                      fit_seconds=fit.seconds + time.monotonic() - start,
                      extra={"family_auc": dict(fit.family_auc), "folds": folds, "seed": seed})
    return Training(Scorer(card, final), fit, tuple(problems), tuple(infos))


def complete(problems: Sequence[ProblemPools]) -> list[ProblemPools]:
    full: dict[str, tuple[int, int]] = {}
    for p in problems:
        n, m = full.get(p.run, (0, 0))
        full[p.run] = (max(n, len(p.candidates)), max(m, len(p.programs)))
    return [p for p in problems if (len(p.candidates), len(p.programs)) == full[p.run]]


@dataclass(frozen=True)
class BestOfCurve:
    """Accuracy at each k, averaged over problems (each problem's mean over its k-subsets)."""

    k: int
    majority: tuple[float, ...]
    pass_at_k: tuple[float, ...]
    learned_weighted: tuple[float, ...]
    learned_max: tuple[float, ...]

    def summary(self, seed: int = 0) -> dict[str, Any]:
        def mean(xs: Sequence[float]) -> float:
            return sum(xs) / len(xs) if xs else math.nan

        gain = [a - b for a, b in zip(self.learned_weighted, self.majority, strict=True)]
        gain_max = [a - b for a, b in zip(self.learned_max, self.majority, strict=True)]
        maj, top, learned = mean(self.majority), mean(self.pass_at_k), mean(self.learned_weighted)
        return {
            "k": self.k, "n_problems": len(self.majority), "majority": maj, "pass_at_k": top,
            "learned_weighted": learned, "learned_max": mean(self.learned_max),
            "majority_ci": bootstrap_ci(self.majority, seed), "learned_weighted_ci": bootstrap_ci(self.learned_weighted,
                                                                                                seed),
            "gain_over_majority": mean(gain), "gain_over_majority_ci": bootstrap_ci(gain, seed),
            "max_gain_over_majority": mean(gain_max), "max_gain_over_majority_ci": bootstrap_ci(gain_max, seed),
            "gap_closed": (learned - maj) / (top - maj) if top > maj else math.nan,
        }


def evaluate(training: Training, ks: Sequence[int], *, draws: int = 24, seed: int = 0) -> list[BestOfCurve]:
    """Best-of-k curves on the training pools, every score cross-fitted (see the module docstring)."""
    return curves(training.problems, training.scorer.card.features, training.fit.model_for, ks, draws=draws,
                  seed=seed)


def curves(problems: Sequence[ProblemPools], names: Sequence[str], model_for: Callable[[str], Any],
           ks: Sequence[int], *, draws: int = 24, seed: int = 0) -> list[BestOfCurve]:
    """Best-of-k curves over `problems`, each problem's subsets scored by `model_for(its group)`."""
    out = []
    for k in ks:
        cols: dict[str, list[float]] = {"maj": [], "pass": [], "w": [], "max": []}
        for p in problems:
            n, m = len(p.candidates), len(p.programs)
            if k > n:
                raise InvalidParameter("k", k, f"{p.problem_id} has a pool of {n}: use k <= {n}")
            model = model_for(p.group)
            hits = {key: 0.0 for key in cols}
            picks = subsets(n, k, draws, seed + k)
            for j, idx in enumerate(picks):
                progs = subsets(m, min(k, m), 1, seed + 7919 * (j + 1))[0] if m else []
                rows, labels, answers = p.rows(names, idx, progs)
                right = {a: ok for a, ok in zip(answers, labels, strict=True) if a is not None}
                probs = [float(x) for x in model.predict_proba(_array(rows))[:, 1]]
                voted = majority([PoolSample(p.candidates[i].answer, p.candidates[i].mean_logprob) for i in idx])
                hits["maj"] += right.get(voted, False) if voted is not None else False
                hits["pass"] += any(labels)
                hits["w"] += right.get(select(answers, probs, "weighted")[0], False)
                hits["max"] += right.get(select(answers, probs, "max")[0], False)
            for key in cols:
                cols[key].append(hits[key] / len(picks))
        out.append(BestOfCurve(k, tuple(cols["maj"]), tuple(cols["pass"]), tuple(cols["w"]), tuple(cols["max"])))
    return out


def score_pools(scorer: Scorer, problems: Sequence[ProblemPools], k: int, *, draws: int = 24,
                seed: int = 0) -> tuple[BestOfCurve, list[bool], list[float]]:
    """A trained scorer on pools it never saw (another task): its curve at k, and every candidate's label and
    score on the full pools (for the AUC there)."""
    labels_all: list[bool] = []
    scores_all: list[float] = []
    for p in problems:
        rows, labels, _ = p.rows(scorer.card.features)
        labels_all += labels
        scores_all += scorer.predict(rows)
    curve = curves(problems, scorer.card.features, lambda group: scorer.estimator, [k], draws=draws, seed=seed)[0]
    return curve, labels_all, scores_all


def _array(rows: Sequence[Sequence[float]]) -> Any:
    import numpy as np

    return np.asarray(rows, dtype=float)
