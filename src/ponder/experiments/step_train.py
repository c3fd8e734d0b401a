"""Training a step-level value on stores: every pooled chain of thought cut after each step, labelled by outcome.

Each candidate sample of a run (the chain-of-thought pool) gives one row per step: its prefix up to that step, with
the step features (verifiers/steps.py) computed among the other samples of its problem cut at the same step, and
the label of the sample's final answer. Rows are cross-fitted in folds by group (a problem, or its GSM template;
verifier_fit.py), so no prefix is ever scored by a model that saw its problem; the chosen family is refitted on
every row for the scorer file (level "step"), and each fold's model can be written as a file of its own so that a
search benchmark on the training problems scores every problem with a model that never saw it.

It owns the rows and the step file; it ignores the features' arithmetic and the estimators' insides.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ponder.errors import InvalidParameter, StoreError
from ponder.experiments.labelled import RunInfo, group_of, problem_metadata
from ponder.experiments.store import Store
from ponder.experiments.verifier_fit import CrossFit, auc, cross_fit, fit_final
from ponder.strategies.learning import CANDIDATE_POOL
from ponder.strategies.pooling import split_pool
from ponder.verifiers.scorer import Scorer, ScorerCard, ScorerLevel
from ponder.verifiers.steps import STEP_FEATURES, prefixes, step_features, vector

MAX_DEPTH = 12
"""Steps per sample that make rows (a rambling sample would otherwise weigh as much as a dozen short ones)."""


@dataclass(frozen=True)
class StepRows:
    X: tuple[tuple[float, ...], ...]
    labels: tuple[bool, ...]
    groups: tuple[str, ...]
    depths: tuple[int, ...]
    problem_ids: tuple[str, ...]


def step_rows(runs: Sequence[str | Path], max_depth: int = MAX_DEPTH) -> tuple[StepRows, list[RunInfo]]:
    """The prefix rows of every candidate sample in `runs` (see the module docstring)."""
    X: list[tuple[float, ...]] = []
    labels: list[bool] = []
    groups: list[str] = []
    depths: list[int] = []
    pids: list[str] = []
    infos: list[RunInfo] = []
    for path in runs:
        with Store.open(path) as store:
            config = store.config
            task = str(config.get("task", ""))
            meta = problem_metadata(store)  # unreadable metadata: every problem its own group, as the outcome scorer
            questions = {p.problem_id: p.question for p in store.problems()}
            pools: dict[str, list[tuple[str, bool]]] = defaultdict(list)
            for s in store.samples():
                if split_pool(s.pool)[0] == CANDIDATE_POOL:
                    pools[s.problem_id].append((s.text, s.correct))
        if not pools:
            raise StoreError(f"{path} has no '{CANDIDATE_POOL}' pool to learn steps from: sweep with "
                             "self_consistency first")
        for pid, samples in pools.items():
            cuts = [prefixes(text)[:max_depth] for text, _ in samples]
            group = group_of(task, pid, meta.get(pid, {}))
            for i, (own, (_, correct)) in enumerate(zip(cuts, samples, strict=True)):
                for d, prefix in enumerate(own):
                    peers = [c[min(d, len(c) - 1)] for j, c in enumerate(cuts) if j != i and c]
                    X.append(tuple(vector(step_features(prefix, peers, questions.get(pid, "")))))
                    labels.append(correct)
                    groups.append(group)
                    depths.append(d + 1)
                    pids.append(pid)
        infos.append(RunInfo(str(path), task, str(config.get("model_name", "")), config.get("model_sha256"),
                             len(pools), sum(len(v) for v in pools.values()), 0))
    return StepRows(tuple(X), tuple(labels), tuple(groups), tuple(depths), tuple(pids)), infos


def within_problem_auc(rows: StepRows, scores: Sequence[float], max_depth: int = 4) -> tuple[float, int]:
    """AUC over pairs of prefixes of one problem at one step (steps beyond `max_depth` pooled): how well a
    problem's own prefixes are ranked, which is what a search needs (the overall AUC also rewards knowing which
    problems are hard). Returns the AUC and the number of pairs."""
    by: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (pid, depth) in enumerate(zip(rows.problem_ids, rows.depths, strict=True)):
        by[(pid, min(depth, max_depth))].append(i)
    wins = pairs = 0.0
    for members in by.values():
        pos = [scores[i] for i in members if rows.labels[i]]
        neg = [scores[i] for i in members if not rows.labels[i]]
        for a in pos:
            for b in neg:
                pairs += 1
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return (wins / pairs if pairs else math.nan), int(pairs)


@dataclass(frozen=True)
class StepTraining:
    scorer: Scorer
    fit: CrossFit
    rows: StepRows
    auc_by_depth: dict[int, float]
    """Cross-fitted AUC of the prefixes cut after step d (the last bucket holds every deeper cut)."""
    within_problem_auc: float
    """Cross-fitted AUC among one problem's prefixes at one step (within_problem_auc)."""

    def fold_scorer(self, group: str) -> Scorer:
        """The scorer of the fold that held `group` out (for searching problems the scorer was trained on)."""
        return replace(self.scorer, estimator=self.fit.model_for(group))


def train_steps(runs: Sequence[str | Path], *, folds: int = 5, seed: int = 0,
                on_fold: Callable[[int, int], None] | None = None) -> StepTraining:
    rows, infos = step_rows(runs)
    if len({i.model_sha256 for i in infos}) > 1:
        raise InvalidParameter("runs", [i.path for i in infos], "the runs were sampled from different models: a "
                               "step value learns one model's samples, so train one per model")
    if len(set(rows.groups)) < folds:
        raise InvalidParameter("folds", folds, f"only {len(set(rows.groups))} problem groups: use fewer folds or "
                               "more problems")
    fit = cross_fit(rows.X, rows.labels, rows.groups, folds=folds, seed=seed, on_fold=on_fold)
    start = time.monotonic()
    final = fit_final(fit.chosen, rows.X, rows.labels, seed)
    by_depth: dict[int, float] = {}
    for d in (1, 2, 3, 4):
        keep = [i for i, depth in enumerate(rows.depths) if (depth == d if d < 4 else depth >= d)]
        by_depth[d] = auc([rows.labels[i] for i in keep], [fit.scores[i] for i in keep]) if keep else math.nan
    within, _ = within_problem_auc(rows, fit.scores)
    card = ScorerCard(features=STEP_FEATURES, model_name=infos[0].model_name, model_sha256=infos[0].model_sha256,
                      estimator=fit.chosen, training_runs=tuple(vars(i) for i in infos), cv_auc=fit.auc,
                      cv_brier=fit.brier, cv_ece=fit.ece, n_samples=len(rows.labels),
                      n_groups=len(set(rows.groups)), fit_seconds=fit.seconds + time.monotonic() - start,
                      extra={"family_auc": dict(fit.family_auc), "folds": folds, "seed": seed,
                             "auc_by_depth": {str(k): v for k, v in by_depth.items()},
                             "within_problem_auc": within},
                      level=ScorerLevel.STEP)
    return StepTraining(Scorer(card, final), fit, rows, by_depth, within)
