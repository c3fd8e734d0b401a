"""The sweep: tasks x strategies x budgets -> the store, resumable after any kill.

Strategies that declare `pooled` (ponder.strategies.pooling) share the pools they name: N = max(budgets) samples
per pool and problem, drawn once, from which the curves derive every smaller budget (as search-and-learn's
score.py does). A strategy with no `at_budget` (greedy CoT) runs once per problem; the rest (beam search, DVTS,
budget forcing, revision, tournament) run once per budget. No strategy is named here. The driver plans the work
units, skips those the store already holds, hands the rest to an Executor, and alone writes each finished unit in
one transaction.

Every unit's seeds come from the run seed and the unit's own key (`stable_seed`), never from the order units run
in. A `deterministic` sweep also needs a backend that decodes each request alone (the local engine's
`deterministic=True`): then in-process, resumed and Ray runs store the same rows, bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ponder.backends.credentials import redact_url
from ponder.backends.overrides import Overrides
from ponder.errors import InvalidParameter, StoreError
from ponder.experiments.executor import Executor, InProcessExecutor
from ponder.experiments.judged import baseline_strategy
from ponder.experiments.judging import judged_keys, plan_judging
from ponder.experiments.store import Store, config_differences
from ponder.experiments.units import PoolUnit, SearchUnit, Unit, UnitResult, build_strategy, run_unit
from ponder.registry import STRATEGIES
from ponder.strategies.pooling import at_temperature, declared, split_pool
from ponder.tasks import load_task
from ponder.types import SAMPLER_FIELDS, Problem, SamplingParams

VOLATILE = frozenset({"created", "ponder_version"})
"""Settings recorded for provenance that may differ on resume."""
ADDED_SETTINGS: Mapping[str, Any] = {"deterministic": False, "kv_cache_type": "f16"}
"""Settings added to the run config after stores were first made, with the value an older store was made with."""

__all__ = ["Executor", "InProcessExecutor", "SweepConfig", "check_backend", "plan", "run_sweep", "run_unit"]


def parse_budgets(text: str | Sequence[int]) -> tuple[int, ...]:
    """"1,2,4,8" -> (1, 2, 4, 8); a clear error for an empty or non-increasing list."""
    raw = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    try:
        budgets = tuple(int(b) for b in raw if b != "")
    except ValueError:
        raise InvalidParameter("budgets", text, "give whole numbers separated by commas, e.g. 1,2,4,8") from None
    _check_budgets(budgets)
    return budgets


def _check_budgets(budgets: Sequence[int]) -> None:
    if not budgets:
        raise InvalidParameter("budgets", list(budgets), "give at least one budget, e.g. 1,2,4,8")
    if any(not isinstance(b, int) or b < 1 for b in budgets):
        raise InvalidParameter("budgets", list(budgets), "every budget must be a whole number >= 1")
    if any(b >= c for b, c in itertools.pairwise(budgets)):
        raise InvalidParameter("budgets", list(budgets), "list them in strictly increasing order, e.g. 1,2,4,8")


@dataclass(frozen=True)
class SweepConfig:
    """Everything that decides what a sweep computes (execution knobs such as concurrency are not here)."""

    task: str
    model: str
    strategies: tuple[str, ...]
    budgets: tuple[int, ...]
    limit: int | None = None
    """How many problems (the task's first ones; all when None)."""
    seed: int = 0
    max_tokens: int = 512
    """Tokens per sample. GSM8K needs about 512 with Qwen: at 256, 64% of answers were cut off."""
    temperature: float = 0.7
    """Pool sampling temperature (greedy CoT always uses 0); Qwen2.5's recommended value."""
    task_options: Mapping[str, Any] = field(default_factory=dict)
    sampler: Mapping[str, Any] = field(default_factory=dict)
    """Sampler fields for every call (top_p, top_k, min_p, repetition/presence/frequency penalties); the rest are
    the model's recommended defaults. {"top_k": 0, "top_p": 1, "repetition_penalty": 1} is pure temperature."""
    temperatures: tuple[float, ...] = ()
    """Draw every pool at each of these temperatures instead (a compute knob: the curves and the compute-optimal
    policy then choose a temperature as they choose a budget). Pools are named `cot@T=0.3`, curves
    `self_consistency[T=0.3]`."""
    deterministic: bool = False
    """Fix every request's batch composition (each decoded alone, no prefix cache, no flash attention) so that
    in-process, resumed and Ray runs store identical rows; costs throughput (README). Needs a backend opened
    with it."""
    kv_cache_type: str = "f16"
    """How a local model's KV cache stores keys and values: "f16", or quantised "q8_0" / "q4_0" (fewer bytes per
    decode step over long thinking; what it does to accuracy is what a sweep with it measures). Local models only."""
    judge: str | None = None
    """The model that judges answers to open problems against the baseline (a catalogue name, .gguf path or
    server URL, as `model`); None: the sweep's own model judges."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategies", tuple(dict.fromkeys(self.strategies)))
        object.__setattr__(self, "budgets", tuple(self.budgets))
        if not self.strategies:
            raise InvalidParameter("strategies", "", "name at least one, e.g. cot,self_consistency")
        for name in self.strategies:
            STRATEGIES.get(name)  # UnknownName lists the valid strategies
        _check_budgets(self.budgets)
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise InvalidParameter("limit", self.limit, "use a whole number >= 1, or leave it out for all")
        SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature)  # validates, naming the field
        object.__setattr__(self, "temperatures", tuple(dict.fromkeys(self.temperatures)))
        for t in self.temperatures:
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 2:
                raise InvalidParameter("temperatures", list(self.temperatures),
                                       "give sampling temperatures in (0, 2], e.g. 0.3,0.6,0.9")
        unknown = set(self.sampler) - set(SAMPLER_FIELDS)
        if unknown:
            raise InvalidParameter("sampler", sorted(unknown), f"use sampler fields: {', '.join(SAMPLER_FIELDS)}")
        Overrides.of(self.sampler)  # validates the values, naming the field
        object.__setattr__(self, "sampler", dict(sorted(self.sampler.items())))
        if not isinstance(self.deterministic, bool):
            raise InvalidParameter("deterministic", self.deterministic, "use true or false")
        from ponder.compute import KVCacheType

        if self.kv_cache_type not in {t.value for t in KVCacheType}:
            raise InvalidParameter("kv_cache_type", self.kv_cache_type,
                                   f"use one of: {', '.join(t.value for t in KVCacheType)}")
        if self.deterministic and self.kv_cache_type != "f16":
            raise InvalidParameter("kv_cache_type", self.kv_cache_type, "a quantised KV cache needs flash attention, "
                                   "whose numbers a deterministic sweep cannot fix: drop --deterministic or keep f16")
        if self.judge is not None and (not isinstance(self.judge, str) or not self.judge.strip()):
            raise InvalidParameter("judge", self.judge, "name a model (as --model), or leave it out to let the "
                                   "sweep's model judge")

    @property
    def pool_kinds(self) -> tuple[str, ...]:
        """The pools the pooled strategies draw (the sampler strategies' names), in order of first mention."""
        return tuple(dict.fromkeys(pool for s in self.strategies for p in declared(STRATEGIES.get(s))
                                   for pool in p.pools))

    @property
    def pools(self) -> tuple[tuple[str, float], ...]:
        """(pool name, temperature) of every pool drawn: each kind at each of `temperatures`, or at `temperature`."""
        if not self.temperatures:
            return tuple((kind, self.temperature) for kind in self.pool_kinds)
        return tuple((at_temperature(kind, t), t) for t in self.temperatures for kind in self.pool_kinds)

    @property
    def scored_pools(self) -> frozenset[str]:
        """Pool kinds whose samples a pooled strategy needs verifier scores on."""
        return frozenset(pool for s in self.strategies for p in declared(STRATEGIES.get(s)) if p.needs_scores
                         for pool in p.pools)

    @property
    def pool_size(self) -> int:
        return self.budgets[-1]

    @property
    def once(self) -> tuple[str, ...]:
        """Strategies with no budget to scale (greedy CoT): run once per problem."""
        return tuple(s for s in self.strategies if not declared(STRATEGIES.get(s)) and not _scales(s))

    @property
    def searched(self) -> tuple[str, ...]:
        """Strategies run once per budget."""
        return tuple(s for s in self.strategies if not declared(STRATEGIES.get(s)) and _scales(s))

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "model": redact_url(self.model), "strategies": list(self.strategies),
                "budgets": list(self.budgets), "limit": self.limit, "seed": self.seed,
                "max_tokens": self.max_tokens, "temperature": self.temperature,
                "task_options": dict(self.task_options), "sampler": dict(self.sampler),
                **({"temperatures": list(self.temperatures)} if self.temperatures else {}),
                **({"judge": redact_url(self.judge)} if self.judge else {}),
                "deterministic": self.deterministic, "kv_cache_type": self.kv_cache_type}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepConfig:
        return cls(d["task"], d["model"], tuple(d["strategies"]), tuple(d["budgets"]), d.get("limit"),
                   d.get("seed", 0), d.get("max_tokens", 512), d.get("temperature", 0.8),
                   dict(d.get("task_options") or {}), dict(d.get("sampler") or {}),
                   tuple(d.get("temperatures") or ()), d.get("deterministic", ADDED_SETTINGS["deterministic"]),
                   d.get("kv_cache_type", ADDED_SETTINGS["kv_cache_type"]), d.get("judge"))


def _scales(name: str) -> bool:
    return callable(getattr(STRATEGIES.get(name), "at_budget", None))


def takes(name: str, kind: str) -> bool:
    """Does strategy `name` take problems of `kind`? (a strategy without `problem_kinds` takes every kind)"""
    kinds = getattr(STRATEGIES.get(name), "problem_kinds", None)
    return kinds is None or kind in kinds


def _check_kind(name: str, problem: Problem) -> None:
    if not takes(name, problem.kind):
        kinds = STRATEGIES.get(name).problem_kinds
        fit = ", ".join(n for n in STRATEGIES.names() if takes(n, problem.kind))
        article = "an" if problem.kind[0] in "aeiou" else "a"
        raise InvalidParameter("strategies", name, f"{problem.id} is {article} {problem.kind} problem and {name} takes "
                               f"only {', '.join(kinds)} problems: drop it from --strategies for this task "
                               f"(strategies that take {problem.kind} problems: {fit})")


def stable_seed(*parts: object) -> int:
    """A seed from `parts` that is the same in every process and Python version (unlike hash())."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 2**20)  # room for base + i


def _kind_settings(kind: str, max_tokens: int) -> dict[str, Any]:
    # Programs are asked for by the code task's own question; the math system prompt would ask for "The answer is N".
    # An open prompt asks for no answer line (the baseline is the model's direct answer; budget forcing keeps its own
    # open prompt), and has nothing to check: a verifier-using strategy scores with the judge, as its pool is scored.
    # Every open response is capped alike (budget forcing's answer after thinking included), so none wins by length.
    if kind == "open":
        return {"system": "", "verifier": "judge", "open_answer_max_tokens": max_tokens}
    return {"system": ""} if kind == "code" else {}


def once_for(config: SweepConfig, problem: Problem) -> tuple[str, ...]:
    """The strategies run once on `problem`: an open problem also gets the baseline it is judged against."""
    if problem.kind != "open" or baseline_strategy() in config.once:
        return config.once
    return (baseline_strategy(), *config.once)


def plan(config: SweepConfig, problems: Sequence[Problem]) -> list[Unit]:
    """Every unit of the sweep, problem by problem (so accuracy shows up early). Judging comes after:
    `plan_judging`, once the answers it compares are stored."""
    units: list[Unit] = []
    sampler = _items(config.sampler)
    for p in problems:
        base = {"max_tokens": config.max_tokens, **_kind_settings(p.kind, config.max_tokens)}
        for name in (*config.strategies, *config.pool_kinds):
            _check_kind(name, p)
        for name in once_for(config, p):  # at its own default temperature (greedy for cot)
            units.append(SearchUnit(p, name, 1, _items({**base, "seed": stable_seed(config.seed, p.id, name)}),
                                    sampler))
        for pool, temperature in config.pools:
            units.append(PoolUnit(p, pool, config.pool_size, stable_seed(config.seed, p.id, pool),
                                  _items({**base, "temperature": temperature}),
                                  self_eval=split_pool(pool)[0] in config.scored_pools, sampler=sampler))
        for name in config.searched:
            for k in config.budgets:
                units.append(SearchUnit(p, name, k, _items({**base, "seed": stable_seed(config.seed, p.id, name, k)}),
                                        sampler))
    return units


def _items(d: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(d.items()))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def strategy_settings(config: SweepConfig, kind: str) -> dict[str, dict[str, Any]]:
    """Every strategy's fields at budget 1 as the sweep sets them (prompts included), for provenance."""
    out = {}
    for name in {*config.strategies, *config.pool_kinds}:
        s = build_strategy(name, {"max_tokens": config.max_tokens, **_kind_settings(kind, config.max_tokens)})
        if dataclasses.is_dataclass(s):
            out[name] = {f.name: _jsonable(getattr(s, f.name)) for f in dataclasses.fields(s) if f.name != "seed"}
    return dict(sorted(out.items()))


def model_identity(backend: object) -> dict[str, Any]:
    """The model's name, sha256 (from the verified-pull sidecar, else hashed now) and shapes."""
    from ponder.backends.base import model_info

    info = model_info(backend)
    sha = info.sha256 if info else None
    path = getattr(backend, "path", None)
    if sha is None and isinstance(path, Path) and path.is_file():
        from ponder.models.cache import recorded_sha256, sha256_file

        sha = recorded_sha256(path) or sha256_file(path)
    info_dict = dataclasses.asdict(info) if info else None
    if info_dict is not None:
        info_dict["sha256"] = sha
    return {"model_name": getattr(backend, "model", ""), "model_sha256": sha, "model_info": info_dict}


def settings(config: SweepConfig, backend: object, kind: str) -> dict[str, Any]:
    """The run's full provenance, stored in the run table and compared on resume."""
    from ponder import __version__

    return {**config.to_dict(), **model_identity(backend), "pools": [name for name, _ in config.pools],
            "pool_size": config.pool_size, "sampling": sampling_chain(config, backend),
            "strategy_settings": strategy_settings(config, kind), "ponder_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def sampling_chain(config: SweepConfig, backend: object) -> dict[str, Any]:
    """The whole sampler the pools are drawn with: the sweep's fields over the backend's model defaults (an HTTP
    server applies its own defaults to the fields not sent: those are recorded as None)."""
    params = SamplingParams(max_tokens=config.max_tokens, temperature=config.temperature, **config.sampler)
    defaults = getattr(backend, "sampler_defaults", None)
    return {"max_tokens": config.max_tokens, **(params.resolved(defaults) if defaults else params).sampler()}


def with_added_settings(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run config with the settings added since filled in as an older store was made (ADDED_SETTINGS)."""
    return {**ADDED_SETTINGS, **stored}


def grown_limit(stored: int | None, given: int | None) -> int | None:
    """The larger limit a resume asks for (a run grows by the task's next problems), None if it keeps its own;
    a smaller one is refused, since the rows of the problems it would drop are already in the store."""
    if given is None or given == stored:
        return None
    if stored is None or given < stored:
        held = "every problem of the task" if stored is None else f"the first {stored} problems"
        raise InvalidParameter("limit", given, f"the run holds {held} and a run never shrinks: resume it without "
                               "--limit (the report can read any of its problems), or start a new --out")
    return given


def check_resume(stored: Mapping[str, Any], given: Mapping[str, Any], path: Path | str) -> None:
    """Refuse to resume a run made with other settings, naming each difference."""
    stored = with_added_settings(stored)
    diff = config_differences({k: v for k, v in stored.items() if k not in VOLATILE},
                              {k: v for k, v in given.items() if k not in VOLATILE})
    if diff:
        raise StoreError(f"{path} was made with other settings; refusing to mix them into one run:\n  "
                         + "\n  ".join(diff) + "\nresume with the original settings, or start a new --out")


@dataclass
class Tally:
    """Live accuracy: each strategy run once or per budget at its first budget, and the majority of each full pool."""

    accuracy: dict[str, list[bool]] = field(default_factory=dict)
    truncated: int = 0
    rows: int = 0
    judged: bool = False
    """An open task: results have no accuracy, only their judged score against the baseline."""
    wins: dict[str, list[float]] = field(default_factory=dict)

    def add(self, res: UnitResult) -> None:
        from ponder.experiments.judged import Verdict
        from ponder.strategies.pooling import PoolSample, majority

        if res.judgment is not None:
            j = res.judgment
            self.wins.setdefault(j.strategy, []).append(Verdict(j.response_first, j.baseline_first).score)
            return
        rows: Sequence[Any] = res.samples or ([res.result] if res.result else [])
        self.rows += len(rows)
        self.truncated += sum(r.finish_reason == "length" for r in rows)
        if res.result is not None and res.result.budget == 1 and not self.judged:
            self.accuracy.setdefault(res.result.strategy, []).append(res.result.correct)
        if res.samples:
            winner = majority([PoolSample(s.answer, s.mean_logprob) for s in res.samples])
            self.accuracy.setdefault(f"{res.samples[0].pool} vote", []).append(
                any(s.correct for s in res.samples if winner is not None and s.answer == winner))

    @property
    def greedy(self) -> list[bool]:
        return self.accuracy.get("cot", [])

    def line(self) -> str:
        parts = [f"{name} {100 * sum(v) / len(v):.0f}% ({len(v)})" for name, v in self.accuracy.items() if v]
        parts += [f"{name} wins {100 * sum(v) / len(v):.0f}% ({len(v)})" for name, v in self.wins.items() if v]
        if self.rows:
            parts.append(f"cut off {100 * self.truncated / self.rows:.0f}%")
        return " | ".join(parts)


def check_backend(config: SweepConfig, backend: object) -> None:
    """Refuse a deterministic sweep on a backend whose batches it cannot fix (an HTTP server batches as it likes)."""
    if config.deterministic and not getattr(backend, "deterministic", False):
        raise InvalidParameter("deterministic", True, f"{type(backend).__name__} cannot fix its batches: use a local "
                               "model opened with deterministic=True (the CLI does this), or drop --deterministic")


async def run_sweep(config: SweepConfig, backend: object, store: Store, executor: Executor | None = None,
                    on_start: Callable[[int, int], None] | None = None,
                    on_result: Callable[[UnitResult], None] | None = None, judge: object | None = None) -> Tally:
    """Run every unit the store lacks and write each as it finishes, then judge the answers to open problems
    (on `judge`, else the policy's backend; an `executor` brings its own). Safe to call again after any
    interruption."""
    check_backend(config, backend)
    if with_added_settings(store.config).get("deterministic") != config.deterministic:
        raise StoreError(f"{store.path} was made with deterministic={not config.deterministic}: resume it in the "
                         "mode it was made in")
    task = load_task(config.task, **config.task_options)
    problems = task.problems(config.limit, seed=config.seed)
    stored_ids = store.problem_ids()
    if stored_ids != [p.id for p in problems][:len(stored_ids)]:
        raise StoreError(f"{store.path} holds other problems than task {config.task!r} yields now "
                         "(the task data changed?); start a new --out")
    if len(stored_ids) < len(problems):  # a new run, or one grown with --limit
        store.add_problems(problems)
    units = plan(config, problems)
    judgments = judged_keys(units)
    done = store.done_keys()
    todo = [u for u in units if u.key not in done]
    if on_start:
        total = len(units) + len(judgments)
        on_start(total, total - len(todo) - sum(k not in done for k in judgments))
    tally = Tally(judged=task.kind == "open")
    executor = executor or InProcessExecutor(backend, judge=judge)
    session, started = store.start_session(), time.monotonic()

    async def run(batch: Sequence[Unit]) -> None:
        async for res in executor.run(batch):
            _write(store, res)
            store.set_session_seconds(session, time.monotonic() - started)
            tally.add(res)
            if on_result:
                on_result(res)

    await run(todo)
    if judgments:  # every answer is stored now: judge those not judged yet
        await run([u for u in plan_judging(problems, store.results(), store.samples()) if u.key not in done])
    return tally


def _write(store: Store, res: UnitResult) -> None:
    if res.samples:
        store.add_samples(res.samples)
    if res.result is not None:
        store.add_result(res.result)
    if res.judgment is not None:
        store.add_judgment(res.judgment)
