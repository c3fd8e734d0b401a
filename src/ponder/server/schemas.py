"""The API edge: pydantic models of OpenAI's request bodies, plus ponder's `ponder` extension field.

Only requests are modelled here (they drive validation and the OpenAPI schema); responses are built as plain dicts
in responses.py. The sampler fields are OpenAI's plus vLLM's extras (top_k, min_p, repetition_penalty), and each
takes effect. Unknown fields that change nothing (user, metadata, ...) are accepted and ignored; a field that would
change the output but that ponder cannot honour (tools, response_format, logit_bias, guided decoding, ...) is
refused by `unhonoured()` with a 400 that names it, never silently dropped. Tool and function messages are
not supported. Everything is converted to ponder.types dataclasses at once in routing.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ponder.types import SAMPLER_FIELDS


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    """One part of a multi-part message; only text parts are understood."""

    type: str = "text"
    text: str = ""


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    """"developer" is read as "system" (OpenAI's newer name for it)."""
    content: str | list[TextPart] | None = None


class BudgetSpec(_Body):
    """Limits for one choice's solve; unset means unlimited."""

    tokens: int | None = Field(default=None, gt=0, description="Generated tokens, all roles together.")
    usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    calls: int | None = Field(default=None, gt=0)


class PonderOptions(_Body):
    """Full control over the compute: `{"strategy": "self_consistency", "params": {"n": 8}, "budget": {...}}`."""

    strategy: str | None = Field(default=None, description="A strategy name; see GET /v1/models for the list.")
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy hyperparameters, by field name.")
    budget: BudgetSpec | None = None
    kind: Literal["math", "code", "open"] = Field(
        default="open", description="What sort of answer: decides how answers are extracted for voting, and what "
        "reasoning_effort buys (open: longer thinking; math or code: more samples to vote over).")


class StreamOptions(_Body):
    include_usage: bool = False


UNHONOURED: dict[str, Any] = {
    # field -> the value(s) that mean "off" and so may be accepted; any other value changes the output
    "response_format": (None, {"type": "text"}),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "logit_bias": (None, {}), "prediction": (None,), "audio": (None,), "modalities": (None, ["text"]),
    "guided_json": (None,), "guided_regex": (None,), "guided_choice": (None,), "guided_grammar": (None,),
    "structured_outputs": (None,), "grammar": (None,), "json_schema": (None,), "best_of": (None, 1),
    "echo": (None, False), "suffix": (None, ""), "use_beam_search": (None, False), "min_tokens": (None, 0),
    "ignore_eos": (None, False), "stop_token_ids": (None, []), "bad_words": (None, []), "allowed_token_ids": (None,),
    "length_penalty": (None, 1, 1.0), "typical_p": (None, 1, 1.0), "mirostat": (None, 0), "web_search_options": (None,),
}
"""Fields that other servers honour and ponder does not, with the values that leave the output unchanged."""


class _Sampling(_Body):
    model_config = ConfigDict(extra="allow")  # kept, so that `unhonoured` can refuse what would change the output

    model: str = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    top_k: StrictInt | None = Field(default=None, ge=-1, description="vLLM: keep the k likeliest tokens; 0 or -1 off.")
    min_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False,
                                description="vLLM: drop tokens below min_p x the likeliest token's probability.")
    repetition_penalty: float | None = Field(default=None, gt=0, le=10, allow_inf_nan=False,
                                             description="vLLM: > 1 discourages repeating generated tokens.")
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ponder: PonderOptions | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def sampler(self) -> dict[str, Any]:
        """The sampler fields the request set (the rest stay the model's defaults)."""
        return {f: getattr(self, f) for f in SAMPLER_FIELDS if getattr(self, f) is not None}

    def unhonoured(self) -> tuple[str, Any] | None:
        """The first field that would change the output but that ponder does not honour, with its value."""
        for name, value in (self.model_extra or {}).items():
            if name in UNHONOURED and value not in UNHONOURED[name]:
                return name, value
        return None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = Field(default=None, description="Return the chosen answer's token log-probabilities.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def logprobs_asked(self) -> int | None:
        """None when not asked; else how many alternatives per token."""
        if not self.logprobs:
            if self.top_logprobs:
                raise ValueError("top_logprobs needs logprobs: true")
            return None
        return self.top_logprobs or 0
    reasoning_effort: str | None = Field(
        default=None, max_length=64, description="low, medium or high (as configured): how hard to think.")


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="One prompt, or a list of prompts (n choices each).")
    logprobs: int | None = Field(default=None, ge=0, le=5, description="Return token log-probabilities and this "
                                 "many alternatives per token (the completions API's meaning).")

    def logprobs_asked(self) -> int | None:
        return self.logprobs
    reasoning_effort: str | None = Field(default=None, max_length=64)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, for every error status."""

    error: ErrorDetail


Stop = tuple[str, ...]


def stop_of(stop: str | list[str] | None) -> Stop:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)
