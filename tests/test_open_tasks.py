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


def test_the_preference_keeps_the_judges_probabilities_and_cancels_a_constant_lean() -> None:
    # a judge that likes the response (0.7) but adds 0.2 to whichever answer comes first: 0.9 and 0.5
    leaning = Verdict(0.9, 0.5)
    assert leaning.score == 0.75 and leaning.preference == pytest.approx(0.7)
    assert Verdict(0.6, 0.6).preference == 0.5  # always first, however sure: exactly even
    report = win_rate([leaning, Verdict(0.6, 0.6)])
    assert report.mean_p_first == pytest.approx((0.9 + 0.5 + 0.6 + 0.6) / 4 - 0.5)


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


# -- judged sweeps: the same sweep, store, resume and report paths math uses ----------------------------------
def _open_reply(call, i):
    """Essays whose quality is their length in words; a judge (max_tokens 1) prefers the longer of A and B."""
    text = call.last_user
    if call.params.max_tokens == 1 and "Response A:" in text:
        a = text.split("Response A:\n")[1].split("\n\nResponse B:")[0]
        b = text.split("Response B:\n")[1].split("\n\nAnswer with")[0]
        letter = "A" if len(a.split()) > len(b.split()) else "B"
        other = "B" if letter == "A" else "A"
        return Reply(letter, logprob=-0.05, top_logprobs={letter: -0.05, other: -3.0})
    if call.prefix.startswith("<think>"):  # budget forcing: thinking stops, then the answer grows with it
        if "</think>" in call.prefix:
            return "Trees cool streets. " * (1 + call.prefix.count("thought") // 50)
        return "a thought " * 400  # cut at the thinking budget
    return "Trees cool streets."


def _judged_sweep(tmp_path, strategies=("budget_forcing",), budgets=(1, 2), judge=None, **kw):
    from ponder.experiments.store import Store
    from ponder.experiments.sweep import run_sweep

    config = SweepConfig("open", "scripted", strategies, budgets, limit=3, max_tokens=64)
    store = Store.create(tmp_path / "run", config.to_dict())
    tally = asyncio.run(run_sweep(config, ScriptedBackend(_open_reply), store, judge=judge, **kw))
    return config, store, tally


def test_an_open_sweep_runs_the_baseline_and_judges_every_other_answer_against_it(tmp_path) -> None:
    _, store, tally = _judged_sweep(tmp_path)
    results = store.results()
    assert {(r.strategy, r.budget) for r in results} == {("cot", 1), ("budget_forcing", 1), ("budget_forcing", 2)}
    judgments = store.judgments()
    assert len(judgments) == 6 and {(j.strategy, j.budget) for j in judgments} == {("budget_forcing", 1),
                                                                                   ("budget_forcing", 2)}
    # longer thinking gives a longer answer here, and this judge prefers longer answers in either order
    assert all(j.response_first > 0.9 and j.baseline_first < 0.1 for j in judgments)
    assert tally.wins["budget_forcing"] == [1.0] * 6
    # the judge's tokens are the evaluation's: none is charged to the strategy's result
    assert all("judge" not in r.usage_by_role for r in results)
    assert all(j.usage_by_role["judge"].prompt_tokens > 0 for j in judgments)


def test_a_resumed_open_sweep_judges_only_what_is_missing(tmp_path) -> None:
    from ponder.experiments.sweep import run_sweep

    config, store, _ = _judged_sweep(tmp_path)
    with store._conn:
        store._conn.execute("DELETE FROM judgments WHERE budget = 2")
    calls = []

    def counting(call, i):
        calls.append(call)
        return _open_reply(call, i)

    asyncio.run(run_sweep(config, ScriptedBackend(counting), store))
    assert len(store.judgments()) == 6
    assert len(calls) == 6 and all(c.params.max_tokens == 1 for c in calls)  # 3 verdicts x 2 orders, no sampling


def test_a_named_judge_judges_and_the_policy_does_not(tmp_path) -> None:
    seen = []

    def judge_reply(call, i):
        seen.append(call)
        return Reply("B", logprob=-0.1, top_logprobs={"B": -0.1, "A": -2.0})  # always the second position

    _, store, _ = _judged_sweep(tmp_path, judge=ScriptedBackend(judge_reply))
    assert len(seen) == 12
    assert {Verdict(j.response_first, j.baseline_first).score for j in store.judgments()} == {0.5}


def test_an_answer_that_is_missing_loses_without_a_judge_call(tmp_path) -> None:
    from ponder.experiments.units import JudgeUnit, run_unit

    unit = JudgeUnit(PROMPT, "budget_forcing", 1, "", "a baseline")
    res = asyncio.run(run_unit(unit, ScriptedBackend(lambda call, i: pytest.fail("no judge call expected"))))
    assert Verdict(res.judgment.response_first, res.judgment.baseline_first).score == 0.0


def test_the_open_report_shows_win_rate_curves_with_intervals_and_the_judges_bias(tmp_path) -> None:
    from ponder.experiments.report import write_report

    _, store, _ = _judged_sweep(tmp_path, strategies=("budget_forcing", "tournament"))
    store.close()
    files = write_report(tmp_path / "run")
    s = json.loads(files.summary_json.read_text())
    rows = {(r["strategy"], r["budget"]): r for r in s["curves"]}
    assert rows[("cot", 1)]["win_rate"] == 0.5
    assert rows[("budget_forcing", 2)]["win_rate"] == 1.0 and rows[("budget_forcing", 2)]["ci_low"] == 1.0
    # the tournament's answers are as long as the baseline's, so this judge falls back on the second position in
    # both orders: each verdict is a tie (0.5), and half of all verdicts lean second: a position bias of -0.25
    assert rows[("tournament", 2)]["win_rate"] == 0.5 and rows[("tournament", 2)]["ci_high"] == 0.5
    assert all({"strategy", "budget", "tokens", "win_rate", "ci_low", "ci_high", "preference"} <= set(r)
               for r in s["curves"])
    assert rows[("budget_forcing", 2)]["preference"] > 0.9 and rows[("cot", 1)]["preference"] == 0.5
    assert s["position_bias"] == pytest.approx(-0.25) and s["self_agreement"] == 0.5 and s["n_prompts"] == 3
    assert rows[("budget_forcing", 2)]["tokens"] > rows[("budget_forcing", 1)]["tokens"] > 0
    page = files.html.read_text()
    assert "Side by side" in page and "Trees cool streets." in page and "win_rate_vs_tokens" in str(files.figures)


def test_best_of_n_on_an_open_task_scores_its_pool_with_the_judge_and_its_curve_is_a_win_rate(tmp_path) -> None:
    from ponder.experiments.report import write_report

    def reply(call, i):
        text = call.last_user
        if "Rate the response" in text:  # the judge's 1-10 score: longer is better
            words = len(text.split("Response:\n")[1].split("\n\nGive one")[0].split())
            return f"Reasons.\nScore: {min(10, words // 3)}"
        if "Response A:" in text:
            return _open_reply(call, i)
        seed = (call.params.seed or 0) + i
        return "Trees cool streets. " * (1 + seed % 3)  # samples of 3, 6 or 9 words; the baseline has 3

    from ponder.experiments.store import Store
    from ponder.experiments.sweep import run_sweep

    config = SweepConfig("open", "scripted", ("best_of_n",), (1, 4), limit=3, max_tokens=64, temperature=0.7)
    store = Store.create(tmp_path / "run", config.to_dict())
    asyncio.run(run_sweep(config, ScriptedBackend(reply), store))
    samples = store.samples()
    assert len(samples) == 12 and all(s.score is not None and "verifier" in s.usage_by_role for s in samples)
    assert len(store.judgments()) == 12  # every pool sample, against the baseline
    store.close()
    s = json.loads(write_report(tmp_path / "run").summary_json.read_text())
    rows = {(r["strategy"], r["budget"]): r for r in s["curves"]}
    # one sample wins when it is longer than the baseline (2 of 3 are); the judge-scored best of 4 nearly always
    assert rows[("best_of_n", 4)]["win_rate"] > rows[("best_of_n", 1)]["win_rate"] > 0.5
    assert rows[("best_of_n", 4)]["tokens"] > 3 * rows[("best_of_n", 1)]["tokens"]


def test_the_cli_sweeps_and_reports_an_open_task_and_refuses_a_named_judge_on_ray(tmp_path) -> None:
    from typer.testing import CliRunner

    from ponder.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = ["sweep", "--task", "open", "--model", "scripted", "--strategies", "cot,budget_forcing", "--budgets", "1",
            "--limit", "2", "--max-tokens", "32"]
    done = runner.invoke(app, [*args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "2 judgments" in done.output and "budget_forcing wins" in done.output
    assert "cot 0%" not in done.output  # an open answer has no accuracy to show
    shown = runner.invoke(app, ["report", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "budget_forcing@1 win rate" in shown.output and "position bias" in shown.output
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "ray"), "--ray", "--judge", "other.gguf"])
    assert refused.exit_code == 2 and "--judge" in refused.output and "--ray" in refused.output
    math = runner.invoke(app, ["sweep", "--task", "gsm8k", "--model", "scripted", "--judge", "scripted", "--out",
                               str(tmp_path / "math")])
    assert math.exit_code == 2 and "only open tasks are judged" in math.output
    again = runner.invoke(app, ["sweep", "--resume", str(out), "--judge", "scripted"])
    assert again.exit_code == 2 and "judge" in again.output  # a resume cannot change who judges


def test_revision_on_an_open_prompt_critiques_the_response_not_an_answer_line(tmp_path) -> None:
    seen = []

    def reply(call, i):
        seen.append(call)
        if "Response A:" in call.last_user:
            return _open_reply(call, i)
        return "Trees cool streets and clean the air." if "critically" in call.last_user else "Trees cool streets."

    from ponder.experiments.store import Store
    from ponder.experiments.sweep import run_sweep

    config = SweepConfig("open", "scripted", ("revision",), (1, 2), limit=2, max_tokens=32)
    store = Store.create(tmp_path / "run", config.to_dict())
    asyncio.run(run_sweep(config, ScriptedBackend(reply), store))
    revise = [c for c in seen if len(c.messages) > 2]
    assert revise and all("The answer is" not in c.last_user for c in revise)  # the open revise prompt
    assert all(c.messages[0].role != "system" for c in seen if "Response A:" not in c.last_user)  # direct answers
    scores = {(j.budget, Verdict(j.response_first, j.baseline_first).score) for j in store.judgments()}
    assert scores == {(1, 0.5), (2, 1.0)}  # one round is the baseline's own answer; the revision is longer
