"""Verifiers: math answer equality (with a hard time limit), code in the sandbox, self-evaluation and a judge."""

from __future__ import annotations

import asyncio
import os
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
        "    open('/etc/ponder_pwned', 'w').write('x')\n    return True\n",
        "    import sys\n    sys.exit(0)\n",  # exits 0 before the tests run...
    ]
    start = time.monotonic()
    scores = run(CodeVerifier(timeout_s=2.0, memory_mb=256).score(code_problem, hostile))
    assert time.monotonic() - start < 40
    assert [s.value for s in scores] == [0.0] * 7
    assert scores[0].detail == "failed: timeout"
    assert scores[1].detail == "failed: memory limit"
    assert "NameError" in scores[4].detail
    assert not os.path.exists("/etc/ponder_pwned")
    # ...which passes under plain exit-status grading; the end-of-tests marker catches it
    assert scores[6].detail == "failed: exited before the tests finished"
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


# ---- self-evaluation -------------------------------------------------------------------------------------------

from ponder.backends.scripted import Reply, ScriptedBackend  # noqa: E402
from ponder.ledger import Ledger  # noqa: E402
from ponder.types import Generation, TokenLogprob  # noqa: E402
from ponder.verifiers.judge import JudgeVerifier, parse_judge_score  # noqa: E402
from ponder.verifiers.self_eval import SelfEvalVerifier, choice_probability  # noqa: E402

math_problem = Problem("m", "What is 2 + 3?", answer="5")


def _gen(text, top=None, lp=-0.1):
    return Generation(text, "stop", 1, (TokenLogprob(text, lp, top or {}),))


def test_choice_probability_reads_and_normalises_yes_and_no():
    p = choice_probability(_gen("Yes", {"Yes": -0.2, " yes": -2.0, "No": -1.5, "The": -3.0}), "yes", "no")
    yes = 2.718281828 ** -0.2 + 2.718281828 ** -2.0
    assert p == pytest.approx(yes / (yes + 2.718281828 ** -1.5), rel=1e-6)
    # "No" missing from the alternatives: its probability is bounded by the least likely listed one
    only_yes = choice_probability(_gen("Yes", {"Yes": -0.05, "Sure": -4.0}), "yes", "no")
    assert 0.9 < only_yes < 1.0
    # no logprobs at all: the sampled word decides
    assert choice_probability(Generation("No.", "stop", 1), "yes", "no") == 0.0
    assert choice_probability(Generation("Answer", "stop", 1), "a", "b") is None


def test_self_eval_asks_one_greedy_token_with_alternatives_and_scores_p_yes():
    backend = ScriptedBackend([
        Reply("Yes", logprob=-0.1, top_logprobs={"Yes": -0.1, "No": -2.5}),
        Reply("No", logprob=-0.3, top_logprobs={" no": -0.3, " yes": -1.5}),
    ])
    scores = run(SelfEvalVerifier(backend).score(math_problem, ["2 + 3 = \\boxed{5}", "2 + 3 = \\boxed{6}"]))
    assert scores[0].value > 0.9 and scores[1].value < 0.3
    assert [s.answer for s in scores] == ["5", "6"]
    call = backend.calls[0]
    assert call.params.max_tokens == 1 and call.params.temperature == 0 and call.params.logprobs
    assert call.params.top_logprobs == 5
    assert "2 + 3 = \\boxed{5}" in call.last_user and "may be partial" in call.last_user
    assert "What is 2 + 3?" in call.last_user


def test_self_eval_tokens_are_metered_as_verifier():
    ledger = Ledger()
    backend = ScriptedBackend(lambda call, i: Reply("Yes", top_logprobs={"Yes": -0.1, "No": -3.0}))
    run(SelfEvalVerifier(ledger.meter(backend, "verifier")).score(math_problem, ["a", "b", "c"]))
    usage = ledger.usage_by_role
    assert usage["verifier"].calls == 3 and usage["verifier"].completion_tokens == 3
    assert "policy" not in usage or usage["policy"].calls == 0


