"""Labelled candidates from sweep stores: the training data of a learned verifier.

Every stored sample of a candidate pool (chains of thought, "cot" or "cot@T=..") becomes one row: its features
(ponder.verifiers.features: the sample's own, stored with it, and its pool's, computed here from the stored
answers), its label (the task's checker said correct) and its group. The group is what a split must keep
together: the problem, or the template it was instantiated from (GSM-Symbolic instances and the GSM8K original
share one, so no instance of a template trains a scorer that is then scored on the original).

This module owns reading stores into rows and subsetting pools; it ignores fitting (verifier_fit.py).
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import StoreError
from ponder.experiments.store import Store
from ponder.strategies.learning import AGREEMENT_POOL, CANDIDATE_POOL
from ponder.strategies.pooling import split_pool
from ponder.verifiers.features import SampleFeatures, pool_features, vector


@dataclass(frozen=True)
class PoolSampleRow:
    """One stored sample with what scoring it needs."""

    index: int
    answer: str | None
    correct: bool
    mean_logprob: float | None
    completion_tokens: int
    features: SampleFeatures


@dataclass(frozen=True)
class ProblemPools:
    """One problem of one run: its candidate pool, and the program answers to it (for agreement)."""

    run: str
    problem_id: str
    group: str
    candidates: tuple[PoolSampleRow, ...]
    programs: tuple[str | None, ...]

    def rows(self, names: Sequence[str], subset: Sequence[int] | None = None,
             programs: Sequence[int] | None = None) -> tuple[list[list[float]], list[bool], list[str | None]]:
        """Feature vectors, labels and answers of the candidates in `subset` (all by default), their pool features
        computed over that subset and the `programs` subset (so a pool of k is scored as a deployed best-of-k)."""
        cands = [self.candidates[i] for i in (subset if subset is not None else range(len(self.candidates)))]
        progs = [self.programs[i] for i in programs] if programs is not None else list(self.programs)
        pools = pool_features([c.answer for c in cands], [c.mean_logprob for c in cands], progs)
        return ([vector(names, c.features, p) for c, p in zip(cands, pools, strict=True)],
                [c.correct for c in cands], [c.answer for c in cands])


@dataclass(frozen=True)
class RunInfo:
    """Where a store came from: what a scorer file records about its training data."""

    path: str
    task: str
    model_name: str
    model_sha256: str | None
    problems: int
    samples: int
    rescored: int
    """Samples whose features came from `ponder verifier featurize` rather than the sweep itself."""


def group_of(run_task: str, problem_id: str, metadata: dict[str, object]) -> str:
    """The split group: the template file for GSM8K and GSM-Symbolic (one namespace), else the problem."""
    template = metadata.get("template") or (metadata.get("source") if run_task.startswith("gsm") else None)
    return f"gsm-template:{template}" if template else f"{run_task}:{problem_id}"


def load_pools(paths: Iterable[str | Path]) -> tuple[list[ProblemPools], list[RunInfo]]:
    """Every problem with a candidate pool in the stores at `paths`, and what each store is."""
    problems: list[ProblemPools] = []
    infos: list[RunInfo] = []
    for path in paths:
        with Store.open(path) as store:
            config = store.config
            task = str(config.get("task", ""))
            metadata = problem_metadata(store)
            stored = store.features()
            by_problem: dict[str, list[PoolSampleRow]] = defaultdict(list)
            programs: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
            rescored = 0
            for s in store.samples():
                kind = split_pool(s.pool)[0]
                if kind == AGREEMENT_POOL:
                    programs[s.problem_id].append((s.index, s.answer))
                if kind != CANDIDATE_POOL:
                    continue
                source, values = stored.get((s.problem_id, s.pool, s.index), ("", {}))
                rescored += source == "rescored"
                tokens = sum(u.completion_tokens for u in s.usage_by_role.values() if u is not None)
                feats = SampleFeatures(values) if values else _fallback(s.mean_logprob, s.finish_reason, tokens)
                by_problem[s.problem_id].append(PoolSampleRow(s.index, s.answer, s.correct, s.mean_logprob,
                                                              tokens, feats))
            if not by_problem:
                raise StoreError(f"{path} has no '{CANDIDATE_POOL}' pool to learn from: sweep with a sampling "
                                 "strategy (self_consistency, best_of_n) first")
            for pid, cands in by_problem.items():
                problems.append(ProblemPools(str(path), pid, group_of(task, pid, metadata.get(pid, {})),
                                             tuple(sorted(cands, key=lambda c: c.index)),
                                             tuple(a for _, a in sorted(programs.get(pid, [])))))
            infos.append(RunInfo(str(path), task, str(config.get("model_name", "")), config.get("model_sha256"),
                                 len(by_problem), sum(len(c) for c in by_problem.values()), rescored))
    return problems, infos


def _fallback(mean_logprob: float | None, finish_reason: str, tokens: int) -> SampleFeatures:
    """What a sample without stored features still tells: its mean log-probability, length and cut-off."""
    from ponder.verifiers.features import NAN, sample_features

    base = sample_features([], finish_reason == "length", tokens).values
    return SampleFeatures({**base, "mean_logprob": mean_logprob if mean_logprob is not None else NAN})


def problem_metadata(store: Store) -> dict[str, dict[str, object]]:
    try:
        return store.problem_metadata()
    except (sqlite3.DatabaseError, json.JSONDecodeError):  # unreadable metadata: every problem is its own group
        return {}


def subsets(n: int, k: int, draws: int, seed: int) -> list[list[int]]:
    """`draws` random k-subsets of range(n) (the whole pool once when k == n)."""
    if k >= n:
        return [list(range(n))]
    rng = random.Random(seed)
    return [sorted(rng.sample(range(n), k)) for _ in range(draws)]
