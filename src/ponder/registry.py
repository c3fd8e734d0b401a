"""Names -> factories for backends, strategies, verifiers and tasks: the one place dispatch happens.

Built-ins are registered as "module:attribute" strings, imported on first use, so that `ponder --help` does not
import llama.cpp or Ray. Plugins add their own through the entry-point groups `ponder.strategies`,
`ponder.verifiers`, `ponder.backends` and `ponder.tasks`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from ponder.errors import UnknownName


class Registry:
    """A name -> factory table for one kind of thing."""

    def __init__(self, kind: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self._entries: dict[str, str | Callable[..., Any]] = dict(builtins)
        self._plugins_loaded = False

    def register(self, name: str, factory: str | Callable[..., Any]) -> None:
        self._entries[name] = factory

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under `name`; an UnknownName error lists the valid names."""
        self._load_plugins()
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownName(self.kind, name, self._entries) from None
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def create(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=f"ponder.{self.kind}s"):
            self._entries.setdefault(ep.name, ep.value)


STRATEGIES = Registry("strategy", {
    "cot": "ponder.strategies.cot:ChainOfThought",
    "self_consistency": "ponder.strategies.self_consistency:SelfConsistency",
    "best_of_n": "ponder.strategies.best_of_n:BestOfN",
    "adaptive_consistency": "ponder.strategies.adaptive_consistency:AdaptiveConsistency",
    "budget_forcing": "ponder.strategies.budget_forcing:BudgetForcing",
    "beam_search": "ponder.strategies.beam_search:BeamSearch",
    "particle_filtering": "ponder.strategies.particle_filtering:ParticleFiltering",
    "revision": "ponder.strategies.revision:Revision",
    "tournament": "ponder.strategies.tournament:Tournament",
    "program_aided": "ponder.strategies.program_aided:ProgramAided",
    "hybrid_consistency": "ponder.strategies.hybrid_consistency:HybridConsistency",
    "compute_optimal": "ponder.strategies.compute_optimal:ComputeOptimal",
})

VERIFIERS = Registry("verifier", {
    "math": "ponder.verifiers.math:MathVerifier",
    "code": "ponder.verifiers.code:CodeVerifier",
    "self_eval": "ponder.verifiers.self_eval:SelfEvalVerifier",
    "judge": "ponder.verifiers.judge:JudgeVerifier",
    "learned": "ponder.verifiers.learned:LearnedVerifier",
    "step_value": "ponder.verifiers.step_value:StepValueVerifier",
})

BACKENDS = Registry("backend", {
    "llamacpp": "ponder.backends.llamacpp:LlamaCppBackend",
    "openai": "ponder.backends.openai:OpenAIBackend",
    "scripted": "ponder.backends.scripted:ScriptedBackend",
})

# A task name may carry an argument after a colon: "reasoning_gym:chain_sum", "jsonl:path/to/file.jsonl".
TASKS = Registry("task", {
    "gsm8k": "ponder.tasks.gsm8k:GSM8K",
    "gsm_symbolic": "ponder.tasks.gsm_symbolic:GSMSymbolic",
    "reasoning_gym": "ponder.tasks.reasoning_gym:ReasoningGym",
    "humaneval": "ponder.tasks.humaneval:HumanEval",
    "champ": "ponder.tasks.champ:Champ",
    "jsonl": "ponder.tasks.jsonl:JsonlTask",
    "open": "ponder.tasks.open:OpenPrompts",
})
