"""Answer extraction and normalisation: the one place that decides what "the answer" of a text is.

The math verifier and every vote (self-consistency, adaptive consistency, revision) use these functions, so a
vote and a grade never disagree about what a candidate answered. With `math=True` (a problem the math verifier
grades) only a number or an expression is an answer: "The answer is the change she gets." answers nothing.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_IS = re.compile(r"(?:final answer|the answer|\banswer)\s*(?:is|:)\s*[:\s]*\$?\s*([^\n]+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
"""A word that is not a LaTeX command: its presence means a text is prose, not a bare answer."""
_UNIT = re.compile(r"|\\?%|[A-Za-z]{2,}(?:\s+[A-Za-z]+)*\.?")
"""What may follow a number that is still just that number: nothing, a percent sign, or unit words."""
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_TEXT = re.compile(r"\\text\{([^}]*)\}")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*(?=\S)")
_LATEX_ALIASES = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""))


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, with nested braces."""
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    start = depth = matches[-1].end()
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def extract_answer(text: str, *, math: bool = False) -> str | None:
    """The raw final answer in `text`: \\boxed{}, "#### N", "the answer is ...", a bare answer, else the last number.

    A bare answer is a short single line with a digit or a LaTeX command and no words ("\\frac{1}{2}",
    "x = 5"): the whole of it (after its last "=") is the answer, so a grader given just an answer does not keep
    only its last number. With `math=True` a stated answer that is not a number or an expression (see
    `is_math_answer`) is no answer: None, not the last number of the reasoning before it.
    """
    for found in (_boxed(text), _last(_HASHES, text), _answer_is(text)):
        if found and found.strip():
            return found.strip() if not math or is_math_answer(found) else None
    bare = text.strip()
    if len(bare) <= 60 and "\n" not in bare and re.search(r"[\d\\]", bare) and not _WORD.search(bare):
        return bare.rsplit("=", 1)[-1].strip() or bare  # "2 + 3 = 5" answers 5
    numbers = _NUMBER.findall(text)
    return numbers[-1].strip() if numbers else None


def is_math_answer(raw: str) -> bool:
    """True when `raw` is a number or an expression: it has a digit or a LaTeX command, or no word at all ("x",
    "a+b"). "the change she gets" and "\\text{none}" are prose, not answers."""
    s = _TEXT.sub(r"\1", raw)
    if re.search(r"\d", s) or _LATEX_COMMAND.search(s):
        return True
    return bool(re.search(r"[A-Za-z]", s)) and not _WORD.search(s)


def _answer_is(text: str) -> str | None:
    """What follows the last "the answer is", unwrapped when a model echoes it: "The answer is: The answer is 5"."""
    found = _last(_ANSWER_IS, text)
    while found and (inner := _last(_ANSWER_IS, found)) and inner != found:
        found = inner
    # The answer ends with its sentence: "The answer is 7. Tom has 3 left." answers 7 (a decimal point has no space).
    return re.split(r"\.(?:\s|$)", found, maxsplit=1)[0] if found else found


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1] if found else None


def normalize(answer: str | None) -> str | None:
    """A canonical form for comparing and voting: numbers lose $, commas, units and trailing zeros."""
    if answer is None:
        return None
    a = answer.strip().strip(".").replace("\\$", "").replace("$", "").replace("\\!", "").strip()
    a = re.sub(r"\\text\{([^}]*)\}", r"\1", a)
    for alias, canonical in _LATEX_ALIASES:
        a = a.replace(alias, canonical)
    a = _ASSIGNMENT.sub("", a).strip()
    number = _NUMBER.search(a)
    if number and a[: number.start()].strip() in ("", "=") and _UNIT.fullmatch(a[number.end():].strip()):
        return _canonical_number(number.group(0))
    return a.lower() or None


def _canonical_number(s: str) -> str:
    s = s.replace("$", "").replace(",", "").replace(" ", "")
    if "/" in s:
        return s
    try:
        value = float(s)
    except ValueError:
        return s
    if value.is_integer():
        return str(int(value))
    return f"{value:.10g}"


def answer_of(text: str, *, math: bool = False) -> str | None:
    """Extract and normalise in one step (`math`: only a number or an expression counts, see extract_answer)."""
    return normalize(extract_answer(text, math=math))
