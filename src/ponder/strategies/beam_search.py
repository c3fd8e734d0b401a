"""Step-level beam search guided by a step verifier (Snell et al. 2024), and its DVTS variant (Beeching et al. 2024).

A step ends at `step_delimiter` (a blank line by default). Each step, every active beam is continued `expansions`
ways in ONE backend call (`n=expansions`, `prefix=` the beam's text), so the children share one prefill; on the local
engine, automatic prefix caching serves the parent's tokens from its KV cache (reported as Usage.cached_tokens).
All beams' calls of a step are issued together, so the engine batches them.

Beam search pools every child and keeps the `beam_width` best. DVTS (Diverse Verifier Tree Search) runs
`beam_width` independent subtrees; each keeps only its own best child, and subtrees never compare until the final
selection. A child is *finished* when the model ended the step with a final-answer marker (\\boxed{}, "####",
"the answer is", "final answer") or ended its turn with an empty step. Only finished candidates are ever returned:
if none finished, the answer is None and the trace says so.
"""

from __future__ import annotations

import asyncio
import codecs
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ponder.errors import BudgetExhausted, InvalidParameter, VerifierError
from ponder.ledger import Ledger
from ponder.strategies.common import answer_for
from ponder.types import Candidate, Generation, Message, Problem, Result, SamplingParams
from ponder.verifiers.base import Verifier, as_verifier, build_verifier

SYSTEM_PROMPT = (
    "Solve the problem step by step. Separate steps with a blank line. "
    "End with a line of the form 'The answer is <answer>'."
)
_FINAL = re.compile(r"\\boxed\s*\{|####|(?:final answer|the answer)\s*(?:is|:)", re.IGNORECASE)
_AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda s: s[-1],
    "min": min,
    "prod": math.prod,
}


def has_final_answer(step: str) -> bool:
    """Does this step state a final answer? (the first half of the finished rule)"""
    return bool(_FINAL.search(step))


@dataclass(frozen=True)
class Beam:
    """One partial (or finished) solution and the verifier's score of each of its steps."""

    text: str
    step_scores: tuple[float, ...] = ()
    finished: bool = False
    subtree: int = 0
    """DVTS: which independent subtree the beam belongs to (beam search: always 0)."""
    tokens: int = 0


def resolve_verifier(spec: object, backend: object) -> Verifier:
    """A Verifier from a registry name (built on `backend` when its factory takes one), a Verifier, or a callable."""
    if not isinstance(spec, str):
        return as_verifier(spec)  # type: ignore[arg-type]
    return build_verifier(spec, backend)


