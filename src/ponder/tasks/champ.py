"""CHAMP: the 270 competition math problems of champ-dataset (champ_dataset/dataset_files/v0.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ponder.tasks.base import MathChecker, TaskKind
from ponder.tasks.data import package_file
from ponder.types import Problem


@lru_cache(maxsize=1)
def _records() -> tuple[dict[str, Any], ...]:
    with package_file("champ_dataset", "dataset_files/v0.json").open(encoding="utf-8") as f:
        return tuple(json.load(f)["problems"].values())


@dataclass(frozen=True)
class Champ:
    """Competition problems (combinatorics, inequalities, number theory, polynomials, sequences)."""

    name: str = "champ"
    kind: TaskKind = "math"

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The problems in the dataset's order (seed is unused: the set is fixed)."""
        return [
            Problem(
                id=f"champ/{r['identifier']}",
                question=r["_text"],
                answer=r["_answer"],
                kind="math",
                metadata={"category": r["category"]},
                checker=MathChecker(r["_answer"]),
            )
            for r in _records()[:limit]
        ]
