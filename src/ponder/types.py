"""The data contract between tasks, strategies, backends, verifiers and the ledger.

Every value that crosses a module boundary is one of these frozen dataclasses. Parameter names follow the
OpenAI API (as vLLM does). Validation happens here, once, and its errors name the parameter and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ponder.errors import InvalidParameter

Role = Literal["system", "user", "assistant"]
MeterRole = Literal["policy", "verifier", "judge"]
FinishReason = Literal["stop", "length", "budget", "error"]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    """Who speaks: "system", "user" or "assistant"."""
    content: str
    """The text of the message."""

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant"):
            raise InvalidParameter("role", self.role, 'use "system", "user" or "assistant"')

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def user(content: str) -> tuple[Message, ...]:
    """A one-message conversation: the commonest prompt."""
    return (Message("user", content),)


@dataclass(frozen=True)
class SamplerDefaults:
    """A model's recommended sampler (its generation_config), applied to the fields a request leaves unset.

    The neutral defaults keep the whole vocabulary and penalise nothing: pure temperature sampling.
    """

    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self) -> None:
        check_sampler(self)

    def to_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in SAMPLER_FIELDS}


SAMPLER_FIELDS = ("top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
"""The truncation and penalty fields of SamplingParams: None there means "the model's recommended value"."""


def check_sampler(p: Any) -> None:
    """Validate the sampler fields of `p` that are set, naming the field and the fix (vLLM's ranges)."""
    def number(name: str) -> float | None:
        v = getattr(p, name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidParameter(name, v, "use a finite number")
        return float(v)

    top_k = p.top_k
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < -1):
        raise InvalidParameter("top_k", top_k, "use a whole number: 0 or -1 keeps every token, k > 0 the k likeliest")
    if (v := number("top_p")) is not None and not 0.0 < v <= 1.0:
        raise InvalidParameter("top_p", v, "use a number in (0, 1]; 1 keeps every token")
    if (v := number("min_p")) is not None and not 0.0 <= v <= 1.0:
        raise InvalidParameter("min_p", v, "use a number in [0, 1]; 0 turns it off")
    if (v := number("repetition_penalty")) is not None and not 0.0 < v <= 10.0:
        raise InvalidParameter("repetition_penalty", v, "use a number in (0, 10]; 1 turns it off, > 1 discourages "
                               "repeats")
    for name in ("presence_penalty", "frequency_penalty"):
        if (v := number(name)) is not None and not -2.0 <= v <= 2.0:
            raise InvalidParameter(name, v, "use a number in [-2, 2]; 0 turns it off")


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request. Names and meanings follow OpenAI's chat completions API and vLLM's extras.

    The sampler fields (top_p, top_k, min_p and the penalties) default to None: "the model's recommended value"
    (its catalogue entry's SamplerDefaults locally; the server's own default over HTTP, as vLLM applies a model's
    generation_config). `resolved(defaults)` fills them in.
    """

    max_tokens: int = 512
    """Most new tokens per generation (on GSM8K the Qwen models need about 512)."""
    temperature: float = 0.8
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float | None = None
    """Nucleus sampling: keep the smallest token set whose probability mass reaches top_p (1 keeps all)."""
    n: int = 1
    """How many generations to return for this prompt; they share one prefill."""
    stop: tuple[str, ...] = ()
    """Strings that end a generation; the stop string itself is not included in the text."""
    seed: int | None = None
    """Base seed; generation i of the request uses seed + i, so a request is reproducible."""
    logprobs: bool = False
    """Return the log-probability of each generated token."""
    top_logprobs: int = 0
    """With logprobs, also return the this many most likely alternatives at each position."""
    top_k: int | None = None
    """Keep only the k likeliest tokens (vLLM's top_k); 0 or -1 keeps every token."""
    min_p: float | None = None
    """Drop tokens whose probability is below min_p times the likeliest token's (vLLM's min_p); 0 turns it off."""
    repetition_penalty: float | None = None
    """Divide the logits of tokens already generated by this (vLLM's repetition_penalty); 1 turns it off."""
    presence_penalty: float | None = None
    """Subtract this from the logits of tokens already generated, once (OpenAI's presence_penalty)."""
    frequency_penalty: float | None = None
    """Subtract this times the count of each token already generated (OpenAI's frequency_penalty)."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        if not isinstance(self.n, int) or self.n <= 0:
            raise InvalidParameter("n", self.n, "ask for at least one generation: n >= 1")
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise InvalidParameter("max_tokens", self.max_tokens, "use a positive whole number of tokens")
        if (isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float)
                or not math.isfinite(self.temperature) or self.temperature < 0):
            raise InvalidParameter("temperature", self.temperature, "use 0 (greedy) or a positive number")
        check_sampler(self)
        if not isinstance(self.top_logprobs, int) or not (0 <= self.top_logprobs <= 20):
            raise InvalidParameter("top_logprobs", self.top_logprobs, "use a whole number from 0 to 20")
        if any(not s for s in self.stop):
            raise InvalidParameter("stop", self.stop, "remove the empty stop string")

    def with_(self, **changes: Any) -> SamplingParams:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def sample_seed(self, i: int) -> int | None:
        """The seed of generation i of this request."""
        return None if self.seed is None else self.seed + i

    def resolved(self, defaults: SamplerDefaults | None = None) -> SamplingParams:
        """Every unset sampler field filled from `defaults` (neutral ones when None)."""
        d = defaults or SamplerDefaults()
        unset = {f: getattr(d, f) for f in SAMPLER_FIELDS if getattr(self, f) is None}
        return replace(self, **unset) if unset else self

    def sampler(self) -> dict[str, Any]:
        """The fields that decide the distribution a sample is drawn from (for provenance)."""
        return {"temperature": self.temperature, **{f: getattr(self, f) for f in SAMPLER_FIELDS}}


@dataclass(frozen=True)
class Usage:
    """Tokens and seconds spent by one call or many. Addable."""

    prompt_tokens: int = 0
    """Prompt tokens processed, cached ones included (OpenAI's meaning)."""
    completion_tokens: int = 0
    """Tokens generated."""
    cached_tokens: int = 0
    """Prompt tokens served from a shared prefix instead of being prefilled again."""
    thinking_tokens: int = 0
    """Of completion_tokens, those spent inside a thinking block."""
    calls: int = 0
    """Backend calls made."""
    seconds: float = 0.0
    """Wall-clock seconds of the calls (summed, so concurrent calls add up)."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.thinking_tokens + other.thinking_tokens,
            self.calls + other.calls,
            self.seconds + other.seconds,
        )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, float]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "thinking_tokens": self.thinking_tokens,
            "calls": self.calls,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability, and (if asked) the most likely alternatives."""

    token: str
    logprob: float
    top: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """Shapes that cost models need (read from GGUF metadata, or given for remote models)."""

    name: str
    n_params: int
    """Parameter count."""
    n_layers: int = 0
    d_model: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0
    head_dim: int = 0
    n_ctx_train: int = 0
    bytes_per_param: float = 2.0
    """Average weight bytes per parameter (about 0.56 for Q4_K_M, 2 for fp16)."""
    sha256: str | None = None


@dataclass(frozen=True)
class Generation:
    """One generated continuation."""

    text: str
    """The generated text (without the prompt or the prefix it continued)."""
    finish_reason: FinishReason
    """"stop" (end of turn or a stop string), "length" (max_tokens reached), "budget" (the ledger cut it)."""
    completion_tokens: int
    """How many tokens were generated."""
    logprobs: tuple[TokenLogprob, ...] | None = None
    """Per-token log-probabilities, when asked for."""
    usage: Usage = field(default_factory=Usage)
    """What producing this generation cost. For n>1 the shared prompt is charged to the first generation."""

    @property
    def mean_logprob(self) -> float | None:
        if not self.logprobs:
            return None
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs)

    @property
    def truncated(self) -> bool:
        return self.finish_reason != "stop"


@dataclass(frozen=True)
class Score:
    """A verifier's judgement of one candidate."""

    value: float
    """In [0, 1] for checkers and reward models; higher is better."""
    answer: str | None = None
    """The answer the verifier extracted from the candidate, normalised."""
    detail: str = ""
    """Why: a parse failure, a failing test, the judge's reason."""


Checker = Callable[[str], bool]


@dataclass(frozen=True)
class Problem:
    """One question and how to check an answer to it."""

    id: str
    """Stable identifier within its task (used for seeds and for resuming)."""
    question: str
    """The text given to the model."""
    answer: str | None = None
    """The reference answer, if there is one."""
    kind: Literal["math", "code", "open"] = "math"
    """What sort of answer: a math value, a program, or open-ended text with no checker."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Task-specific extras (unit tests, entry point, difficulty, source)."""
    checker: Checker | None = field(default=None, compare=False, repr=False)
    """Task-specific grading of a final answer string; None means the default for `kind`."""

    def messages(self, system: str | None = None) -> tuple[Message, ...]:
        msgs: list[Message] = [Message("system", system)] if system else []
        msgs.append(Message("user", self.question))
        return tuple(msgs)


@dataclass(frozen=True)
class Candidate:
    """One complete attempt at a problem, as a strategy saw it."""

    text: str
    answer: str | None
    """The extracted, normalised answer (None when none could be extracted)."""
    score: float | None = None
    """The verifier's score, when a verifier was used."""
    finish_reason: FinishReason = "stop"
    completion_tokens: int = 0
    mean_logprob: float | None = None
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None, repr=False, compare=False)
    """The generation's per-token log-probabilities, when they were asked for (the server returns them)."""


@dataclass(frozen=True)
class Result:
    """What a strategy returns: the answer and everything it took to get it."""

    answer: str | None
    """The chosen final answer (normalised), or None if no candidate produced one."""
    text: str
    """The full text of the chosen response."""
    strategy: str
    candidates: tuple[Candidate, ...] = ()
    votes: Mapping[str, float] = field(default_factory=dict)
    """Per distinct answer: its vote count or summed score."""
    usage_by_role: Mapping[str, Usage] = field(default_factory=dict)
    budget_exhausted: bool = False
    """True when a budget ran out and this is the best answer found so far."""
    trace: tuple[Mapping[str, Any], ...] = ()
    """Strategy-specific steps (rounds, beams, waits) for inspection."""

    @property
    def usage(self) -> Usage:
        total = Usage()
        for u in self.usage_by_role.values():
            total = total + u
        return total


def as_messages(messages: Sequence[Message] | str) -> tuple[Message, ...]:
    """Accept a bare string as a single user message."""
    if isinstance(messages, str):
        return user(messages)
    return tuple(messages)
