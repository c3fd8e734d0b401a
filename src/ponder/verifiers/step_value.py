"""The `step_value` verifier: a step-level value learned from outcomes (`ponder verifier train --level step`).

`step_value:FILE` scores partial solutions, the way beam search and particle filtering call a process reward
model: all the candidates of one step together, so each is featured among the others (verifiers/steps.py). It
needs no logits and makes no backend call, so it works on any backend and costs no tokens. A whole solution is a
partial one with its last step written: it is scored the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ponder.errors import InvalidParameter
from ponder.types import Problem, Score
from ponder.verifiers.scorer import Scorer, ScorerLevel, load_scorer
from ponder.verifiers.steps import step_features, vector


class StepValueVerifier:
    """P(the prefix's completions reach the right answer), from a step scorer file."""

    def __init__(self, backend: Any = None, path: str | Path | None = None, scorer: Scorer | None = None) -> None:
        if scorer is None:
            if not path:
                raise InvalidParameter("verifier", "step_value", "name the step scorer file: step_value:PATH (made "
                                       "by `ponder verifier train RUN --level step`)")
            info = getattr(backend, "info", None)
            scorer = load_scorer(path, getattr(info, "sha256", None), getattr(backend, "model", None),
                                 ScorerLevel.STEP)
        self.scorer = scorer

    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        question = problem.question
        rows = [vector(step_features(c, candidates, question), self.scorer.card.features) for c in candidates]
        return [Score(p, None, f"step value {p:.3f}") for p in self.scorer.predict(rows)]
