"""The `learned` verifier: a scorer trained on the model's own labelled samples (`ponder verifier train`).

`learned:FILE` loads the scorer file (refused when it was made for another model) and scores candidates with
the same features it learned from:

- pool features from the candidates themselves (vote shares, log-probability ranks);
- program agreement, when the scorer uses it: the verifier draws as many program-aided answers as there are
  candidates, through its own (metered) backend, so their tokens are charged to the verifier;
- the candidates' token log-probabilities and entropies, when the scorer uses them: read by re-scoring the texts
  on the local engine (teacher forcing; the prompt tokens are charged to the verifier). Over HTTP there are no
  logits to read, so such a scorer is refused with the fix (train on pool features only: --features pool).

It owns that assembly; the arithmetic of the features is features.py's, the file scorer.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ponder.errors import InvalidParameter, VerifierError
from ponder.types import Message, Problem, Score, Usage
from ponder.verifiers.features import (
    HIDDEN_PREFIX,
    POOL_FEATURES,
    PROGRAM_FEATURES,
    SampleFeatures,
    pool_features,
    sample_features,
    vector,
)
from ponder.verifiers.scorer import Scorer, load_scorer

_LIVE_FROM_TEXT = frozenset({"log_tokens", "truncated"})
"""Sample features that need no log-probabilities (the rest need the engine's logits)."""


def _engine_of(backend: Any) -> Any:
    """The local llama.cpp engine under metering wrappers, or None."""
    seen = backend
    for _ in range(4):
        if hasattr(seen, "_model") and hasattr(seen, "render"):
            return seen
        seen = getattr(seen, "inner", None)
        if seen is None:
            return None
    return None


class LearnedVerifier:
    """Scores candidates with a scorer file's classifier: P(correct) given the candidate's features."""

    def __init__(self, backend: Any = None, path: str | Path | None = None, scorer: Scorer | None = None) -> None:
        if scorer is None:
            if not path:
                raise InvalidParameter("verifier", "learned", "name the scorer file: learned:PATH (made by "
                                       "`ponder verifier train`)")
            info = getattr(backend, "info", None)
            scorer = load_scorer(path, getattr(info, "sha256", None), getattr(backend, "model", None))
        self.scorer, self.backend = scorer, backend
        names = scorer.card.features
        self.needs_programs = bool(PROGRAM_FEATURES & set(names))
        self.needs_logits = any(n not in POOL_FEATURES and n not in _LIVE_FROM_TEXT for n in names)
        self.needs_hidden = any(n.startswith(HIDDEN_PREFIX) for n in names)
        self._programs_of: dict[str, list[str | None]] = {}
        """Program answers drawn per problem: a verifier called again on a grown pool (adaptive stopping) draws
        only the programs it lacks."""
        if self.needs_logits and _engine_of(backend) is None:
            raise InvalidParameter("verifier", f"learned:{path}", "this scorer reads token log-probabilities, "
                                   "which only a local model can re-read; serve a local model, or train a scorer "
                                   "on pool features alone (ponder verifier train --features pool)")

    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        from ponder.tasks.base import answer as answer_of_problem

        answers = [answer_of_problem(problem, c) for c in candidates]
        if self.needs_logits:
            samples, read = await asyncio.to_thread(self._reread, problem, candidates)
            ledger = getattr(self.backend, "ledger", None)
            if ledger is not None:  # re-reading is a prefill: charged to the verifier as prompt tokens
                ledger.charge("verifier", Usage(prompt_tokens=read))
        else:
            samples = [sample_features([], False, self._tokens(c)) for c in candidates]
        programs = await self._programs(problem, len(candidates)) if self.needs_programs else []
        lps = [s.get("mean_logprob") for s in samples]
        pools = pool_features(answers, [None if lp != lp else lp for lp in lps], programs)
        rows = [vector(self.scorer.card.features, s, p) for s, p in zip(samples, pools, strict=True)]
        probs = self.scorer.predict(rows)
        return [Score(p, a, f"learned P(correct)={p:.3f}") for p, a in zip(probs, answers, strict=True)]

    def _reread(self, problem: Problem, candidates: Sequence[str]) -> tuple[list[SampleFeatures], int]:
        """The candidates' sample features re-read on the local engine, and the tokens that took. Each call has its
        own scoring context, freed at once: concurrent requests never share one, and none outlives its call."""
        from ponder.backends.rescoring import Rescorer
        from ponder.strategies.learning import candidate_messages

        messages: list[Message] = list(candidate_messages(problem))
        with Rescorer(_engine_of(self.backend), hidden=self.needs_hidden) as rescorer:
            out = []
            for text in candidates:
                scored = rescorer.score(messages, text)
                out.append(sample_features(list(scored.logprobs), False, len(scored.logprobs), scored.entropies,
                                           scored.hidden))
            return out, rescorer.tokens

    def _tokens(self, text: str) -> int:
        """The candidate's length in tokens: the local engine's count, else about 4 characters a token."""
        engine = _engine_of(self.backend)
        return len(engine.tokenize(text)) if engine is not None else max(1, len(text) // 4)

    async def _programs(self, problem: Problem, n: int) -> list[str | None]:
        from ponder.strategies.learning import agreement_answers

        if self.backend is None:
            raise VerifierError("the learned verifier needs a backend to draw the program answers it agrees with")
        drawn = self._programs_of.setdefault(problem.id, [])
        if len(drawn) < n:
            drawn += await agreement_answers(problem, self.backend, n - len(drawn))
        return drawn[:n]