@dataclass(frozen=True)
class BeamSearch:
    """Verifier-guided step-level search: beam search (Snell et al. 2024) or DVTS (Beeching et al. 2024).

    Beam search stops once `beam_width` candidates have finished (or no beam is left, or `max_steps`); DVTS stops
    when every subtree's best child has finished. All finished candidates then compete in the final selection.
    """

    name: ClassVar[str] = "beam_search"
    problem_kinds: ClassVar[tuple[str, ...]] = ("math", "code")
    """It compares answers for equality (or needs a final-answer line): open prompts have neither."""

    beam_width: int = 2
    """Active beams kept after each step (Snell et al. 2024 keep N/M of N candidates); DVTS: the number of subtrees."""
    expansions: int = 2
    """Children sampled per beam per step (M in Snell et al. 2024 and search-and-learn)."""
    max_steps: int = 8
    """Most steps before the search stops; beams unfinished by then are discarded (Snell et al. use 40)."""
    step_delimiter: str = "\n\n"
    """Where one step ends; a blank line, as in Snell et al. 2024 and search-and-learn. Backslash escapes typed
    on a command line ("\\n") are decoded."""
    max_step_tokens: int = 128
    """Most tokens per step; a longer step is continued at the next step."""
    temperature: float = 0.8
    """Sampling temperature of the expansions (search-and-learn uses 0.8)."""
    verifier: str | Verifier | Callable[..., Any] = "self_eval"
    """The step scorer (a process reward model in Snell et al. 2024): a registry name, a Verifier or a callable.
    Built on the backend metered as role "verifier"."""
    dvts: bool = False
    """Diverse Verifier Tree Search (Beeching et al. 2024): independent subtrees, each greedy by the verifier."""
    aggregate: str = "last"
    """How step scores make a beam's score: "last" (Snell et al. 2024 with a PRM), "min" or "prod"."""
    select: str = "weighted"
    """Final choice among finished candidates: "weighted" best-of-N (sum of scores per answer) or "max"."""
    system: str = SYSTEM_PROMPT
    """Asks for blank-line-separated steps and a closing "The answer is" line."""
    seed: int | None = None
    """Base seed; every backend call gets its own seed from it, so a search is reproducible. None: unseeded."""

    def __post_init__(self) -> None:
        for name in ("beam_width", "expansions", "max_steps", "max_step_tokens"):
            if getattr(self, name) < 1:
                raise InvalidParameter(name, getattr(self, name), "use at least 1")
        if self.aggregate not in _AGGREGATES:
            raise InvalidParameter("aggregate", self.aggregate, f"use one of {', '.join(_AGGREGATES)}")
        if self.select not in ("weighted", "max"):
            raise InvalidParameter("select", self.select, 'use "weighted" or "max"')
        if "\\" in self.step_delimiter:  # `-p step_delimiter='\n'` from a shell arrives as backslash + n
            object.__setattr__(self, "step_delimiter", codecs.decode(self.step_delimiter, "unicode_escape"))
        if not self.step_delimiter:
            raise InvalidParameter("step_delimiter", self.step_delimiter, 'use a non-empty string such as "\\n\\n"')

    def at_budget(self, k: int) -> BeamSearch:
        """k candidates per step in all, as search-and-learn's N: M = min(expansions, k) children, k // M beams."""
        m = max(1, min(self.expansions, k))
        return replace(self, expansions=m, beam_width=max(1, k // m))

    def score_of(self, beam: Beam) -> float:
        return _AGGREGATES[self.aggregate](beam.step_scores) if beam.step_scores else 0.0

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        policy = ledger.meter(backend, "policy")
        verifier = resolve_verifier(self.verifier, ledger.meter(backend, "verifier"))
        messages = problem.messages(self.system or None)
        active = [Beam("", subtree=i if self.dvts else 0) for i in range(self.beam_width)]
        finished: list[Beam] = []
        trace: list[dict[str, Any]] = []
        exhausted = False
        for step in range(self.max_steps):
            children, exhausted = await self._expand(messages, policy, active, step)
            children, out_of_budget = await self._score(problem, verifier, children)
            exhausted = exhausted or out_of_budget
            finished += [c for c in children if c.finished]
            active = self._keep(children)
            trace.append({"step": step, "kept": [b.text for b in active], "children": len(children),
                          "finished": len(finished), "scores": [round(self.score_of(c), 4) for c in children]})
            if exhausted or not active or (not self.dvts and len(finished) >= self.beam_width):
                break
        return self._result(problem, finished, active, ledger, exhausted, trace)

    async def _expand(
        self, messages: Sequence[Message], policy: Any, active: list[Beam], step: int
    ) -> tuple[list[Beam], bool]:
        """One backend call per active beam (n=expansions, prefix=the beam), all in flight together."""
        params = SamplingParams(n=self.expansions, max_tokens=self.max_step_tokens, temperature=self.temperature,
                                stop=(self.step_delimiter,))
        calls = [policy.generate(messages, params.with_(seed=self._seed(step, j)), b.text)
                 for j, b in enumerate(active)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        children: list[Beam] = []
        exhausted = False
        for beam, res in zip(active, results, strict=True):
            if isinstance(res, BudgetExhausted):
                exhausted = True
                continue
            if isinstance(res, BaseException):
                raise res
            children += [self._child(beam, g) for g in res]
        return children, exhausted

    def _seed(self, step: int, beam: int) -> int | None:
        """A distinct seed per (step, beam) call; its n samples take seed + i (SamplingParams.sample_seed)."""
        if self.seed is None:
            return None
        return self.seed + (step * self.beam_width + beam) * self.expansions

    def _child(self, parent: Beam, gen: Generation) -> Beam:
        """Append one generated step; decide whether the candidate is finished (see the module docstring)."""
        step = gen.text
        ended = gen.finish_reason == "stop"
        finished = ended and (has_final_answer(step) or not step.strip())
        text = parent.text + step
        if ended and not finished:
            text += self.step_delimiter  # the stop string was cut off; put the step break back
        return Beam(text, parent.step_scores, finished, parent.subtree, parent.tokens + gen.completion_tokens)

    async def _score(self, problem: Problem, verifier: Verifier, children: list[Beam]) -> tuple[list[Beam], bool]:
        """Score each child's partial solution. If the budget runs out, only finished children survive, with
        their parent's score (0 if none); returns (children, whether the budget ran out)."""
        if not children:
            return children, False
        try:
            scores = await verifier.score(problem, [c.text for c in children])
        except BudgetExhausted:
            return [replace(c, step_scores=c.step_scores or (0.0,)) for c in children if c.finished], True
        if len(scores) != len(children):
            raise VerifierError(f"the step verifier returned {len(scores)} scores for {len(children)} partial "
                                "solutions; it must return one Score per candidate, in order")
        scored = [replace(c, step_scores=(*c.step_scores, s.value)) for c, s in zip(children, scores, strict=True)]
        return scored, False

    def _keep(self, children: list[Beam]) -> list[Beam]:
        """Prune: beam search keeps the top beam_width unfinished children of all; DVTS keeps each subtree's best
        child, and a subtree whose best child finished is done."""
        ranked = sorted(children, key=self.score_of, reverse=True)  # stable: ties keep generation order
        if not self.dvts:
            return [c for c in ranked if not c.finished][: self.beam_width]
        best: dict[int, Beam] = {}
        for c in ranked:
            best.setdefault(c.subtree, c)
        return [b for _, b in sorted(best.items()) if not b.finished]

    def _result(self, problem: Problem, finished: list[Beam], active: list[Beam], ledger: Ledger, exhausted: bool,
                trace: list[dict[str, Any]]) -> Result:
        candidates = tuple(Candidate(b.text, answer_for(problem, b.text), self.score_of(b), "stop", b.tokens)
                           for b in finished)
        votes: dict[str, float] = {}
        for c in candidates:
            if c.answer is not None:
                votes[c.answer] = votes.get(c.answer, 0.0) + (c.score or 0.0)
        chosen = self._choose(candidates, votes)
        if chosen is None:
            trace.append({"event": "no_finished_candidate", "unfinished": len(active)})
        return Result(chosen.answer if chosen else None, chosen.text if chosen else "", self.name, candidates,
                      votes, ledger.usage_by_role, exhausted, tuple(trace))

    def _choose(self, candidates: Sequence[Candidate], votes: dict[str, float]) -> Candidate | None:
        if not candidates:
            return None
        by_score = sorted(candidates, key=lambda c: c.score or 0.0, reverse=True)
        if self.select == "max" or not votes:
            return by_score[0]
        top = max(votes, key=lambda a: votes[a])  # first maximum: ties go to the earlier answer
        return next(c for c in by_score if c.answer == top)
