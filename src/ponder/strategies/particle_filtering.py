"""Particle filtering over reasoning steps (Puri et al. 2025): a budget of particles, resampled by weight each step.

Beam search keeps the top-scored partial solutions; particle filtering keeps a *sample* of them, drawn in proportion
to their weights, so a step the verifier is unsure about is not pruned outright (the paper's argument: a process
reward model is a noisy likelihood, and greedy pruning on it collapses onto its errors). Each step:

1. every unfinished particle is extended by one step (one backend call each, all in flight together, each with
   `prefix=` its text so the local engine serves it from its KV cache);
2. the step verifier scores every particle's partial solution (a PRM: `self_eval`, or `learned:FILE`);
3. weights are softmax(logit(score) / temperature): the odds r/(1-r), sharpened or flattened;
4. `particles` particles are drawn with replacement by weight (systematic resampling, seeded), finished ones
   carried along unchanged.

It stops when every particle has finished or after `max_steps`; the answer is the weighted vote of the finished
particles' last scores (or the single best, `select="max"`). The budget is the number of particles.
"""

from __future__ import annotations

import asyncio
import codecs
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ponder.errors import BudgetExhausted, InvalidParameter, VerifierError
from ponder.ledger import Ledger
from ponder.strategies.beam_search import SYSTEM_PROMPT, Beam, has_final_answer, resolve_verifier
from ponder.strategies.common import answer_for
from ponder.types import Candidate, Generation, Message, Problem, Result, SamplingParams
from ponder.verifiers.base import Verifier

_EPS = 1e-4


def resampling_weights(scores: Sequence[float], temperature: float) -> list[float]:
    """softmax(logit(score) / temperature), scores clipped away from 0 and 1."""
    logits = [math.log(max(_EPS, min(1 - _EPS, s)) / (1 - max(_EPS, min(1 - _EPS, s)))) / temperature
              for s in scores]
    top = max(logits)
    raw = [math.exp(x - top) for x in logits]
    total = sum(raw)
    return [r / total for r in raw]


def systematic_resample(weights: Sequence[float], n: int, rng: random.Random) -> list[int]:
    """Indices of `n` draws by weight with one uniform offset (lower variance than n independent draws)."""
    start = rng.random() / n
    out, cumulative, i = [], weights[0], 0
    for j in range(n):
        point = start + j / n
        while point > cumulative and i < len(weights) - 1:
            i += 1
            cumulative += weights[i]
        out.append(i)
    return out


