"""The Task protocol, and grading: how a response to a problem is judged correct.

A task yields problems in a deterministic order; each carries what is needed to grade it (a reference answer,
unit tests in metadata, or a picklable `checker`), so a work unit shipped to another process can grade without
the task object. Questions carry no answer-format instruction: the strategy's system prompt asks for one
("... The answer is N."), so every strategy and pool sees the same question. Math answers are compared by
`ponder.verifiers.math.is_correct`; programs are run by the sandboxed `ponder.verifiers.code.CodeVerifier`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ponder.answers import answer_of
from ponder.types import Problem

TaskKind = Literal["math", "code", "open"]


@runtime_checkable
class Task(Protocol):
    name: str
    """The task's spec, as given to `load_task` ("gsm8k", "reasoning_gym:chain_sum", ...)."""
    kind: TaskKind

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The first `limit` problems (all when None), always in the same order for the same seed."""
        ...


@dataclass(frozen=True)
class MathChecker:
    """Grades a response (or a bare answer) against a reference value, with the math verifier."""

    reference: str

    def __call__(self, text: str) -> bool:
        from ponder.verifiers.math import is_correct

        return bool(is_correct(text, self.reference))


def graded_as_math(problem: Problem) -> bool:
    """True when the math verifier grades `problem` (a MathChecker, or a math problem with no checker of its own):
    then only a number or an expression counts as its answer, so a vote agrees with the grade."""
    if problem.checker is not None:
        return isinstance(problem.checker, MathChecker)
    return problem.kind == "math"


def answer(problem: Problem, text: str) -> str | None:
    """The extracted, normalised answer of `text` (None for programs, which have no single answer; an open
    response with no answer line is its own answer, as strategies read it)."""
    if problem.kind == "code":
        return None
    extract = problem.metadata.get("answer_tag")
    if extract:
        tagged = _between(text, f"<{extract}>", f"</{extract}>")
        if tagged is not None:
            from ponder.answers import normalize

            return normalize(tagged)
    found = answer_of(text, math=graded_as_math(problem))
    return found if found is not None or problem.kind != "open" else text.strip() or None


async def grade(problem: Problem, text: str) -> bool:
    """True when `text` answers `problem` correctly: the problem's checker, else the default for its kind."""
    if problem.checker is not None:
        return bool(problem.checker(text))
    if problem.kind == "code":
        from ponder.verifiers.code import CodeVerifier

        (score,) = await CodeVerifier().score(problem, [text])
        return score.value >= 1.0
    if problem.kind == "math" and problem.answer is not None:
        return MathChecker(problem.answer)(text)
    return False


async def grade_result(problem: Problem, answer: str | None, text: str) -> bool:
    """A strategy's result graded: for math its answer (what it chose; for program-aided, the program's output),
    else its text."""
    graded = answer if problem.kind == "math" and answer is not None else text
    return bool(graded) and await grade(problem, graded)


def _between(text: str, start: str, end: str) -> str | None:
    """The content of the last start...end span of `text`."""
    i = text.rfind(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    return text[i + len(start): j if j >= 0 else len(text)].strip()


def reference_of(solution: str) -> str:
    """The final value of a GSM8K-style solution ("... #### 72")."""
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")