def test_self_eval_scores_each_step_prefix():
    backend = ScriptedBackend(lambda call, i: Reply("Yes" if "bad" not in call.last_user else "No", logprob=-0.01))
    scores = run(SelfEvalVerifier(backend).score_steps(math_problem, "Step 1: 2+3\n\nStep 2: bad\n\nStep 3: 5"))
    assert [round(s.value, 2) for s in scores] == [0.99, 0.01, 0.01]
    assert "Step 3" in backend.calls[2].last_user and "Step 3" not in backend.calls[1].last_user


def test_self_eval_without_a_yes_or_no_is_neutral_and_says_so():
    backend = ScriptedBackend([Reply("Maybe", top_logprobs={"Maybe": -0.1, "Perhaps": -2.0})])
    (score,) = run(SelfEvalVerifier(backend).score(math_problem, ["x"]))
    assert score.value == 0.5 and "Maybe" in score.detail


# ---- judge -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("reply", "n"),
    [
        ("Clear and right.\nScore: 8", 8.0),
        ("**Score:** 7/10", 7.0),
        ("I would say 6 out of 10.", 6.0),
        ("score = 3\nActually, Score: 9", 9.0),
        ("9", 9.0),
        ("Score: 42", None),
        ("It is quite good.", None),
        ("", None),
    ],
)
def test_parse_judge_score(reply, n):
    assert parse_judge_score(reply) == n


def test_judge_scores_and_handles_unparseable_replies():
    backend = ScriptedBackend(["Correct.\nScore: 10", "Wrong sum.\nScore: 1", "Looks fine to me!"])
    scores = run(JudgeVerifier(backend, rubric="arithmetic").score(math_problem, ["5", "6", "7"]))
    assert [s.value for s in scores] == [1.0, 0.0, 0.0]
    assert scores[2].detail.startswith("unparseable judge reply") and "Looks fine" in scores[2].detail
    assert "arithmetic" in backend.calls[0].last_user and "Score: N" in backend.calls[0].last_user
    neutral = JudgeVerifier(ScriptedBackend(["no idea"]), unparseable_score=0.5)
    assert run(neutral.score(math_problem, ["5"]))[0].value == 0.5


def test_judge_compare_returns_p_a_better():
    backend = ScriptedBackend([
        Reply("A", top_logprobs={"A": -0.2, "B": -1.8}),
        Reply("B", top_logprobs={" B": -0.05, " A": -3.0}),
        Reply("Neither"),
    ])
    judge = JudgeVerifier(backend)
    p1 = run(judge.compare(math_problem, "It is 5", "It is 6"))
    p2 = run(judge.compare(math_problem, "It is 6", "It is 5"))
    p3 = run(judge.compare(math_problem, "x", "y"))
    assert 0.7 < p1 < 1.0 and 0.0 < p2 < 0.1 and p3 == 0.5
    prompt = backend.calls[0].last_user
    assert prompt.index("It is 5") < prompt.index("It is 6") and "A or B" in prompt
    assert backend.calls[0].params.max_tokens == 1


def test_verifiers_are_found_by_name():
    from ponder.registry import VERIFIERS

    assert VERIFIERS.get("math") is MathVerifier and VERIFIERS.get("code") is CodeVerifier
    assert VERIFIERS.get("self_eval") is SelfEvalVerifier and VERIFIERS.get("judge") is JudgeVerifier


# ---- a real model ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_self_eval_on_the_tiny_model_gives_probabilities():
    llamacpp = pytest.importorskip("ponder.backends.llamacpp", reason="the llama.cpp backend is not available yet")
    path = os.path.expanduser("~/.cache/ponder/models/smollm2-135m.gguf")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not downloaded")
    backend = llamacpp.LlamaCppBackend(path, n_ctx=1024, n_seq_max=2)
    ledger = Ledger()
    verifier = SelfEvalVerifier(ledger.meter(backend, "verifier"))
    try:
        scores = run(verifier.score(math_problem, ["2 + 3 = 5. The answer is \\boxed{5}.", "2 + 3 = 7. \\boxed{7}"]))
    finally:
        backend.close()
    assert all(0.0 <= s.value <= 1.0 for s in scores)
    assert all(s.detail.startswith("P(yes)=") for s in scores), [s.detail for s in scores]
    assert ledger.usage_by_role["verifier"].completion_tokens == 2
