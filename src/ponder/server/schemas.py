"""The API edge: pydantic models of OpenAI's request bodies, plus ponder's `ponder` extension field.

Only requests are modelled here (they drive validation and the OpenAPI schema); responses are built as plain dicts
in responses.py. Unknown fields are accepted and ignored, as OpenAI-compatible servers do, so that clients that send
newer fields (tools, response_format, logprobs, ...) are not refused for it; those fields have no effect. Tool and
function messages are not supported (a 422). Everything is converted to ponder.types dataclasses at once in
routing.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
        default="open", description="What sort of answer: decides how answers are extracted for voting.")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ponder: PonderOptions | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    reasoning_effort: str | None = Field(
        default=None, max_length=64, description="low, medium or high (as configured): how hard to think.")


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="One prompt, or a list of prompts (n choices each).")
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
