"""Choosing the compute for a request: which strategy, with which params and budget, on which problem.

The first of these that a request gives decides the strategy:

    1. `ponder: {"strategy": ..., "params": {...}, "budget": {...}}`   full control
    2. a model name `STRATEGY[-K]:MODEL`, e.g. `self_consistency-8:qwen2.5-coder-1.5b` (K: at_budget(k))
    3. `reasoning_effort` (low/medium/high), mapped by ServerConfig.open_efforts on an open prompt (the default
       kind of a request: thinking longer, budget forcing) and by ServerConfig.efforts on a math or code prompt
       (`ponder.kind`: more samples to vote over)
    4. nothing: a plain request, answered by `cot` with the model's own behaviour (no system prompt of ours,
       OpenAI's default temperature 1.0)

`ponder.params` and `ponder.budget` apply to whichever strategy is chosen. The request's temperature, max_tokens
and seed set the strategy fields of those names where it has them; `stop` and the sampler fields (top_p,
top_k, min_p, repetition/presence/frequency penalties) apply to every call (see tap.py). Strategies are built
by ponder.strategies.build, the same code as `ponder ask`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.backends.overrides import Overrides
from ponder.errors import InvalidParameter, UnknownName
from ponder.ledger import Budget
from ponder.registry import STRATEGIES
from ponder.server.config import ServerConfig
from ponder.server.errors import ApiError
from ponder.server.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest, stop_of
from ponder.strategies import at_budget
from ponder.strategies.build import build_strategy
from ponder.types import Message, Problem

# `STRATEGY-K:MODEL`: a prefix that looks like a strategy (lower-case words, optional -K) before the first colon.
_MODEL_STRATEGY = re.compile(r"^(?P<name>[a-z][a-z0-9_]*?)(?:-(?P<k>\d+))?:(?P<model>.+)$")
PLAIN_TEMPERATURE = 1.0  # OpenAI's default; our cot's own default (greedy) is for benchmarks
OPERATOR_ONLY = frozenset({"policy"})
"""Strategy fields that name a file on the server: only the operator's configuration may set them."""
_SEED_STRIDE = 1000  # choice i of a seeded request runs with seed + 1000 i, so its samples never overlap


@dataclass(frozen=True)
class ChatProblem(Problem):
    """A Problem that is a whole conversation: the strategy sees every turn, not only the last question."""

    conversation: tuple[Message, ...] = ()

    def messages(self, system: str | None = None) -> tuple[Message, ...]:
        """The conversation, with the strategy's system prompt (if any) placed before the client's own."""
        own = [m for m in self.conversation if m.role == "system"]
        rest = tuple(m for m in self.conversation if m.role != "system")
        texts = ([system] if system else []) + [m.content for m in own]
        return ((Message("system", "\n\n".join(texts)),) if texts else ()) + rest


@dataclass(frozen=True)
class Plan:
    """Everything needed to answer one request: what to run, on what, within what."""

    strategy: Any
    """The strategy for choice 0; choice i uses `for_choice(i)`."""
    label: str
    problems: tuple[Problem, ...]
    n: int
    budget: Budget
    overrides: Overrides
    model: str
    effort: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def live_content(self) -> bool:
        return bool(getattr(self.strategy, "streams_answer", False))

    def for_choice(self, i: int) -> Any:
        seed = getattr(self.strategy, "seed", None)
        if i == 0 or seed is None or not dataclasses.is_dataclass(self.strategy):
            return self.strategy
        return dataclasses.replace(self.strategy, seed=seed + i * _SEED_STRIDE)


def split_model(model: str) -> tuple[str | None, int | None, str]:
    """(strategy, k, model) from `STRATEGY[-K]:MODEL`; a name like `mistral:7b` stays a model name."""
    m = _MODEL_STRATEGY.match(model)
    if m is None or (m["name"] not in STRATEGIES and m["k"] is None):
        return None, None, model
    return m["name"], int(m["k"]) if m["k"] else None, m["model"]


