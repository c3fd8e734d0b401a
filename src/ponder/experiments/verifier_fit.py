"""Fitting a learned verifier without leakage: grouped folds, nested model choice, cross-fitted scores.

- **Folds by group.** A group is a problem, or the template it came from (labelled.py); no group is ever on both
  sides of a split.
- **Cross-fitting.** Each candidate's score comes from a scorer fitted on the other folds only, so curves drawn
  from these scores never saw the problem they score.
- **Nested model choice.** Inside each outer training part, the family (logistic regression or gradient
  boosting) is chosen by an inner grouped cross-validation; the file's final scorer is the family that wins on
  all the data, refitted on all of it.

This module owns the splits, the estimators and the metrics (AUC, Brier score, expected calibration error); it
ignores where rows come from (labelled.py) and the file format (verifiers/scorer.py).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.extras import require

FAMILIES = ("logistic", "boosting")


def _estimator(family: str, seed: int) -> Any:
    require("sklearn", "learn")
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # NaN (a feature not measured) -> the median, plus an indicator that it was missing; a column never measured
    # stays (as 0) so that the scorer's inputs keep their names and order
    impute = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    if family == "logistic":
        return make_pipeline(impute, StandardScaler(), LogisticRegression(C=0.5, max_iter=5000))
    if family == "boosting":  # shallow trees, shrinkage, subsampling: a few hundred samples; one thread, no OpenMP
        return make_pipeline(impute, GradientBoostingClassifier(n_estimators=100, max_depth=2, learning_rate=0.05,
                                                                subsample=0.8, min_samples_leaf=10,
                                                                random_state=seed))
    raise ValueError(f"unknown estimator family {family!r}: use one of {', '.join(FAMILIES)}")


def group_folds(groups: Sequence[str], k: int, seed: int) -> list[list[int]]:
    """Row indices of `k` folds; every row of a group lands in the same fold (groups shuffled with `seed`)."""
    names = sorted(set(groups))
    random.Random(seed).shuffle(names)
    fold_of = {g: i % k for i, g in enumerate(names)}
    folds: list[list[int]] = [[] for _ in range(min(k, len(names)))]
    for row, g in enumerate(groups):
        folds[fold_of[g]].append(row)
    return folds


def auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return math.nan
    ranked = sorted((s, i) for i, s in enumerate([*pos, *neg]))
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for m in range(i, j + 1):
            ranks[ranked[m][1]] = (i + j) / 2 + 1
        i = j + 1
    rank_pos = sum(ranks[: len(pos)])
    return (rank_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def brier(labels: Sequence[bool], probs: Sequence[float]) -> float:
    return sum((p - float(y)) ** 2 for y, p in zip(labels, probs, strict=True)) / max(1, len(labels))


def ece(labels: Sequence[bool], probs: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error: |mean label - mean prob| per equal-width bin, weighted by the bin's share."""
    total, n = 0.0, len(labels)
    for b in range(bins):
        inside = [(y, p) for y, p in zip(labels, probs, strict=True)
                  if b / bins <= p < (b + 1) / bins or (b == bins - 1 and p == 1.0)]
        if inside:
            total += len(inside) / n * abs(sum(float(y) for y, _ in inside) / len(inside)
                                           - sum(p for _, p in inside) / len(inside))
    return total


@dataclass(frozen=True)
class CrossFit:
    """Cross-fitted probabilities of every row, and how the families did."""

    scores: tuple[float, ...]
    chosen: str
    """The family that won the cross-validation on all the data (the one the scorer file holds)."""
    family_auc: Mapping[str, float]
    auc: float
    brier: float
    ece: float
    seconds: float
    fold_models: tuple[Any, ...] = ()
    """The estimator fitted without fold i (None where a fold's training part had one class only)."""
    fold_of_group: Mapping[str, int] = field(default_factory=dict)
    """Which fold held each group out: a row of group g is scored by fold_models[fold_of_group[g]]."""

    def model_for(self, group: str) -> Any:
        """The estimator that never saw `group` (to score new pools of a problem of the training data)."""
        return self.fold_models[self.fold_of_group[group]]


class _BaseRate:
    """What a training part with one class only can predict: that class's rate."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def predict_proba(self, X: Any) -> Any:
        import numpy as np

        return np.column_stack([np.full(len(X), 1 - self.rate), np.full(len(X), self.rate)])


def _fit(family: str, X: Any, y: Any, train: Sequence[int], seed: int) -> Any:
    rows = list(train)
    if len(set(y[rows].tolist())) < 2:
        return _BaseRate(float(y[rows].mean()))
    return _estimator(family, seed).fit(X[rows], y[rows])


def _fit_predict(family: str, X: Any, y: Any, train: Sequence[int], test: Sequence[int], seed: int) -> list[float]:
    return [float(p) for p in _fit(family, X, y, train, seed).predict_proba(X[list(test)])[:, 1]]


def _cv_auc(family: str, X: Any, y: Any, groups: Sequence[str], rows: Sequence[int], k: int, seed: int) -> float:
    sub_groups = [groups[r] for r in rows]
    preds: dict[int, float] = {}
    for fold in group_folds(sub_groups, k, seed):
        test = [rows[i] for i in fold]
        held = set(test)
        train = [r for r in rows if r not in held]
        preds.update(zip(test, _fit_predict(family, X, y, train, test, seed), strict=True))
    return auc([bool(y[r]) for r in rows], [preds[r] for r in rows])


def cross_fit(X_rows: Sequence[Sequence[float]], labels: Sequence[bool], groups: Sequence[str], *, folds: int = 5,
              seed: int = 0, families: Sequence[str] = FAMILIES,
              on_fold: Callable[[int, int], None] | None = None) -> CrossFit:
    """Cross-fitted scores with a nested choice of family per outer fold (see the module docstring)."""
    np = require("numpy", "learn")
    start = time.monotonic()
    X, y = np.asarray(X_rows, dtype=float), np.asarray(labels, dtype=int)
    outer = group_folds(groups, folds, seed)
    scores = [math.nan] * len(labels)
    models: list[Any] = []
    fold_of_group: dict[str, int] = {}
    for i, test in enumerate(outer):
        held = set(test)
        train = [r for r in range(len(labels)) if r not in held]
        best = families[0] if len(families) == 1 else max(
            families, key=lambda f: _nan_low(_cv_auc(f, X, y, groups, train, min(3, folds), seed + 1)))
        model = _fit(best, X, y, train, seed)
        for r, p in zip(test, model.predict_proba(X[test])[:, 1], strict=True):
            scores[r] = float(p)
        models.append(model)
        fold_of_group.update({groups[r]: i for r in test})
        if on_fold is not None:
            on_fold(i + 1, len(outer))
    family_auc = {families[0]: auc(labels, scores)} if len(families) == 1 else {
        f: _cv_auc(f, X, y, groups, list(range(len(labels))), folds, seed) for f in families}
    chosen = max(families, key=lambda f: _nan_low(family_auc[f]))
    return CrossFit(tuple(scores), chosen, family_auc, auc(labels, scores), brier(labels, scores),
                    ece(labels, scores), time.monotonic() - start, tuple(models), fold_of_group)


def fit_final(family: str, X_rows: Sequence[Sequence[float]], labels: Sequence[bool], seed: int = 0) -> Any:
    """The family's estimator fitted on every row (what the scorer file holds)."""
    np = require("numpy", "learn")
    model = _estimator(family, seed)
    model.fit(np.asarray(X_rows, dtype=float), np.asarray(labels, dtype=int))
    return model


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x
