"""The OpenAI wire format: ponder's types to request bodies, and response bodies back to Generations.

Pure functions, no I/O. Also owns the ways a server can continue an assistant prefix (`PrefixMode`) and which
servers support which (see `backends/openai.py`'s docstring for the table).

Usage: OpenAI reports one `usage` per response (prompt tokens once, completion tokens summed over choices). The
prompt, and `prompt_tokens_details.cached_tokens`, are charged to the first generation (the contract in types.py);
completion tokens go to each choice: exactly when logprobs give its token count, otherwise the total is split in
proportion to the choices' text lengths. A response WITHOUT usage (some proxies, some Ollama versions) is estimated
at one token per 4 characters (prompt and completion, each at least 1), never left at zero, so budgets still bite;
`parse_response` reports that it estimated, and the backend counts such responses in `usage_estimated`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ponder.errors import BackendError
from ponder.types import SAMPLER_FIELDS, FinishReason, Generation, Message, SamplingParams, TokenLogprob, Usage

PrefixMode = Literal["auto", "continue_final_message", "assistant_prefill", "completions", "none"]
Render = Callable[[Sequence[Message], str], str]
"""Renders a chat plus an assistant prefix to raw prompt text (for prefix_mode="completions")."""

PREFIX_MODES: tuple[str, ...] = ("auto", "continue_final_message", "assistant_prefill", "completions", "none")

# /v1/models "owned_by" -> how that server continues a prefix. "me" is llama-cpp-python's server, which always
# appends a new assistant header, so only the completions API (with a known template) continues a prefix there.
SERVER_PREFIX_MODES: Mapping[str, PrefixMode] = {
    "vllm": "continue_final_message",
    "sglang": "continue_final_message",
    "llamacpp": "assistant_prefill",
    "library": "assistant_prefill",
    "ollama": "assistant_prefill",
    "me": "completions",
    "openai": "none",
    "system": "none",
    "openai-internal": "none",
}

_FINISH: Mapping[str, FinishReason] = {
    "stop": "stop", "eos": "stop", "end_turn": "stop", "stop_sequence": "stop", "tool_calls": "stop",
    "function_call": "stop", "length": "length", "max_tokens": "length", "content_filter": "error",
}

NO_PREFIX_HELP = (
    "this server cannot continue an assistant prefix. vLLM and SGLang can (prefix_mode='continue_final_message'), "
    "llama.cpp's llama-server and Ollama can (prefix_mode='assistant_prefill'), and llama-cpp-python's server "
    "can through the completions API (prefix_mode='completions' with render=chatml or your model's template); "
    "OpenAI's API cannot"
)


def chatml(messages: Sequence[Message], prefix: str) -> str:
    """The ChatML template (Qwen 2.5, SmolLM2) with the assistant turn left open at `prefix`."""
    turns = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
    return f"{turns}<|im_start|>assistant\n{prefix}"


@dataclass(frozen=True)
class WireRequest:
    """One HTTP request to make: the path under base_url and the JSON body."""

    path: str
    """"/chat/completions" or "/completions"."""
    body: Mapping[str, Any]


def sampling_fields(params: SamplingParams, chat: bool) -> dict[str, Any]:
    """SamplingParams as OpenAI request fields (n only when > 1: some servers reject the field)."""
    body: dict[str, Any] = {"max_tokens": params.max_tokens, "temperature": params.temperature}
    # Sampler fields go only when set: unset means the server's (the model's) default, as vLLM reads it.
    # top_k, min_p and repetition_penalty are vLLM/llama.cpp/SGLang extras that OpenAI's own API rejects.
    body.update({f: getattr(params, f) for f in SAMPLER_FIELDS if getattr(params, f) is not None})
    if params.n > 1:
        body["n"] = params.n
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.logprobs:
        if chat:
            body["logprobs"] = True
            if params.top_logprobs:
                body["top_logprobs"] = params.top_logprobs
        else:
            body["logprobs"] = params.top_logprobs
    return body


def build_request(model: str, messages: Sequence[Message], params: SamplingParams, prefix: str,
                  mode: PrefixMode, render: Render | None, stream: bool = False) -> WireRequest:
    """The request for `messages` continued from `prefix` in prefix mode `mode` (already resolved, not "auto")."""
    chat = [m.to_dict() for m in messages]
    extra: dict[str, Any] = {"stream": True} if stream else {}
    if prefix:
        if mode == "none":
            raise BackendError(NO_PREFIX_HELP)
        if mode == "completions":
            if render is None:
                raise BackendError("prefix_mode='completions' needs render=: a function (messages, prefix) -> "
                                   "prompt text, such as ponder.backends.openai_wire.chatml")
            body = {"model": model, "prompt": render(messages, prefix), **sampling_fields(params, False), **extra}
            return WireRequest("/completions", body)
        chat.append({"role": "assistant", "content": prefix})
        if mode == "continue_final_message":
            extra |= {"continue_final_message": True, "add_generation_prompt": False}
    body = {"model": model, "messages": chat, **sampling_fields(params, True), **extra}
    return WireRequest("/chat/completions", body)


def estimate_tokens(text: str) -> int:
    """About one token per 4 characters: the fallback when a server reports no usage."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    """Chat format ({"content": [{token, logprob, top_logprobs}]}) or completions format (parallel lists)."""
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("content"), list):
        return tuple(
            TokenLogprob(t["token"], float(t["logprob"]),
                         {a["token"]: float(a["logprob"]) for a in t.get("top_logprobs") or ()})
            for t in raw["content"])
    tokens, lps = raw.get("tokens"), raw.get("token_logprobs")
    if isinstance(tokens, list) and isinstance(lps, list):
        tops = raw.get("top_logprobs") or [None] * len(tokens)
        return tuple(TokenLogprob(t, float(lp if lp is not None else 0.0),
                                  {k: float(v) for k, v in (top or {}).items()})
                     for t, lp, top in zip(tokens, lps, tops, strict=False))
    return None


def _split(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` into integers in proportion to `weights` (largest remainder), summing exactly to total."""
    if not weights:
        return []
    wsum = sum(weights)
    if wsum == 0:
        weights, wsum = [1] * len(weights), len(weights)
    shares = [total * w / wsum for w in weights]
    out = [int(s) for s in shares]
    for i in sorted(range(len(out)), key=lambda i: out[i] - shares[i])[: total - sum(out)]:
        out[i] += 1
    return out


