"""Features of a partial solution (a prefix of reasoning steps), for a step-level value learned from outcomes.

A value model scores a prefix by the chance that its completions reach the right answer. The training data are
the model's own pooled samples: every sample is cut after each of its steps, and each cut is labelled by whether
that sample's answer was right (one rollout per prefix: the outcome-supervised value of Uesato et al. 2022).

The features are what a search can compute live, for free, on any backend (no logits, no extra calls):

- agreement with its peers, the other partial solutions of the same problem at the same step (the other samples
  of the pool in training; the other children or particles in a search): the share of peers whose text holds each
  intermediate result (a number after "=") of this prefix, over all its results, its weakest one and its last
  step's; and, once it states an answer, that answer's share among the peers that state one;
- quantities it uses that neither the question gave nor an earlier step computed (a sign of invented numbers);
- its depth, length and repeated lines (loops).

Peers are counted once per distinct text: resampled particles are copies, not independent votes. This module owns
the step split, the names and the arithmetic; it ignores who learns from them (experiments/step_train.py) and who
scores with them (step_value.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

STEP_DELIMITER = "\n\n"
"""Where a step ends: a blank line, as beam search and particle filtering cut them."""
STEP_FEATURES = ("depth", "log_chars", "result_agreement", "weakest_result_agreement", "last_step_agreement",
                 "has_answer", "answer_share", "invented_numbers", "repeated_lines")
NAN = float("nan")

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_RESULT = re.compile(r"=\s*\\?\$?\s*(-?\d[\d,]*(?:\.\d+)?)")
_ANSWER = re.compile(r"(?:the answer is|final answer\s*(?:is|:)|\\boxed\s*\{|####)\s*\\?\$?\s*(-?\d[\d,]*(?:\.\d+)?)",
                     re.IGNORECASE)
_COMMON = frozenset({"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "12", "60", "100"})
"""Numbers a solution may use without being given them (units, percent, list markers)."""


def steps_of(text: str, delimiter: str = STEP_DELIMITER) -> list[str]:
    """The non-empty steps of `text`."""
    return [s for s in text.split(delimiter) if s.strip()]


def prefixes(text: str, delimiter: str = STEP_DELIMITER) -> list[str]:
    """`text` cut after each of its steps (the last one is the whole text)."""
    parts = steps_of(text, delimiter)
    return [delimiter.join(parts[: i + 1]) for i in range(len(parts))]


def _norm(number: str) -> str:
    raw = number.replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return raw
    return str(int(value)) if value == int(value) else f"{value:g}"


def _numbers(text: str) -> set[str]:
    return {_norm(n) for n in _NUMBER.findall(text)}


def _results(text: str) -> list[str]:
    return [_norm(n) for n in _RESULT.findall(text)]


def stated_answer(text: str) -> str | None:
    """The last number stated as the answer ("The answer is 12", \\boxed{12}, "#### 12"), else None."""
    found = _ANSWER.findall(text)
    return _norm(found[-1]) if found else None


def step_features(prefix: str, peers: Sequence[str], question: str,
                  delimiter: str = STEP_DELIMITER) -> dict[str, float]:
    """STEP_FEATURES of `prefix` among `peers` (the other partial solutions; copies of it and of each other are
    counted once). NaN where a feature does not apply (no result yet, no peers)."""
    others = [p for p in dict.fromkeys(peers) if p != prefix]
    peer_numbers = [_numbers(p) for p in others]
    parts = steps_of(prefix, delimiter)

    def agreement(results: Sequence[str]) -> list[float]:
        if not others:
            return []
        return [sum(r in nums for nums in peer_numbers) / len(others) for r in results]

    given = _numbers(question) | _COMMON

    def derived(text: str) -> list[str]:  # a result that restates a given quantity agrees with anything
        return [r for r in _results(text) if r not in given]

    shares = agreement(derived(prefix))
    last = agreement(derived(parts[-1])) if parts else []
    answer = stated_answer(prefix)
    stated = [a for a in (stated_answer(p) for p in others) if a is not None]
    computed: set[str] = set()
    invented, used = 0, 0
    for step in parts:
        for n in _numbers(step.split("=")[0] if "=" in step else step):
            used += 1
            invented += n not in given and n not in computed
        computed |= set(_results(step)) | _numbers(step)
    lines = [ln.strip() for ln in prefix.splitlines() if ln.strip()]
    return {
        "depth": math.log1p(len(parts)),
        "log_chars": math.log1p(len(prefix)),
        "result_agreement": sum(shares) / len(shares) if shares else NAN,
        "weakest_result_agreement": min(shares) if shares else NAN,
        "last_step_agreement": sum(last) / len(last) if last else NAN,
        "has_answer": 0.0 if answer is None else 1.0,
        "answer_share": (sum(a == answer for a in stated) / len(stated)) if answer is not None and stated else NAN,
        "invented_numbers": invented / used if used else 0.0,
        "repeated_lines": 1 - len(set(lines)) / len(lines) if lines else 0.0,
    }


def vector(features: dict[str, float], names: Sequence[str] = STEP_FEATURES) -> list[float]:
    return [float(features.get(n, NAN)) for n in names]
