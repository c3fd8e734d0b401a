"""Budget forcing (Muennighoff et al. 2025, "s1: Simple test-time scaling"): control how long the model thinks.

The model thinks inside `<think>...</think>`. Thinking that reaches `max_thinking_tokens` is cut, the tag is closed
and the answer is forced with "Final answer:". Thinking that tries to end before `min_thinking_tokens` has its end
tag removed and `wait_text` appended, up to `max_waits` times. Both work only through the backend's `prefix`
continuation, so the strategy runs the same on the local engine, over HTTP and on the scripted backend.
Thinking calls are metered with `thinking=True`, so the ledger reports thinking tokens apart from answer tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ponder.errors import BudgetExhausted, InvalidParameter
from ponder.ledger import Ledger
from ponder.strategies.common import answer_for
from ponder.types import Candidate, FinishReason, Generation, Message, Problem, Result, SamplingParams

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
FORCED_ANSWER = "Final answer:"

SYSTEM_PROMPT = (
    "First reason step by step inside <think> and </think> tags. After </think>, give the final answer "
    "on one line, in the form 'Final answer: <answer>'."
)

OPEN_SYSTEM_PROMPT = (
    "First think about the request inside <think> and </think> tags: what is asked, what to say, how to order it. "
    "After </think>, write your response to the request."
)


@dataclass(frozen=True)
class BudgetForcing:
    """s1-style budget forcing: extend short thinking with "Wait", cut long thinking and force the answer."""

    name: ClassVar[str] = "budget_forcing"
    streams_answer: ClassVar[bool] = True
    """Its last policy call is the answer itself, so the server can stream the answer as it is decoded."""

    min_thinking_tokens: int = 0
    """Thinking that ends before this many tokens is extended with `wait_text` (s1, Muennighoff et al. 2025, §3.1)."""
    max_thinking_tokens: int = 512
    """Thinking is cut at this many tokens and the answer forced (s1's "maximum thinking tokens" control)."""
    max_waits: int = 2
    """Most times the end of thinking is suppressed and `wait_text` appended (s1 scales with 2, 4, 6 waits)."""
    wait_text: str = "Wait"
    """Appended in place of the end-of-thinking delimiter; s1 found "Wait" works best (Muennighoff et al. 2025)."""
    answer_max_tokens: int = 96
    """Most tokens for the answer after thinking ends."""
    open_answer_max_tokens: int = 512
    """Most tokens for the response after thinking on an open problem (an essay, not one answer line)."""
    temperature: float = 0.0
    """Sampling temperature of thinking and answer; s1 decodes greedily."""
    base_thinking_tokens: int = 128
    """at_budget(k) sets max_thinking_tokens = k x this (and min scaled in proportion), for sweeps."""
    system: str = SYSTEM_PROMPT
    """Tells models not trained to think in tags to reason inside <think>...</think>."""
    open_system: str = OPEN_SYSTEM_PROMPT
    """The same for open problems, whose response is the text after thinking, not a 'Final answer:' line."""
    seed: int | None = None
    """Seed of every call (continuations of one text); None: unseeded."""

    def __post_init__(self) -> None:
        if self.max_thinking_tokens < 1:
            raise InvalidParameter("max_thinking_tokens", self.max_thinking_tokens, "use at least 1 token")
        if not 0 <= self.min_thinking_tokens <= self.max_thinking_tokens:
            raise InvalidParameter("min_thinking_tokens", self.min_thinking_tokens,
                                   "use a number from 0 to max_thinking_tokens")
        if self.max_waits < 0:
            raise InvalidParameter("max_waits", self.max_waits, "use 0 or more")
        for name in ("answer_max_tokens", "open_answer_max_tokens"):
            if getattr(self, name) < 1:
                raise InvalidParameter(name, getattr(self, name), "use at least 1 token")

    def at_budget(self, k: int) -> BudgetForcing:
        """k x `base_thinking_tokens` of thinking; the minimum keeps its ratio to the maximum."""
        top = max(1, k * self.base_thinking_tokens)
        low = self.min_thinking_tokens * top // self.max_thinking_tokens
        return replace(self, max_thinking_tokens=top, min_thinking_tokens=low)

    async def solve(self, problem: Problem, backend: object, ledger: Ledger) -> Result:
        is_open = problem.kind == "open"
        messages = problem.messages((self.open_system if is_open else self.system) or None)
        trace: list[dict[str, Any]] = []
        thinking, used, forced, exhausted = await self._think(messages, backend, ledger, trace)
        answer_prefix = f"{THINK_OPEN}{thinking.rstrip()}\n{THINK_CLOSE}\n\n"
        # A forced answer (cut thinking) is primed with "Final answer:", as s1 does; an open response just starts.
        answer_text = FORCED_ANSWER if forced and not is_open else ""
        finish: FinishReason = "stop"
        answer_tokens = 0
        if not exhausted:
            try:
                answer_gen = await self._answer(messages, backend, ledger, answer_prefix + answer_text,
                                                self.open_answer_max_tokens if is_open else self.answer_max_tokens)
                answer_text += answer_gen.text
                finish, answer_tokens = answer_gen.finish_reason, answer_gen.completion_tokens
            except BudgetExhausted as e:
                exhausted = True
                trace.append({"event": "budget_exhausted", "during": "answer", "detail": str(e)})
        if exhausted:
            finish = "budget"
        answer = self._extract(problem, answer_text, thinking)
        text = answer_prefix + answer_text
        trace.append({"event": "answer", "forced": forced, "thinking_tokens": used, "answer_tokens": answer_tokens})
        candidate = Candidate(text, answer, None, finish, used + answer_tokens)
        return Result(answer, text, self.name, (candidate,), {answer: 1.0} if answer else {},
                      ledger.usage_by_role, exhausted, tuple(trace))

    async def _think(
        self, messages: Sequence[Message], backend: object, ledger: Ledger, trace: list[dict[str, Any]]
    ) -> tuple[str, int, bool, bool]:
        """Think until the model stops past the minimum, or the maximum is reached. Returns
        (thinking text, thinking tokens, whether the answer must be forced, whether the budget ran out)."""
        thinker = ledger.meter(backend, "policy", thinking=True)
        thinking, used, waits = "", 0, 0
        while True:
            left = self.max_thinking_tokens - used
            if left <= 0:
                trace.append({"event": "cut", "thinking_tokens": used})
                return thinking, used, True, False
            params = SamplingParams(max_tokens=left, temperature=self.temperature, stop=(THINK_CLOSE,),
                                    seed=self.seed)
            try:
                gen = (await thinker.generate(messages, params, THINK_OPEN + thinking))[0]
            except BudgetExhausted as e:
                trace.append({"event": "budget_exhausted", "during": "thinking", "detail": str(e)})
                return thinking, used, True, True
            thinking += gen.text
            used += gen.completion_tokens
            if gen.finish_reason != "stop" or used >= self.max_thinking_tokens:
                trace.append({"event": "cut", "thinking_tokens": used})
                return thinking, used, True, False
            if used < self.min_thinking_tokens and waits < self.max_waits:
                # s1: drop the end-of-thinking delimiter (the stop string already did) and append "Wait".
                waits += 1
                thinking = f"{thinking.rstrip()}\n{self.wait_text}"
                trace.append({"event": "wait", "n": waits, "thinking_tokens": used})
                continue
            trace.append({"event": "stopped", "thinking_tokens": used, "waits": waits})
            return thinking, used, False, False

    async def _answer(self, messages: Sequence[Message], backend: object, ledger: Ledger, prefix: str,
                      max_tokens: int) -> Generation:
        answerer = ledger.meter(backend, "policy", thinking=False)
        params = SamplingParams(max_tokens=max_tokens, temperature=self.temperature, seed=self.seed)
        return (await answerer.generate(messages, params, prefix))[0]

    @staticmethod
    def _extract(problem: Problem, answer_text: str, thinking: str) -> str | None:
        """The answer after thinking; for open problems the text itself. Falls back to the thinking text."""
        if problem.kind == "open":
            return (answer_text.removeprefix(FORCED_ANSWER).strip() or thinking.strip()) or None
        return answer_for(problem, answer_text) or answer_for(problem, thinking)
