"""Answer extraction and normalisation: the one definition of "the answer" shared by grading and voting."""

from __future__ import annotations

import pytest

from ponder.answers import answer_of, extract_answer, normalize


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("first \\boxed{3} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("nested \\boxed{\\sqrt{\\frac{a}{b}}} end", "\\sqrt{\\frac{a}{b}}"),
        ("step 1: 5\nstep 2: 7\n#### 12", "12"),
        ("So the final answer is 42 apples", "42 apples"),
        ("Answer: -3.5", "-3.5"),
        ("There were 3 cats and 9 dogs, so 12 animals.", "12"),
        ("\\frac{3}{4}", "\\frac{3}{4}"),
        ("x = 5", "5"),
        ("2 + 3 = 5", "5"),
        ("I think 12", "12"),
        ("nothing to see", None),
        ("", None),
    ],
)
def test_extract_answer(text, raw):
    assert extract_answer(text) == raw


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("$1,234.50", "1234.5"),
        ("18.00", "18"),
        ("42 apples", "42"),
        ("10\\%", "10"),
        ("\\text{7}", "7"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\left(1, 2\\right)", "(1, 2)"),
        ("x = -4", "-4"),
        ("3\\pi", "3\\pi"),
        ("2x+1", "2x+1"),
        ("Yes.", "yes"),
        (None, None),
        ("   ", None),
    ],
)
def test_normalize(raw, normal):
    assert normalize(raw) == normal


def test_votes_agree_across_formats():
    texts = ["The answer is $18.00.", "so \\boxed{18}", "#### 18", "we get 18 dollars in total: 18"]
    assert {answer_of(t) for t in texts} == {"18"}


def test_the_answer_ends_with_its_sentence():
    from ponder.answers import answer_of

    assert answer_of("The answer is 7. Tom has 3 apples left.") == "7"
    assert answer_of("The answer is 3.5. That is all.") == "3.5"


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("The answer is \\frac{1}{2}.", "\\frac{1}{2}"),
        ("Answer: -3.5", "-3.5"),
        ("The answer is $1,234.", "1,234"),
        ("The answer is x = 7.", "x = 7"),
        ("so \\boxed{12}", "12"),
        ("The answer is \\pi", "\\pi"),
        ("The answer is a+b.", "a+b"),
        ("\\boxed{\\text{7 apples}}", "\\text{7 apples}"),
        ("She pays 20 and gets 7 back. The answer is the change she gets.", None),
        ("\\boxed{\\text{none}}", None),
        ("The answer is Paris.", None),
    ],
)
def test_math_answers_are_numbers_or_expressions(text, raw):
    assert extract_answer(text, math=True) == raw


def test_prose_is_still_an_answer_outside_math():
    assert answer_of("The answer is the change she gets.") == "the change she gets"
    assert answer_of("The answer is the change she gets.", math=True) is None


def test_a_math_problem_gets_no_prose_answer_from_votes_or_grades():
    import asyncio

    from ponder.strategies.common import candidate
    from ponder.tasks.base import MathChecker, answer, graded_as_math
    from ponder.types import Generation, Problem
    from ponder.verifiers.math import MathVerifier

    prose = "The answer is the change she gets."
    gsm = Problem("p", "q", answer="7", checker=MathChecker("7"))
    assert graded_as_math(gsm) and graded_as_math(Problem("p", "q", answer="7"))
    assert not graded_as_math(Problem("p", "q", kind="open"))
    assert not graded_as_math(Problem("p", "q", checker=lambda text: True))  # its own grader: any answer
    assert answer(gsm, prose) is None
    assert candidate(Generation(prose, "stop", 8), problem=gsm).answer is None
    assert candidate(Generation(prose, "stop", 8)).answer == "the change she gets"  # no problem: as before
    (score,) = asyncio.run(MathVerifier().score(Problem("p", "q", answer="7"), [prose]))
    assert (score.value, score.answer, score.detail) == (0.0, None, "no answer found")
