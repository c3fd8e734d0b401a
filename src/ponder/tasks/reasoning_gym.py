"""reasoning_gym:<name>: any generator of reasoning-gym, graded with that generator's own `score_answer`.

The answer scored is the one between <answer> tags (reasoning-gym's convention) when a response has them, else
what `ponder.answers.extract_answer` finds ("The answer is X.", a boxed value, the last number).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ponder.answers import extract_answer
from ponder.errors import InvalidParameter, UnknownName
from ponder.extras import require
from ponder.tasks.base import TaskKind, _between
from ponder.types import Problem


@lru_cache(maxsize=64)
def _scorer(dataset: str) -> Any:
    return require("reasoning_gym", "tasks").get_score_answer_fn(dataset)


@dataclass(frozen=True)
class RGChecker:
    """Picklable grading of one reasoning-gym entry with its generator's score_answer (full marks = correct)."""

    dataset: str
    entry: dict[str, Any] = field(compare=False)

    def __call__(self, text: str) -> bool:
        answer = _between(text, "<answer>", "</answer>")
        if answer is None:
            answer = (extract_answer(text) or text.strip()).rstrip(".").strip()
        try:
            return float(_scorer(self.dataset)(answer, self.entry)) >= 1.0
        except Exception:  # a generator's scorer can choke on malformed answers; that answer is simply wrong
            return False


@dataclass(frozen=True)
class ReasoningGym:
    """Problems from one reasoning-gym generator; `config` is passed to the generator (difficulty, ...)."""

    dataset: str
    config: dict[str, Any] = field(default_factory=dict)
    kind: TaskKind = "math"

    def __post_init__(self) -> None:
        if not self.dataset:
            raise InvalidParameter("task", "reasoning_gym", "name a generator, e.g. reasoning_gym:chain_sum")

    @property
    def name(self) -> str:
        return f"reasoning_gym:{self.dataset}"

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """`limit` entries (100 when None) generated from `seed`; the same seed gives the same entries."""
        rg = require("reasoning_gym", "tasks")
        known = rg.factory.DATASETS
        if self.dataset not in known:
            raise UnknownName("reasoning_gym generator", self.dataset, known)
        data = rg.create_dataset(self.dataset, size=100 if limit is None else limit, seed=seed, **self.config)
        out = []
        for i, entry in enumerate(data):
            entry = dict(entry)
            out.append(Problem(
                id=f"{self.name}/{seed}/{i}",
                question=entry["question"].strip(),
                answer=None if entry.get("answer") is None else str(entry["answer"]),
                kind="math",
                metadata={"answer_tag": "answer", "dataset": self.dataset},
                checker=RGChecker(self.dataset, entry),
            ))
        return out
