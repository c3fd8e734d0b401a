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
