"""Open tasks: the built-in prompts, judged comparison against a baseline (both orders, ties half, position bias
cancelled), and checker-only strategies refused for open problems with the strategies that fit."""

from __future__ import annotations

import asyncio
import json

import pytest

from ponder.backends.scripted import Reply, ScriptedBackend
from ponder.errors import InvalidParameter
from ponder.experiments.judged import Verdict, judge_both_orders, preference, win_rate
from ponder.experiments.sweep import SweepConfig, plan
from ponder.tasks import load_task
from ponder.types import Problem
from ponder.verifiers.judge import JudgeVerifier

PROMPT = Problem(id="open/x", question="What is the meaning of life?", answer=None, kind="open")


def test_the_built_in_open_prompts_are_open_problems_without_a_checker() -> None:
    problems = load_task("open").problems()
    assert len(problems) >= 30 and all(p.kind == "open" and p.checker is None for p in problems)
    assert len({p.id for p in problems}) == len(problems)
    assert {p.metadata["category"] for p in problems} == {"essay", "explanation", "advice", "philosophy"}
    assert any("meaning of life" in p.question for p in problems)


def test_a_users_jsonl_prompts_can_be_open(tmp_path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"question": "Describe autumn."}) + "\n")
    (problem,) = load_task(f"jsonl:{path}", kind="open").problems()
    assert problem.kind == "open" and problem.checker is None


def _judge(letter_of) -> JudgeVerifier:
    """A scripted judge over the real compare prompt: letter_of(response A, response B) -> "A" or "B"."""
    def script(call, i):
        text = call.last_user
        a = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
        b = text.split("Response B:\n")[1].split("\n\nAnswer with")[0]
        letter = letter_of(a, b)
        other = "B" if letter == "A" else "A"
        return Reply(letter, logprob=-0.1, top_logprobs={letter: -0.1, other: -2.5})
    return JudgeVerifier(ScriptedBackend(script))


def _verdicts(judge, pairs):
    return [asyncio.run(judge_both_orders(judge, PROMPT, r, b)) for r, b in pairs]


PAIRS = [("a thoughtful answer", "a terse answer"), ("another long answer", "no"), ("42", "a careful essay")]


def test_a_judge_that_always_prefers_the_first_position_gives_exactly_one_half() -> None:
    report = win_rate(_verdicts(_judge(lambda a, b: "A"), PAIRS))
    assert report.win_rate == 0.5 and report.ci == (0.5, 0.5)
    assert report.position_bias == 0.5 and report.self_agreement == 0.0  # always first: never consistent
    second = win_rate(_verdicts(_judge(lambda a, b: "B"), PAIRS))
    assert second.win_rate == 0.5 and second.position_bias == -0.5


def test_a_judge_that_prefers_longer_answers_is_consistent_and_unbiased() -> None:
    report = win_rate(_verdicts(_judge(lambda a, b: "A" if len(a) >= len(b) else "B"), PAIRS))
    assert report.win_rate == pytest.approx(2 / 3) and report.self_agreement == 1.0
    assert report.position_bias == 0.0


def test_ties_count_half() -> None:
    assert preference(0.5) == 0.5 and Verdict(0.5, 0.5).score == 0.5 and Verdict(0.5, 0.5).consistent
    assert Verdict(0.9, 0.5).score == 0.75 and not Verdict(0.9, 0.5).consistent


def test_a_checker_only_strategy_is_refused_for_open_prompts_naming_those_that_fit() -> None:
    config = SweepConfig("open", "scripted", ("cot", "self_consistency"), (1, 2), limit=2)
    with pytest.raises(InvalidParameter) as err:
        plan(config, load_task("open").problems(2))
    message = str(err.value)
    assert "self_consistency takes only math, code problems" in message
    fit = message.split("strategies that take open problems: ")[1]
    assert "budget_forcing" in fit and "tournament" in fit and "cot" in fit
    assert "self_consistency" not in fit and "program_aided" not in fit
    assert plan(SweepConfig("open", "scripted", ("cot", "budget_forcing"), (1, 2), limit=2),
                load_task("open").problems(2))