def to_message(m: ChatMessage) -> Message:
    content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or ())
    return Message("system" if m.role in ("system", "developer") else m.role, content)


def _choose(req: ChatCompletionRequest | CompletionRequest, config: ServerConfig) -> tuple[str, int | None, dict]:
    """(strategy name, k, params) by the precedence in the module docstring."""
    opts = req.ponder
    params: dict[str, Any] = dict(opts.params) if opts else {}
    if OPERATOR_ONLY & set(params):
        name = sorted(OPERATOR_ONLY & set(params))[0]
        raise InvalidParameter(f"ponder.params.{name}", params[name], "a client cannot name files on this server: "
                               "the operator sets it (ponder serve --policy; reasoning_effort \"auto\" applies it)")
    params = _operator_verifier(params, config)
    from_model, k, _ = split_model(req.model)
    if opts and opts.strategy:
        return opts.strategy, k if from_model == opts.strategy else None, params
    if from_model:
        return from_model, k, params
    if req.reasoning_effort is not None:
        table = config.open_efforts if (opts.kind if opts else "open") == "open" else config.efforts
        effort = table.get(req.reasoning_effort) or config.efforts.get(req.reasoning_effort)
        if effort is None:
            raise InvalidParameter("reasoning_effort", req.reasoning_effort,
                                   f"use one of: {', '.join(dict.fromkeys([*table, *config.efforts]))}")
        return effort.strategy, effort.k, {**effort.params, **params}
    return "cot", None, {"system": "", **params}


def _operator_verifier(params: dict[str, Any], config: ServerConfig) -> dict[str, Any]:
    """A verifier with a file (learned:FILE) is the operator's to load (ponder serve --verifier); a client names
    it by its registry name only."""
    spec = params.get("verifier")
    if not isinstance(spec, str):
        return params
    if ":" in spec:
        raise InvalidParameter("ponder.params.verifier", spec, "a client cannot name files on this server: the "
                               "operator loads a scorer (ponder serve --verifier learned:FILE), then ask for "
                               f"verifier {spec.partition(':')[0]!r}")
    if spec in config.verifiers:
        return {**params, "verifier": config.verifiers[spec]}
    return params


def _strategy(name: str, k: int | None, params: dict[str, Any], req: Any, plain: bool,
              config: ServerConfig) -> Any:
    if name not in STRATEGIES:
        raise UnknownName("strategy", name, STRATEGIES.names(),
                          "choose one in ponder.strategy, the model name (STRATEGY[-K]:MODEL) or reasoning_effort")
    temperature = req.temperature if req.temperature is not None or not plain else PLAIN_TEMPERATURE
    max_tokens = req.token_limit() or (config.default_max_tokens if plain else None)
    options = {"temperature": temperature, "max_tokens": max_tokens, "seed": req.seed}
    built = build_strategy(name, options, params, skip_missing_options=True, param_label="ponder.params")
    if k is not None:
        if k < 1:
            raise InvalidParameter("model", req.model, "use K >= 1 in STRATEGY-K:MODEL")
        built = at_budget(built, k)
    return built


