"""The math verifier: is a candidate's final answer equal to the reference?

Answers are extracted and normalised by `ponder.answers` (shared with every vote), in its math mode: a stated
answer that is not a number or an expression is no answer. Equal normal forms, or equal numbers, are decided here
at once; anything else ("\\frac{1}{2}" vs "0.5", "(1,2)" vs "(1, 2)") goes to math-verify. math-verify parses
with sympy, which can take unbounded time and memory on pathological input (9^{9^{9^9}}, deep nesting), and its
own timeouts use signal.alarm (main thread only, and no help inside a long C call). So comparisons run in one
helper process (`python -m ponder.verifiers.math`), which is killed and replaced when a comparison overruns its
time limit: pathological input costs at most that limit and scores 0.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import re
import resource
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from fractions import Fraction

from ponder.answers import answer_of, extract_answer, normalize
from ponder.errors import VerifierError
from ponder.tasks.base import graded_as_math
from ponder.types import Problem, Score

MAX_ANSWER_CHARS = 1000
"""Longer extracted answers are not sent to math-verify (no real answer is this long) and score 0."""
_STARTUP_S = 120.0
"""How long the helper may take to start (it imports sympy; the machine may be busy)."""


class MathVerifier:
    """Scores 1.0 when a candidate's answer equals `problem.answer` (or passes `problem.checker`), else 0.0."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        if problem.checker is None and problem.answer is None:
            raise VerifierError(
                f"problem {problem.id!r} has no reference answer and no checker, so the math verifier cannot "
                "score it: give the problem an `answer` or a `checker`, or use a judge or self_eval verifier"
            )
        return list(await asyncio.gather(*(self._score_one(problem, c) for c in candidates)))

    async def _score_one(self, problem: Problem, text: str) -> Score:
        if problem.checker is not None:
            ok = await asyncio.to_thread(problem.checker, text)
            return Score(1.0 if ok else 0.0, answer_of(text, math=graded_as_math(problem)), "checker")
        raw = extract_answer(text, math=True)
        answer = normalize(raw)
        if raw is None:
            return Score(0.0, None, "no answer found")
        verdict, detail = await asyncio.to_thread(compare, raw, str(problem.answer), self.timeout_s)
        return Score(1.0 if verdict else 0.0, answer, detail)


def is_correct(answer_text: str, reference: str, timeout_s: float = 5.0) -> bool:
    """True when `answer_text` (a whole response or a bare answer) answers `reference`. Synchronous."""
    raw = extract_answer(answer_text, math=True)
    return raw is not None and compare(raw, reference, timeout_s)[0]


def compare(answer: str, reference: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(equal?, how it was decided) for two raw answers: normal forms, then numbers, then math-verify."""
    gold = extract_answer(reference) or reference
    a, b = normalize(answer), normalize(gold)
    if a is not None and a == b:
        return True, "equal normal forms"
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        equal = x == y or math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-9)
        return equal, "numbers compared"
    if len(answer) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False, f"answer longer than {MAX_ANSWER_CHARS} characters"
    return _WORKER.compare(gold, answer, timeout_s)


def _number(s: str | None) -> Fraction | None:
    if s is None or not re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


class _Helper:
    """One helper process running math-verify; replaced whenever it overruns or dies."""

    def __init__(self, argv: Sequence[str] = (sys.executable, "-m", "ponder.verifiers.math")) -> None:
        self.argv = list(argv)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def compare(self, gold: str, answer: str, timeout_s: float) -> tuple[bool, str]:
        with self._lock:
            proc = self._ensure()
            request = {"gold": gold, "answer": answer, "timeout": max(1, math.ceil(timeout_s))}
            try:
                proc.stdin.write((json.dumps(request) + "\n").encode())  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                # parse gold, parse answer, verify: each has timeout_s inside the helper; this is the hard stop
                line = self._readline(proc, 3 * timeout_s + 1)
            except OSError:
                line = None
            try:
                reply = json.loads(line) if line is not None else None
            except ValueError:
                reply = None
            if not isinstance(reply, dict):
                why = "died" if proc.poll() is not None else f"took longer than {timeout_s:g}s"
                self._stop()
                return False, f"math-verify {why} (helper restarted)"
            return bool(reply.get("equal")), str(reply.get("detail", "math-verify"))

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if importlib.util.find_spec("math_verify") is None or importlib.util.find_spec("antlr4") is None:
            raise VerifierError("math-verify is not installed: pip install 'math-verify[antlr4_13_2]'")
        self._proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_helper_env(),
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        if self._readline(self._proc, _STARTUP_S) != "ready":
            self._stop()
            raise VerifierError("the math-verify helper process did not start: check that math-verify imports")
        return self._proc

    @staticmethod
    def _readline(proc: subprocess.Popen[bytes], timeout_s: float) -> str | None:
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = proc.stdout.readline()  # type: ignore[union-attr]
        return line.decode().strip() if line else None

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _helper_env() -> dict[str, str]:
    """This environment, with ponder's own source folder importable (it may not be installed)."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src}


_WORKER = _Helper()


def _serve() -> None:
    """The helper's loop: one JSON request per line in, one JSON reply per line out."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # sympy on a huge power fails, not the host
    from math_verify import parse, verify

    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t = int(req["timeout"])
        try:
            gold = parse(f"\\boxed{{{req['gold']}}}", parsing_timeout=t)
            answer = parse(f"\\boxed{{{req['answer']}}}", parsing_timeout=t)
            equal = bool(gold and answer and verify(gold, answer, timeout_seconds=t))
            detail = "math-verify" if gold and answer else "math-verify could not parse an answer"
        except Exception as exc:  # any failure to parse or compare means "not shown equal"
            equal, detail = False, f"math-verify failed: {type(exc).__name__}"
        print(json.dumps({"equal": equal, "detail": detail}), flush=True)


if __name__ == "__main__":
    _serve()
