"""Results -> OpenAI response bodies: choices, honest usage, and the `ponder` block.

Usage counts every token the request spent, in every role (policy, verifier, judge), summed over its choices:
prompt_tokens, completion_tokens and total_tokens as OpenAI defines them; prompt_tokens_details.cached_tokens;
completion_tokens_details.reasoning_tokens = the completion tokens that are not the chosen answer (thinking, and
the candidates that were generated but not returned). The `ponder` block says what was run and what it found.

finish_reason: "stop", or "length" when the chosen answer was cut by max_tokens or by the budget (a budget that
runs out returns the best answer so far, marked `budget_exhausted` in the ponder block).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ponder.backends.base import model_info
from ponder.compute import ComputeReport
from ponder.ledger import Ledger
from ponder.server.routing import Plan
from ponder.server.tap import split_thinking
from ponder.types import Candidate, Result, Usage


@dataclass(frozen=True)
class Outcome:
    """One choice: the strategy's Result and the ledger that counted it."""

    index: int
    result: Result
    ledger: Ledger

    @property
    def chosen(self) -> Candidate | None:
        r = self.result
        return next((c for c in r.candidates if c.text == r.text), None) or next(
            (c for c in r.candidates if r.answer is not None and c.answer == r.answer), None)

    @property
    def text(self) -> str:
        """The full chosen text (the answer's own text; the first candidate's when no answer was found)."""
        if self.result.text:
            return self.result.text
        return self.result.candidates[0].text if self.result.candidates else ""

    def parts(self) -> tuple[str | None, str]:
        """(reasoning, content) of the chosen text."""
        return split_thinking(self.text)

    @property
    def finish_reason(self) -> str:
        chosen = self.chosen
        cut = self.result.budget_exhausted or (chosen is not None and chosen.finish_reason in ("length", "budget"))
        return "length" if cut else "stop"

    def answer_tokens(self) -> int:
        """Completion tokens of the returned answer (thinking excluded)."""
        usage = self.ledger.total
        chosen = self.chosen
        tokens = chosen.completion_tokens if chosen is not None else 0
        return max(0, min(usage.completion_tokens, tokens - usage.thinking_tokens))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def total_usage(outcomes: Sequence[Outcome]) -> Usage:
    total = Usage()
    for o in outcomes:
        total = total + o.ledger.total
    return total


def usage_body(outcomes: Sequence[Outcome], n: int) -> dict[str, Any]:
    """OpenAI's usage object. With n choices per prompt, the prompt is counted once, as OpenAI and vLLM do: the
    opening call's prompt of every choice after a prompt's first is taken out (a strategy's own later calls stay)."""
    total = total_usage(outcomes)
    shared = Usage()
    for o in outcomes:
        if o.index % n and o.ledger.opening is not None:
            shared = shared + o.ledger.opening
    prompt = total.prompt_tokens - shared.prompt_tokens
    reasoning = max(0, total.completion_tokens - sum(o.answer_tokens() for o in outcomes))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": total.completion_tokens,
        "total_tokens": prompt + total.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": min(prompt, max(0, total.cached_tokens - shared.cached_tokens))},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return getattr(value, "name", None) or type(value).__name__


def _params(strategy: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(strategy):
        return {}
    return {f.name: _json_safe(getattr(strategy, f.name)) for f in dataclasses.fields(strategy)}


def _choice_block(o: Outcome) -> dict[str, Any]:
    r = o.result
    decision = next((dict(t) for t in r.trace if t.get("event") == "policy"), None)
    return {
        **({"policy": decision} if decision else {}),
        "index": o.index,
        "answer": r.answer,
        "votes": dict(r.votes),
        "budget_exhausted": r.budget_exhausted,
        "candidates": [
            {"answer": c.answer, "score": c.score, "votes": r.votes.get(c.answer) if c.answer is not None else None,
             "tokens": c.completion_tokens, "finish_reason": c.finish_reason}
            for c in r.candidates
        ],
    }


def _flops(outcomes: Sequence[Outcome], backend: Any) -> float | None:
    info = model_info(backend)
    if info is None or info.n_params <= 0:
        return None
    return sum(ComputeReport.of(o.result, info, usd=0.0).flops for o in outcomes)


def ponder_block(plan: Plan, outcomes: Sequence[Outcome], backend: Any, seconds: float) -> dict[str, Any]:
    by_role: dict[str, Usage] = {}
    for o in outcomes:
        for role, u in o.ledger.usage_by_role.items():
            by_role[role] = by_role.get(role, Usage()) + u
    return {
        "strategy": plan.label,
        "params": _params(plan.strategy),
        "reasoning_effort": plan.effort,
        "budget": {k: getattr(plan.budget, k) for k in ("tokens", "calls", "usd", "seconds")},
        "choices": [_choice_block(o) for o in outcomes],
        "usage_by_role": {role: u.to_dict() for role, u in by_role.items()},
        "usd": sum(o.ledger.usd for o in outcomes),
        "flops": _flops(outcomes, backend),
        "seconds": seconds,
        "budget_exhausted": any(o.result.budget_exhausted for o in outcomes),
    }


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(o: Outcome) -> dict[str, Any]:
    """The chosen answer's token log-probabilities in the chat API's shape ({"content": [...]})."""
    chosen = o.chosen
    tokens = (chosen.logprobs or ()) if chosen is not None else ()
    return {"content": [{**_token_entry(t.token, t.logprob),
                         "top_logprobs": [_token_entry(k, v) for k, v in t.top.items()]} for t in tokens]}


def completion_logprobs(o: Outcome) -> dict[str, Any]:
    """The same in the completions API's shape (parallel lists)."""
    chosen = o.chosen
    tokens = (chosen.logprobs or ()) if chosen is not None else ()
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens], "text_offset": offsets}


def chat_body(plan: Plan, outcomes: Sequence[Outcome], backend: Any, seconds: float) -> dict[str, Any]:
    choices = []
    for o in outcomes:
        reasoning, content = o.parts()
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        choices.append({"index": o.index, "message": message, "finish_reason": o.finish_reason,
                        "logprobs": chat_logprobs(o) if plan.overrides.logprobs else None})
    return {
        "id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": plan.model,
        "choices": choices, "usage": usage_body(outcomes, plan.n),
        "ponder": ponder_block(plan, outcomes, backend, seconds),
    }


def completion_body(plan: Plan, outcomes: Sequence[Outcome], backend: Any, seconds: float) -> dict[str, Any]:
    choices = [{"index": o.index, "text": o.parts()[1], "finish_reason": o.finish_reason,
                "logprobs": completion_logprobs(o) if plan.overrides.logprobs else None} for o in outcomes]
    return {
        "id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": plan.model,
        "choices": choices, "usage": usage_body(outcomes, plan.n),
        "ponder": ponder_block(plan, outcomes, backend, seconds),
    }
