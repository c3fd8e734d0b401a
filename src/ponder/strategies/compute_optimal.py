"""Compute-optimal: probe the question, bin it by how much the probe agrees, run what a policy file chose for it.

Snell et al. (2024) spend test-time compute per question difficulty. `ponder report` fits that choice on a sweep
(ponder.experiments.policy, cross-validated) and writes policy.json: the probe (k chain-of-thought samples), the
agreement edges of the bins, and per bin a strategy, its params and budget. This strategy applies the file: the
probe's tokens are charged like any other, and the trace says which bin and strategy were chosen and what the
probe cost. It owns the file's format and the probe's rule; fitting lives in experiments/.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.ledger import Ledger
from ponder.strategies.base import at_budget
from ponder.strategies.common import SYSTEM_PROMPT, candidate, result
from ponder.types import Problem, Result, SamplingParams

POLICY_KIND = "ponder.compute_optimal_policy"
AGREEMENT_EDGES = (1.0, 0.5)
"""Bin 1 (easy): every probe sample agrees; bin 2: at least half agree; bin 3 (hard): fewer."""


def agreement(answers: Sequence[str | None]) -> float:
    """Share of the answers that are the modal one (no answer disagrees with everything)."""
    counts = Counter(a for a in answers if a is not None)
    return (counts.most_common(1)[0][1] if counts else 0) / max(1, len(answers))


def bin_of(value: float, edges: Sequence[float] = AGREEMENT_EDGES) -> int:
    """1 = easiest .. len(edges) + 1 = hardest, by the agreement edges."""
    return next((i + 1 for i, edge in enumerate(edges) if value >= edge - 1e-12), len(edges) + 1)


def load_policy(path: str | Path) -> dict[str, Any]:
    """Read and check a policy file; InvalidParameter names what is wrong and how to get a good one."""
    fix = "write one with `ponder report RUN` (RUN/report/policy.json)"
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidParameter("policy", str(path), f"cannot read it ({exc}): {fix}") from None
    if not isinstance(doc, dict) or doc.get("kind") != POLICY_KIND or doc.get("version") != 1:
        raise InvalidParameter("policy", str(path),
                               f"not a ponder policy file (kind {POLICY_KIND!r}, version 1): {fix}")
    choices = doc.get("choices")
    if not isinstance(choices, dict) or not choices or not isinstance(doc.get("probe"), dict):
        raise InvalidParameter("policy", str(path), f"it has no probe or no choices: {fix}")
    return doc


@dataclass(frozen=True, kw_only=True)
class ComputeOptimal:
    """Probe, bin by agreement, run the policy's choice for the bin (Snell et al. 2024, compute-optimal scaling)."""

    name: ClassVar[str] = "compute_optimal"
    problem_kinds: ClassVar[tuple[str, ...]] = ("math", "code")
    """It compares answers for equality (or needs a final-answer line): open prompts have neither."""
    paper: ClassVar[str] = "Snell et al. 2024, Scaling LLM Test-Time Compute Optimally (arXiv:2408.03314)"

    policy: str
    """Path to the policy.json that `ponder report` wrote."""
    seed: int | None = None
    """Base seed of the probe and of the chosen strategy."""

    def __post_init__(self) -> None:
        # Read once, when the strategy is built: a bad file fails before any compute, and no solve reads it again.
        object.__setattr__(self, "_document", load_policy(self.policy))

    @property
    def document(self) -> Mapping[str, Any]:
        """The policy file's contents, as read when the strategy was built."""
        return self._document  # type: ignore[attr-defined, no-any-return]

    def choice(self, bin_: int) -> Mapping[str, Any]:
        """The policy's choice for a bin; a bin it never saw takes the hardest bin's choice (spend, don't guess)."""
        choices = self.document["choices"]
        return choices.get(str(bin_)) or choices[max(choices, key=int)]

    def chosen_strategy(self, bin_: int) -> Any:
        from ponder.strategies.build import build_strategy

        c = self.choice(bin_)
        strategy = build_strategy(c["strategy"], {"seed": self.seed}, dict(c.get("params") or {}),
                                  skip_missing_options=True, param_label="policy")
        return at_budget(strategy, int(c.get("budget", 1)))

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        probe = self.document["probe"]
        params = SamplingParams(max_tokens=int(probe.get("max_tokens") or 512), n=int(probe.get("samples", 2)),
                                temperature=float(probe.get("temperature") or 0.7), seed=self.seed)
        try:
            gens = await ledger.meter(backend, "policy").generate(problem.messages(SYSTEM_PROMPT), params)
        except BudgetExhausted:
            return result(self.name, ledger, answer=None, exhausted=True)
        value = agreement([candidate(g, problem=problem).answer for g in gens])
        bin_ = bin_of(value, (self.document.get("bins") or {}).get("edges", AGREEMENT_EDGES))
        chosen = self.chosen_strategy(bin_)
        outcome = await chosen.solve(problem, backend, ledger)
        decision = {"event": "policy", "bin": bin_, "agreement": value, "strategy": self.choice(bin_).get("label"),
                    "probe_tokens": sum(g.completion_tokens for g in gens)}
        return replace(outcome, strategy=self.name, trace=(decision, *outcome.trace),
                       usage_by_role=ledger.usage_by_role)