@dataclass(frozen=True)
class ParticleFiltering:
    """Step-level particle filtering guided by a step verifier (Puri et al. 2025)."""

    name: ClassVar[str] = "particle_filtering"
    problem_kinds: ClassVar[tuple[str, ...]] = ("math", "code")
    """It compares answers for equality (or needs a final-answer line): open prompts have neither."""
    paper: ClassVar[str] = ("Puri et al. 2025, A Probabilistic Inference Approach to Inference-Time Scaling of LLMs "
                            "using Particle-Based Monte Carlo Methods (arXiv:2502.01618)")

    particles: int = 4
    """Particles kept after each resampling: the budget."""
    max_steps: int = 8
    """Most steps; particles unfinished by then are dropped."""
    step_delimiter: str = "\n\n"
    """Where one step ends (a blank line, as beam search)."""
    max_step_tokens: int = 128
    """Most tokens per step."""
    temperature: float = 0.8
    """Sampling temperature of each step."""
    resample_temperature: float = 1.0
    """Divides the log-odds before the softmax: below 1 resamples greedier (towards beam search), above 1 flatter."""
    verifier: str | Verifier | Callable[..., Any] = "self_eval"
    """The step scorer (a process reward model): a registry name, a Verifier or a callable; metered as "verifier"."""
    select: str = "weighted"
    """Final choice among finished particles: "weighted" (sum of last scores per answer) or "max"."""
    system: str = SYSTEM_PROMPT
    seed: int | None = None
    """Seeds every step's sampling and the resampling draws; None: unseeded."""

    def __post_init__(self) -> None:
        for name in ("particles", "max_steps", "max_step_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InvalidParameter(name, getattr(self, name), "use a whole number >= 1")
        if not self.resample_temperature > 0:
            raise InvalidParameter("resample_temperature", self.resample_temperature, "use a positive number")
        if self.select not in ("weighted", "max"):
            raise InvalidParameter("select", self.select, 'use "weighted" or "max"')
        if "\\" in self.step_delimiter:
            object.__setattr__(self, "step_delimiter", codecs.decode(self.step_delimiter, "unicode_escape"))
        if not self.step_delimiter:
            raise InvalidParameter("step_delimiter", self.step_delimiter, 'use a non-empty string such as "\\n\\n"')

    def at_budget(self, k: int) -> ParticleFiltering:
        return replace(self, particles=k)

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        policy = ledger.meter(backend, "policy")
        verifier = resolve_verifier(self.verifier, ledger.meter(backend, "verifier"))
        messages = problem.messages(self.system or None)
        rng = random.Random(self.seed)
        swarm = [Beam("") for _ in range(self.particles)]
        trace: list[dict[str, Any]] = []
        exhausted = False
        for step in range(self.max_steps):
            swarm, moved, exhausted = await self._extend(messages, policy, swarm, step)
            swarm, out = await self._score(problem, verifier, swarm, moved)
            exhausted = exhausted or out
            if exhausted or not swarm or all(p.finished for p in swarm):
                break
            weights = resampling_weights([p.step_scores[-1] for p in swarm], self.resample_temperature)
            picks = systematic_resample(weights, self.particles, rng)
            trace.append({"step": step, "weights": [round(w, 4) for w in weights], "picked": picks,
                          "finished": sum(p.finished for p in swarm)})
            swarm = [swarm[i] for i in picks]
        return self._result(problem, [p for p in swarm if p.finished], ledger, exhausted, trace)

    async def _extend(self, messages: Sequence[Message], policy: Any, swarm: list[Beam],
                      step: int) -> tuple[list[Beam], list[int], bool]:
        """Every unfinished particle one step further; returns the swarm, which particles moved, and whether the
        budget ran out."""
        params = SamplingParams(n=1, max_tokens=self.max_step_tokens, temperature=self.temperature,
                                stop=(self.step_delimiter,))
        live = [(i, p) for i, p in enumerate(swarm) if not p.finished]
        seeds = [None if self.seed is None else self.seed + step * self.particles + i for i, _ in live]
        results = await asyncio.gather(*(policy.generate(messages, params.with_(seed=s), p.text)
                                         for (_, p), s in zip(live, seeds, strict=True)), return_exceptions=True)
        out, moved = list(swarm), []
        exhausted = False
        for (i, parent), res in zip(live, results, strict=True):
            if isinstance(res, BudgetExhausted):
                exhausted = True
                continue
            if isinstance(res, BaseException):
                raise res
            out[i] = self._child(parent, res[0])
            moved.append(i)
        return out, moved, exhausted

    def _child(self, parent: Beam, gen: Generation) -> Beam:
        ended = gen.finish_reason == "stop"
        finished = ended and (has_final_answer(gen.text) or not gen.text.strip())
        text = parent.text + gen.text + (self.step_delimiter if ended and not finished else "")
        return Beam(text, parent.step_scores, finished, 0, parent.tokens + gen.completion_tokens)

    async def _score(self, problem: Problem, verifier: Verifier, swarm: list[Beam],
                     moved: list[int]) -> tuple[list[Beam], bool]:
        """Score the particles that moved (the others keep their last score)."""
        if not moved:
            return swarm, False
        try:
            scores = await verifier.score(problem, [swarm[i].text for i in moved])
        except BudgetExhausted:
            return [p for p in swarm if p.finished and p.step_scores], True
        if len(scores) != len(moved):
            raise VerifierError(f"the step verifier returned {len(scores)} scores for {len(moved)} particles")
        out = list(swarm)
        for i, s in zip(moved, scores, strict=True):
            out[i] = replace(out[i], step_scores=(*out[i].step_scores, s.value))
        return out, False

    def _result(self, problem: Problem, finished: list[Beam], ledger: Ledger, exhausted: bool,
                trace: list[dict[str, Any]]) -> Result:
        from ponder.strategies.best_of_n import select

        # Resampling duplicates particles: each distinct finished text counts once, as one candidate.
        unique = list({p.text: p for p in finished}.values())
        candidates = tuple(Candidate(p.text, answer_for(problem, p.text), p.step_scores[-1] if p.step_scores else 0.0,
                                     "stop", p.tokens) for p in unique)
        answer, votes = select([c.answer for c in candidates], [c.score or 0.0 for c in candidates], self.select)
        if not candidates:
            trace.append({"event": "no_finished_particle"})
        text = max((c for c in candidates if c.answer == answer), key=lambda c: c.score or 0.0).text if answer \
            else ""
        return Result(answer, text, self.name, candidates, votes, ledger.usage_by_role, exhausted, tuple(trace))
