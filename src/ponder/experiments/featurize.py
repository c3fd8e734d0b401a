"""`ponder verifier featurize RUN`: give a store's candidate samples their full features by re-scoring them.

A sweep stores the features its samples were drawn with (mean, minimum, spread and tail of the chosen tokens'
log-probabilities). Entropies, the final hidden state, and everything for a store made before features were
stored need the model to read each sample again: teacher forcing on the local engine (backends/rescoring.py).
The prompt is rebuilt exactly as the sweep sent it (the same plan and sampler strategy), checked against the
stored question. Resumable: each problem's features are one transaction; samples already re-scored are skipped.

It owns that loop; it ignores fitting and feature arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import InvalidParameter, StoreError
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, plan
from ponder.experiments.units import PoolUnit, build_strategy
from ponder.strategies.learning import CANDIDATE_POOL
from ponder.strategies.pooling import split_pool
from ponder.tasks import load_task
from ponder.verifiers.features import HIDDEN_PREFIX, sample_features


@dataclass(frozen=True)
class FeaturizeReport:
    samples: int
    """Samples re-scored now."""
    skipped: int
    """Samples that already had re-scored features."""
    tokens: int
    seconds: float


def featurize(run: str | Path, *, hidden: bool = False, n_threads: int = 2,
              on_problem: Callable[[int, int], None] | None = None, engine: object | None = None) -> FeaturizeReport:
    """Re-score every candidate-pool sample of the store at `run` that lacks re-scored features (see module)."""
    from ponder.backends.rescoring import Rescorer

    with Store.open(run) as store:
        config = SweepConfig.from_dict(store.config)
        stored = store.features()
        samples = [s for s in store.samples() if split_pool(s.pool)[0] == CANDIDATE_POOL]
        todo = [s for s in samples if not _done(stored.get((s.problem_id, s.pool, s.index)), hidden)]
        if not todo:
            return FeaturizeReport(0, len(samples), 0, 0.0)
        units = _pool_units(config, store, {s.problem_id for s in todo})
        own = engine is None
        if own:
            engine = _open_engine(config.model, n_threads)
        try:
            with Rescorer(engine, hidden=hidden, n_threads=n_threads) as rescorer:
                problems = sorted({(s.problem_id, s.pool) for s in todo})
                for i, (pid, pool) in enumerate(problems):
                    unit = units.get((pid, pool))
                    if unit is None:
                        raise StoreError(f"{run}: sample pool {pool!r} of {pid} is not in the sweep's plan; was "
                                         "the store made by another version of ponder?")
                    sampler = build_strategy(split_pool(pool)[0], dict(unit.settings))
                    messages = sampler.messages(unit.problem)
                    rows = []
                    for s in (s for s in todo if (s.problem_id, s.pool) == (pid, pool)):
                        scored = rescorer.score(messages, s.text)
                        tokens = sum(u.completion_tokens for u in s.usage_by_role.values())
                        values = sample_features(list(scored.logprobs), s.finish_reason == "length", tokens,
                                                 scored.entropies, scored.hidden).values
                        rows.append((s.problem_id, s.pool, s.index, values))
                    store.add_features(rows, "rescored")
                    if on_problem is not None:
                        on_problem(i + 1, len(problems))
                return FeaturizeReport(len(todo), len(samples) - len(todo), rescorer.tokens, rescorer.seconds)
        finally:
            if own:
                engine.close()  # type: ignore[union-attr]


def _done(entry: tuple[str, dict[str, float]] | None, hidden: bool) -> bool:
    if entry is None or entry[0] != "rescored":
        return False
    return not hidden or any(k.startswith(HIDDEN_PREFIX) for k in entry[1])


def _pool_units(config: SweepConfig, store: Store, wanted: set[str]) -> dict[tuple[str, str], PoolUnit]:
    """The sweep's own pool units for the problems `wanted` (so prompts are rebuilt exactly)."""
    task = load_task(config.task, **config.task_options)
    problems = [p for p in task.problems(config.limit, seed=config.seed) if p.id in wanted]
    asked = {r.problem_id: r.question for r in store.problems()}
    for p in problems:
        if asked.get(p.id) not in (None, p.question):
            raise StoreError(f"{p.id}: the task now gives another question than the stored one; the dataset "
                             "changed since the sweep, so its prompts cannot be rebuilt")
    return {(u.problem.id, u.pool): u for u in plan(config, problems) if isinstance(u, PoolUnit)}


def _open_engine(model: str, n_threads: int) -> object:
    if model.startswith(("http://", "https://")) or model == "scripted":
        raise InvalidParameter("model", model, "re-scoring reads the model's logits: it needs a local model "
                               "(a catalogue name or a .gguf file), not a server")
    from ponder.backends.factory import open_backend

    return open_backend(model, n_threads=n_threads, n_seq_max=2, n_ctx=4096)
