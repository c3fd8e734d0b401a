"""open: ponder's own open-ended prompts (open_prompts.jsonl, written for the project, licensed with it).

Short essays, explanations, advice and open philosophical questions: tasks with no checker, where thinking is
judged, not checked (experiments/judged.py). A user's own open prompts are `jsonl:PATH --task-opt kind=open`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ponder.tasks.base import TaskKind
from ponder.types import Problem

PROMPTS = Path(__file__).with_name("open_prompts.jsonl")


@lru_cache(maxsize=1)
def _records() -> tuple[dict[str, Any], ...]:
    with PROMPTS.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@dataclass(frozen=True)
class OpenPrompts:
    """The built-in open prompts, in file order."""

    name: str = "open"
    kind: TaskKind = "open"

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The prompts in file order (seed is unused: the set is fixed)."""
        return [Problem(id=f"open/{r['id']}", question=r["question"], answer=None, kind="open",
                        metadata={"category": r["category"]}) for r in _records()[:limit]]
