"""Best-of-N: sample n solutions, score each with a verifier, keep the best (or the best-scored answer).

`select` is a pure function of stored answers and scores, so curves reuse it on a pool without regenerating.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from ponder.errors import BudgetExhausted, InvalidParameter, VerifierError
from ponder.ledger import Ledger
from ponder.registry import VERIFIERS
from ponder.strategies.common import Sampled, at_least, candidate, cut_by_budget, result
from ponder.strategies.pooling import Pooled, scored
from ponder.strategies.self_consistency import majority_vote
from ponder.types import Candidate, Problem, Result
from ponder.verifiers.base import Verifier, as_verifier, build_verifier, verifier_name

Mode = Literal["max", "weighted"]
# Verifiers that grade against the reference answer: best-of-n with one of them is an oracle, i.e. pass@n.
ORACLE_VERIFIERS = frozenset({"math"})


def select(answers: Sequence[str | None], scores: Sequence[float], mode: Mode) -> tuple[str | None, dict[str, float]]:
    """The chosen answer and each answer's tally: its best score ("max") or its summed score ("weighted").

    None answers are never chosen. Ties go to the answer seen first.
    """
    if len(scores) != len(answers):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
    if mode not in ("max", "weighted"):
        raise InvalidParameter("mode", mode, 'use "max" or "weighted"')
    tally: dict[str, float] = {}
    for a, s in zip(answers, scores, strict=True):
        if a is None:
            continue
        if mode == "weighted":
            tally[a] = tally.get(a, 0.0) + float(s)
        else:
            tally[a] = max(tally.get(a, float("-inf")), float(s))
    if not tally:
        return None, {}
    best = max(tally.values())
    return next(a for a in tally if tally[a] == best), tally


def make_verifier(spec: str | Verifier | Callable[..., object], problem: Problem, backend: object,
                  ledger: Ledger) -> Verifier:
    """A Verifier from a registry name, an object, or a plain callable; model-based ones are metered as "verifier"."""
    if not isinstance(spec, str):
        return as_verifier(spec)
    if spec in ORACLE_VERIFIERS and problem.answer is None and problem.checker is None:
        raise VerifierError(
            f"verifier {spec!r} grades against the reference answer, and problem {problem.id!r} has none; "
            "give the problem an answer (this makes best-of-n an oracle, i.e. pass@n) or use 'self_eval' or 'judge'"
        )
    return build_verifier(spec, ledger.meter(backend, "verifier"))


@dataclass(frozen=True, kw_only=True)
class BestOfN(Sampled):
    """Sample n, score with a verifier, select (Cobbe et al. 2021; Snell et al. 2024, "weighted best-of-N")."""

    name: ClassVar[str] = "best_of_n"
    pooled: ClassVar[tuple[Pooled, ...]] = (
        Pooled("best_of_n", ("cot",), scored("weighted"), needs_scores=True),
        Pooled("best_of_n_max", ("cot",), scored("max"), needs_scores=True, params={"mode": "max"}),
    )
    paper: ClassVar[str] = ("Cobbe et al. 2021, Training Verifiers to Solve Math Word Problems (arXiv:2110.14168); "
                            "Snell et al. 2024, Scaling LLM Test-Time Compute Optimally (arXiv:2408.03314)")

    n: int = 5
    """Samples to draw and score (Cobbe et al. 2021 rank 100; gains flatten well before that for weak verifiers)."""
    verifier: str | Verifier | Callable[..., object] = "self_eval"
    """Who scores: a registry name ("self_eval", "judge"; "math" is an oracle on the reference: pass@n), a Verifier,
    or a plain callable fn(problem, texts) -> scores (as TRL's RewardFunc)."""
    mode: Mode = "weighted"
    """"max" keeps the single best-scored sample (Cobbe et al. 2021); "weighted" sums scores per distinct answer,
    which Snell et al. 2024 (Sec. 5) find more robust to verifier noise."""

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("n", self.n, 1)
        if self.mode not in ("max", "weighted"):
            raise InvalidParameter("mode", self.mode, 'use "max" or "weighted"')
        if isinstance(self.verifier, str) and verifier_name(self.verifier) not in VERIFIERS:
            VERIFIERS.get(verifier_name(self.verifier))  # raises UnknownName listing the valid verifiers
        if not isinstance(self.verifier, str) and not callable(getattr(self.verifier, "score", self.verifier)):
            raise InvalidParameter("verifier", self.verifier, "use a verifier name, a Verifier, or a callable")

    def at_budget(self, k: int) -> BestOfN:
        return replace(self, n=k)

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        verifier = make_verifier(self.verifier, problem, backend, ledger)  # fail before spending compute
        policy = ledger.meter(backend, "policy")
        try:
            gens = await policy.generate(self.messages(problem), self.params(self.n))
        except BudgetExhausted:
            return result(self.name, ledger, answer=None, exhausted=True)
        cands = [candidate(g, problem=problem) for g in gens]
        try:
            scores = await verifier.score(problem, [g.text for g in gens])
        except BudgetExhausted:  # no scores: fall back to the vote, the best we have
            answer, votes = majority_vote([c.answer for c in cands])
            return result(self.name, ledger, answer=answer, candidates=cands, votes=votes, exhausted=True)
        if len(scores) != len(cands):
            raise VerifierError(f"the verifier returned {len(scores)} scores for {len(cands)} candidates")
        cands = [replace(c, score=s.value) for c, s in zip(cands, scores, strict=True)]
        answer, votes = select([c.answer for c in cands], [s.value for s in scores], self.mode)
        return result(self.name, ledger, answer=answer, candidates=cands, votes=votes, text=_best_text(cands, answer),
                      exhausted=cut_by_budget(ledger, gens, self.max_tokens))


def _best_text(cands: Sequence[Candidate], answer: str | None) -> str:
    """The text of the highest-scored candidate that gave `answer`."""
    mine = [c for c in cands if answer is not None and c.answer == answer]
    return max(mine, key=lambda c: c.score or 0.0).text if mine else ""
