"""The code verifier: run a candidate program against its unit tests (HumanEval format) in the sandbox.

`problem.metadata` holds the HumanEval fields: "prompt" (imports, signature and docstring), "test" (defines
`check(candidate)`) and "entry_point" (the function's name). A candidate is a completion of the prompt, or a whole
function, bare or in a ```python block. The program run is prompt + candidate + test + `check(entry_point)` +
printing a random marker; it scores 1.0 when it exits 0 having printed the marker (so a candidate that calls
`sys.exit(0)` before the tests run does not pass, as it would under exit-status grading).
Model-written code is hostile input: it only ever runs in `ponder.sandbox`.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Sequence

from ponder.errors import VerifierError
from ponder.sandbox import SandboxResult, compiles, run_python_async
from ponder.types import Problem, Score

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_FIELDS = ("prompt", "test", "entry_point")


class CodeVerifier:
    """Scores 1.0 when a candidate passes the problem's unit tests in the sandbox, else 0.0."""

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024, max_concurrent: int = 4) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._slots = max_concurrent

    async def score(self, problem: Problem, candidates: Sequence[str]) -> list[Score]:
        if problem.checker is not None:
            return [Score(1.0 if await asyncio.to_thread(problem.checker, c) else 0.0, None, "checker")
                    for c in candidates]
        missing = [f for f in _FIELDS if not problem.metadata.get(f)]
        if missing:
            raise VerifierError(
                f"problem {problem.id!r} has no {', '.join(missing)} in its metadata, so the code verifier cannot "
                "run it: give HumanEval-style 'prompt', 'test' and 'entry_point' fields, or a checker"
            )
        slots = asyncio.Semaphore(self._slots)

        async def one(candidate: str) -> Score:
            marker = f"ponder-tests-passed-{secrets.token_hex(8)}"
            async with slots:
                result = await run_python_async(build_program(problem, candidate, marker), timeout_s=self.timeout_s,
                                                memory_mb=self.memory_mb)
            return _score(result, marker)

        return list(await asyncio.gather(*(one(c) for c in candidates)))


def extract_code(text: str, entry_point: str = "") -> str:
    """The code in a candidate: the fenced block that defines `entry_point`, else the longest block, else all."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    defining = [b for b in blocks if entry_point and re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
    return (defining or sorted(blocks, key=len))[-1]


def build_program(problem: Problem, candidate: str, marker: str = "") -> str:
    """The whole program to run: prompt, the candidate's code, the tests, the call to check, and the marker."""
    meta = problem.metadata
    prompt, test, entry = str(meta["prompt"]), str(meta["test"]), str(meta["entry_point"])
    code = extract_code(candidate, entry)
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        # a whole function: keep the prompt before it for its imports and helpers (a docstring-only def is valid)
        body = f"{prompt if compiles(prompt) else prompt + '    pass'}\n\n{code}"
    else:
        body = prompt + code
    end = f"print({marker!r})\n" if marker else ""
    return f"{body}\n\n{test}\n\ncheck({entry})\n{end}"


def _score(result: SandboxResult, marker: str) -> Score:
    if result.ok and marker in result.stdout:
        return Score(1.0, None, "passed")
    if result.ok:
        return Score(0.0, None, "failed: exited before the tests finished")
    if result.killed:
        return Score(0.0, None, f"failed: {result.killed}")
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    return Score(0.0, None, f"failed: {lines[-1][:300] if lines else f'exit status {result.returncode}'}")