def _budget(req: Any, choices: int, config: ServerConfig) -> Budget:
    """One choice's budget: the request's, within the server's ceiling shared out over the choices."""
    cap = max(1, config.max_request_tokens // max(1, choices))
    spec = req.ponder.budget if req.ponder else None
    if spec is None:
        return Budget(tokens=cap)
    if spec.tokens is not None and spec.tokens * choices > config.max_request_tokens:
        raise InvalidParameter("ponder.budget.tokens", spec.tokens, f"this server allows at most "
                               f"{config.max_request_tokens} generated tokens per request (over {choices} choices): "
                               "ask for fewer, or start it with a larger --max-request-tokens")
    return Budget(tokens=min(spec.tokens or cap, cap), calls=spec.calls, usd=spec.usd, seconds=spec.seconds)


def check_limits(strategy: Any, config: ServerConfig, label: str = "ponder.params") -> None:
    """Every size a request set on its strategy within the server's ceilings: counts, token fields, sandbox time."""
    if not dataclasses.is_dataclass(strategy):
        return
    for f in dataclasses.fields(strategy):
        value = getattr(strategy, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if f.name.endswith("_tokens"):
            limit, flag = config.max_request_tokens, "--max-request-tokens"
        elif f.name.endswith("_s"):
            limit, flag = config.max_sandbox_seconds, "--max-sandbox-seconds"
        elif isinstance(value, int) and f.name not in ("seed",):
            limit, flag = config.max_samples, "--max-samples"
        else:
            continue
        if value > limit:
            raise InvalidParameter(f"{label}.{f.name}", value, f"this server allows at most {limit:g}: ask for "
                                   f"less, or start it with a larger {flag}")


def _check_model(model: str, served: str, config: ServerConfig) -> None:
    if config.strict_model and model != served:
        raise ApiError(404, f"the model {model!r} does not exist on this server; it serves {served!r}",
                       param="model", code="model_not_found")


def plan(req: ChatCompletionRequest | CompletionRequest, problems: Sequence[Problem], served: str,
         config: ServerConfig) -> Plan:
    """The Plan for a request (raises InvalidParameter / UnknownName / ApiError for a bad one)."""
    from_model, _, model = split_model(req.model)
    _check_model(model, served, config)
    if (bad := req.unhonoured()) is not None:
        raise InvalidParameter(bad[0], bad[1], "ponder serve does not support this field: leave it out (or set it "
                               "to its default) and see the README for what ponder honours")
    if req.n * len(problems) > config.max_n:
        raise InvalidParameter("n", req.n, f"ask for at most {config.max_n} choices per request "
                               f"(n x prompts = {req.n * len(problems)})")
    name, k, params = _choose(req, config)
    plain = not (req.ponder and req.ponder.strategy) and from_model is None and req.reasoning_effort is None
    strategy = _strategy(name, k, params, req, plain, config)
    check_limits(strategy, config)
    overrides = Overrides.of({**req.sampler(), "stop": stop_of(req.stop), **_logprobs(req, strategy)})
    if any(not s for s in overrides.stop):
        raise InvalidParameter("stop", req.stop, "remove the empty stop string")
    label = getattr(strategy, "name", name)
    return Plan(strategy, label, tuple(problems), req.n, _budget(req, req.n * len(problems), config), overrides, served,
                req.reasoning_effort, params)


def _logprobs(req: ChatCompletionRequest | CompletionRequest, strategy: Any) -> dict[str, Any]:
    """Overrides for a request that asks for log-probabilities; refused where they cannot be honoured."""
    try:
        top = req.logprobs_asked()
    except ValueError as exc:
        raise InvalidParameter("top_logprobs", getattr(req, "top_logprobs", None), str(exc)) from None
    if top is None:
        return {}
    if req.stream:
        raise InvalidParameter("logprobs", getattr(req, "logprobs", None), "log-probabilities are returned only "
                               "without streaming: drop stream, or drop logprobs")
    if not getattr(strategy, "answer_logprobs", False):
        raise InvalidParameter("logprobs", getattr(req, "logprobs", None),
                               f"strategy {getattr(strategy, 'name', '?')!r} builds its answer from several calls, so "
                               "it has no token log-probabilities to return: drop logprobs or use a sampling strategy")
    return {"logprobs": True, "top_logprobs": top}


def chat_problems(req: ChatCompletionRequest) -> tuple[Problem, ...]:
    conversation = tuple(to_message(m) for m in req.messages)
    question = next((m.content for m in reversed(conversation) if m.role == "user"), "")
    kind = req.ponder.kind if req.ponder else "open"
    return (ChatProblem(id="chat", question=question, kind=kind, conversation=conversation),)


def completion_problems(req: CompletionRequest) -> tuple[Problem, ...]:
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise InvalidParameter("prompt", req.prompt, "give a prompt, or a non-empty list of prompts")
    kind = req.ponder.kind if req.ponder else "open"
    return tuple(Problem(id=f"prompt-{i}", question=p, kind=kind) for i, p in enumerate(prompts))