def choice_text(choice: Mapping[str, Any]) -> str:
    message = choice.get("message")
    if isinstance(message, dict):
        return message.get("content") or ""
    return choice.get("text") or ""


def parse_response(body: Mapping[str, Any], prompt_text: str,
                   unecho: Callable[[list[str]], list[str]] | None = None) -> tuple[list[Generation], bool]:
    """Generations from a (chat) completions response, and whether usage had to be estimated.

    `prompt_text` is only used to estimate prompt tokens when the server reports no usage. `unecho` maps the
    choices' texts to what the generations say (the backend cuts a server's echo of the prefix there).
    """
    choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
    if not choices:
        raise BackendError(f"the server returned no choices: {json.dumps(body)[:300]}")
    texts = [choice_text(c) for c in choices]
    texts = unecho(texts) if unecho is not None else texts
    lps = [_logprobs(c.get("logprobs")) for c in choices]
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    estimated = usage is None or "completion_tokens" not in usage
    if estimated:
        counts = [len(lp) if lp is not None else estimate_tokens(t) for t, lp in zip(texts, lps, strict=True)]
        prompt, cached = estimate_tokens(prompt_text), 0
    else:
        assert usage is not None
        counts = _split(int(usage["completion_tokens"]), [len(t) for t in texts])
        counts = [len(lp) if lp is not None else c for c, lp in zip(counts, lps, strict=True)]
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    gens = []
    for i, (choice, text, lp, count) in enumerate(zip(choices, texts, lps, counts, strict=True)):
        cost = Usage(prompt_tokens=prompt if i == 0 else 0, completion_tokens=count,
                     cached_tokens=cached if i == 0 else 0)
        finish = _FINISH.get(str(choice.get("finish_reason") or "stop"), "stop")
        gens.append(Generation(text, finish, count, lp, cost))
    return gens, estimated


def stream_delta(event: Mapping[str, Any]) -> str:
    """The text a streamed chunk adds: chat `delta.content` or completions `text`."""
    choices = event.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta")
    if isinstance(delta, dict):
        return delta.get("content") or ""
    return choices[0].get("text") or ""
