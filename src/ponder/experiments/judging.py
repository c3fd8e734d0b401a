"""Which answers of a sweep are judged, and against what: on an open problem every strategy's stored answer, and
every pool sample (pooled curves select among them), against the baseline's (experiments/judged.py owns the
verdict). Judging units are planned from the store once the answers exist, so a resumed sweep judges exactly what
is missing. A pool sample's judgment is keyed (pool_subject(pool), its index).
"""

from __future__ import annotations

from collections.abc import Sequence

from ponder.experiments.judged import baseline_strategy
from ponder.experiments.records import ResultRow, SampleRow
from ponder.experiments.units import JudgeUnit, Key, PoolUnit, SearchUnit, Unit
from ponder.types import Problem

POOL_PREFIX = "pool:"
THINK_CLOSE = "</think>"
"""Thinking ends here (budget forcing's delimiter): a reader, and so the judge, sees only what follows."""


def visible(text: str, answer: str | None = None) -> str:
    """What a reader sees of a response: the text after its thinking, stripped; when nothing follows the thinking,
    the strategy's own answer (budget forcing then answers with the thinking text)."""
    return text.rsplit(THINK_CLOSE, 1)[-1].strip() or (answer or "").strip()


def pool_subject(pool: str) -> str:
    """The judgment's `strategy` for a sample of `pool` (its `budget` is the sample's index)."""
    return POOL_PREFIX + pool


def judged_keys(units: Sequence[Unit]) -> list[Key]:
    """The judgment every unit on an open problem will get: each result except the baseline's, each pool sample."""
    base = baseline_strategy()
    keys: list[Key] = []
    for u in units:
        if u.problem.kind != "open":
            continue
        if isinstance(u, SearchUnit) and u.strategy != base:
            keys.append(("judgment", *u.key[1:]))
        elif isinstance(u, PoolUnit):
            keys += [("judgment", u.problem.id, pool_subject(u.pool), i) for i in range(u.n)]
    return keys


def plan_judging(problems: Sequence[Problem], results: Sequence[ResultRow],
                 samples: Sequence[SampleRow] = ()) -> list[JudgeUnit]:
    """A JudgeUnit for every stored result and pool sample on an open problem, against the baseline's answer."""
    base = baseline_strategy()
    by_id = {p.id: p for p in problems if p.kind == "open"}
    baseline = {r.problem_id: visible(r.text, r.answer) for r in results
                if r.strategy == base and r.problem_id in by_id}
    units = [JudgeUnit(by_id[r.problem_id], r.strategy, r.budget, visible(r.text, r.answer), baseline[r.problem_id])
             for r in results if r.problem_id in baseline and r.strategy != base]
    return units + [JudgeUnit(by_id[s.problem_id], pool_subject(s.pool), s.index, visible(s.text),
                              baseline[s.problem_id]) for s in samples if s.problem_id in baseline]
