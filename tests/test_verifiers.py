"""Verifiers: math answer equality (with a hard time limit), code in the sandbox, self-evaluation and a judge."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from ponder.errors import VerifierError
from ponder.types import Problem, Score
from ponder.verifiers import math as math_verifier
from ponder.verifiers.math import MathVerifier, compare, is_correct


def run(coro):
    return asyncio.run(coro)


# ---- math ------------------------------------------------------------------------------------------------------

def test_math_scores_each_candidate_with_its_normalised_answer():
    problem = Problem("p1", "What is 9 + 9?", answer="18")
    scores = run(MathVerifier().score(problem, ["9+9 = \\boxed{18}", "The answer is $18.00.", "#### 17", "no idea"]))
    assert [s.value for s in scores] == [1.0, 1.0, 0.0, 0.0]
    assert [s.answer for s in scores] == ["18", "18", "17", None]
    assert scores[3].detail == "no answer found"


@pytest.mark.parametrize(
    ("answer", "reference", "equal"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac{6}{2}", "3", True),
        ("(1, 2)", "(1,2)", True),
        ("x^2 + 1", "1 + x^2", True),
        ("\\sqrt{2}", "2^{1/2}", True),
        ("1,000", "1000", True),
        ("0.3333333", "1/3", True),
        ("\\frac{1}{3}", "0.5", False),
        ("x^2 - 1", "x^2 + 1", False),
        ("19", "18", False),
    ],
)
def test_math_equivalence(answer, reference, equal):
    assert compare(answer, reference)[0] is equal


def test_is_correct_takes_a_whole_response_or_a_bare_answer():
    assert is_correct("Halving 1 gives \\boxed{\\tfrac{1}{2}}.", "0.5")
    assert is_correct("0.5", "\\frac{1}{2}")
    assert not is_correct("It is 0.25", "\\frac{1}{2}")
    assert not is_correct("no number here", "3")


def test_pathological_answers_are_bounded_in_time_and_score_zero():
    problem = Problem("p", "q", answer="5")
    start = time.monotonic()
    scores = run(MathVerifier(timeout_s=1.0).score(problem, [
        "\\boxed{9^{9^{9^{9}}}}",
        "\\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}",
        "\\boxed{" + "{" * 300 + "5" + "}" * 300 + "!!!}",
    ]))
    assert [s.value for s in scores] == [0.0, 0.0, 0.0]
    assert time.monotonic() - start < 30


def test_a_helper_that_hangs_is_killed_and_replaced():
    hang = "print('ready', flush=True)\nimport time\ntime.sleep(600)"
    helper = math_verifier._Helper([sys.executable, "-c", hang])
    start = time.monotonic()
    equal, detail = helper.compare("1", "1", timeout_s=0.5)
    assert not equal and "longer than" in detail
    assert time.monotonic() - start < 10
    assert helper._proc is None  # killed; the next comparison starts a fresh one
    helper.compare("1", "1", timeout_s=0.2)
    helper._stop()


def test_math_uses_the_problem_checker_when_given():
    seen = []

    def checker(text: str) -> bool:
        seen.append(text)
        return "blue" in text

    problem = Problem("c", "What colour is the sky?", answer=None, checker=checker)
    scores = run(MathVerifier().score(problem, ["It is blue", "It is green"]))
    assert [s.value for s in scores] == [1.0, 0.0]
    assert seen == ["It is blue", "It is green"]


def test_math_without_reference_or_checker_is_a_clear_error():
    with pytest.raises(VerifierError, match="no reference answer and no checker"):
        run(MathVerifier().score(Problem("x", "q", answer=None), ["\\boxed{1}"]))


def test_math_score_values_are_scores():
    (score,) = run(MathVerifier().score(Problem("p", "q", answer="2"), ["1 + 1 = 2"]))
    assert isinstance(score, Score) and score.value == 1.0


# ---- code ------------------------------------------------------------------------------------------------------

from ponder.verifiers.code import CodeVerifier, build_program, extract_code  # noqa: E402

HUMANEVAL_0 = {
    "prompt": 'from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
              '    """ Check if in given list of numbers, are any two numbers closer to each other than\n'
              '    given threshold.\n    """\n',
    "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n"
            "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
            "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
            "    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True\n",
    "entry_point": "has_close_elements",
}
COMPLETION = ("    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
              "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n")
WHOLE = ("Here you go:\n```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
         + COMPLETION + "```\nThis is O(n^2).")
code_problem = Problem("HumanEval/0", HUMANEVAL_0["prompt"], kind="code", metadata=HUMANEVAL_0)


def test_code_passes_a_completion_and_a_whole_function_in_a_fence():
    wrong = "    return False\n"
    scores = run(CodeVerifier(timeout_s=10).score(code_problem, [COMPLETION, WHOLE, wrong]))
    assert [s.value for s in scores] == [1.0, 1.0, 0.0]
    assert "AssertionError" in scores[2].detail


def test_code_fails_hostile_candidates_and_carries_on():
    hostile = [
        "    while True:\n        pass\n",
        "    x = bytearray(10 * 1024 ** 3)\n    return True\n",
        "    import os\n    while True:\n        os.fork()\n",
        "    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=1)\n    return True\n",
        "    return undefined_name\n",
        "    import sys\n    sys.exit(0)\n",  # exits 0 before the tests run...
    ]
    start = time.monotonic()
    scores = run(CodeVerifier(timeout_s=2.0, memory_mb=256).score(code_problem, hostile))
    assert time.monotonic() - start < 40
    assert [s.value for s in scores] == [0.0] * 6
    assert scores[0].detail == "failed: timeout"
    assert scores[1].detail == "failed: memory limit"
    assert "NameError" in scores[4].detail
    # ...which passes under plain exit-status grading; the end-of-tests marker catches it
    assert scores[5].detail == "failed: exited before the tests finished"
    # and a good candidate still passes afterwards
    assert run(CodeVerifier().score(code_problem, [COMPLETION]))[0].value == 1.0


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "```python\nimport math\n```\nthen\n```py\ndef f(x):\n    return x\n```"
    assert extract_code(text, "f").startswith("def f(x)")
    assert extract_code("    return 1\n", "f") == "    return 1\n"
    program = build_program(code_problem, WHOLE)
    assert program.count("def has_close_elements") == 2 and program.rstrip().endswith("check(has_close_elements)")


def test_code_without_tests_is_a_clear_error():
    with pytest.raises(VerifierError, match="test, entry_point"):
        run(CodeVerifier().score(Problem("x", "q", kind="code", metadata={"prompt": "def f():\n"}), ["pass"]))
