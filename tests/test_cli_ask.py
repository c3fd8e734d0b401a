"""`ponder ask` and `ponder strategies` through Typer's CliRunner, on a scripted backend."""

import json
import re
import time

import pytest
from typer.testing import CliRunner

from ponder import ScriptedBackend
from ponder.cli import app
from ponder.cli import ask as ask_module
from ponder.errors import InvalidParameter
from ponder.strategies.adaptive_consistency import AdaptiveConsistency

runner = CliRunner()


@pytest.fixture
def backend(monkeypatch):
    """A scripted backend answering 4, 5, 5, 4, 5, ... in turn; `open_backend` returns it."""
    answers = iter(["4", "5", "5", "4", "5", "5", "4", "5"] * 4)
    scripted = ScriptedBackend(lambda call, i: f"Two plus three. The answer is {next(answers)}.")
    opened = []

    def fake_open(spec, **kwargs):
        opened.append((spec, kwargs))
        return scripted

    monkeypatch.setattr(ask_module, "open_backend", fake_open)
    scripted.opened = opened
    return scripted


def test_ask_votes_and_prints_answer_candidates_usage_and_cost(backend):
    out = runner.invoke(app, ["ask", "What is 2+3?", "--n", "3", "--seed", "7"])
    assert out.exit_code == 0, out.output
    assert backend.calls[0].params.n == 3 and backend.calls[0].params.seed == 7
    assert backend.opened == [("qwen2.5-coder-1.5b", {})]
    for shown in ("answer", "self_consistency", "candidates", "usage by role", "policy", "FLOPs", "dollars"):
        assert shown in out.output
    assert "4" in out.output and "5" in out.output


def test_ask_json_reports_the_result_and_usage(backend):
    out = runner.invoke(app, ["ask", "Q?", "-n", "3", "--json", "--threads", "1"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["answer"] == "5" and data["votes"] == {"4": 1.0, "5": 2.0}
    assert data["strategy"] == "self_consistency" and len(data["candidates"]) == 3
    assert data["usage_by_role"]["policy"]["completion_tokens"] == data["usage"]["completion_tokens"] > 0
    assert data["compute"]["flops"] > 2 * 1_000_000 * data["usage"]["completion_tokens"]
    assert data["budget_exhausted"] is False
    assert backend.opened[0][1] == {"n_threads": 1}


def test_ask_defaults_to_greedy_cot_for_one_sample(backend):
    data = json.loads(runner.invoke(app, ["ask", "Q?", "--json"]).output)
    assert data["strategy"] == "cot" and data["answer"] == "4"
    assert backend.calls[0].params.temperature == 0 and backend.calls[0].params.n == 1


def test_ask_maps_n_to_n_max_and_sets_other_fields_by_param(backend):
    out = runner.invoke(app, ["ask", "Q?", "-s", "adaptive_consistency", "-n", "4", "-p", "round_size=2",
                              "-p", "threshold=0.9", "--json"])
    assert out.exit_code == 0, out.output
    assert [c.params.n for c in backend.calls] == [2, 2]
    assert len(json.loads(out.output)["candidates"]) == 4


def test_ask_budget_stops_early_and_says_so(backend):
    data = json.loads(runner.invoke(app, ["ask", "Q?", "-n", "3", "--budget-tokens", "6", "--json"]).output)
    assert data["budget_exhausted"] is True and data["usage"]["completion_tokens"] <= 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-s", "majority"], "unknown strategy"),
        (["-n", "0", "-s", "self_consistency"], "invalid n=0"),
        (["-s", "cot", "--verifier", "math"], "--verifier"),
        (["--budget-tokens", "0"], "budget tokens"),
        (["-s", "best_of_n", "--verifier", "oracle"], "unknown verifier"),
        (["-s", "cot", "-p", "beams=3"], "--param"),
    ],
)
def test_ask_bad_input_exits_2_with_the_message_and_no_traceback(backend, args, message):
    out = runner.invoke(app, ["ask", "Q?", *args])
    assert out.exit_code == 2
    assert message in out.output and "Traceback" not in out.output
    assert backend.calls == []


def test_build_strategy_reads_param_values_by_field_type():
    built = ask_module.build_strategy("adaptive_consistency", {"n": 6}, ["threshold=0.9", "logprobs=false"])
    assert built == AdaptiveConsistency(n_max=6, threshold=0.9, logprobs=False)
    assert ask_module.build_strategy("revision", {}, ["select=vote"]).select == "vote"
    with pytest.raises(InvalidParameter, match="does not take it"):
        ask_module.build_strategy("revision", {"n": 3})


def test_strategies_lists_every_registered_strategy_with_its_paper():
    out = runner.invoke(app, ["strategies"])
    assert out.exit_code == 0, out.output
    for name in ("cot", "self_consistency", "best_of_n", "adaptive_consistency", "revision", "program_aided"):
        assert name in out.output
    assert "Wang et al. 2022" in out.output and "n_max=16" in out.output


def test_strategies_shows_a_broken_strategy_in_its_row(monkeypatch):
    from ponder.registry import STRATEGIES

    monkeypatch.setitem(STRATEGIES._entries, "broken_one", "ponder.strategies.no_such_module:Nothing")
    out = runner.invoke(app, ["strategies"])
    assert out.exit_code == 0 and "broken_one" in out.output and "failed to import" in out.output


def test_strategies_detail_shows_field_docstrings():
    out = runner.invoke(app, ["strategies", "adaptive_consistency"])
    assert out.exit_code == 0 and "threshold" in out.output and "Aggarwal" in out.output
    assert runner.invoke(app, ["strategies", "nope"]).exit_code == 2


def test_zero_samples_and_an_empty_question_are_refused_plainly():
    from typer.testing import CliRunner

    from ponder.cli import app

    r = CliRunner().invoke(app, ["ask", "What is 2+2?", "--model", "scripted", "--n", "0"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "n=0" in r.output and "at least one" in r.output and "cot" not in r.output
    r = CliRunner().invoke(app, ["ask", "   ", "--model", "scripted"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "empty" in r.output


def test_a_sweep_into_a_folder_of_other_files_is_refused(tmp_path):
    from typer.testing import CliRunner

    from ponder.cli import app

    (tmp_path / "notes.txt").write_text("mine")
    r = CliRunner().invoke(app, ["sweep", "--task", "gsm8k", "--model", "scripted", "--limit", "1", "--budgets",
                                 "1", "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "other files" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_all_candidates_cut_off_gets_a_hint_to_raise_max_tokens():
    from typer.testing import CliRunner

    from ponder.cli import app

    r = CliRunner().invoke(app, ["ask", "Count to a hundred.", "--model", "scripted", "--max-tokens", "2"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "raise --max-tokens" in r.output


def test_a_long_solve_shows_a_live_line_of_samples_tokens_and_rate(monkeypatch):
    """While the strategy runs, stderr shows calls, samples, tokens and the rate, moving with the engine's own
    decode counter (a local engine counts tokens before its call returns)."""
    import asyncio
    import io

    from rich.console import Console

    from ponder.cli import live
    from ponder.ledger import Budget
    from ponder.strategies.self_consistency import SelfConsistency
    from ponder.types import Problem

    class Engine(ScriptedBackend):
        decoded = 0

        @property
        def stats(self):  # as LlamaCppBackend's: tokens decoded so far, growing while a call is in flight
            Engine.decoded += 7
            return {"decoded_tokens": Engine.decoded}

    engine = Engine(lambda call, i: "The answer is 4.", latency=1.3)
    monkeypatch.setattr(ask_module, "open_backend", lambda spec, **kw: engine)
    monkeypatch.setattr(live, "REFRESH_S", 0.05)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200)
    strategy = SelfConsistency(n=3)
    result, ledger, _ = asyncio.run(ask_module._run(strategy, Problem(id="q", question="2+2?"), "m", Budget(), {},
                                                    live=console))
    assert result.answer == "4" and ledger.generations == 3
    shown = screen.getvalue()
    assert "thinking:" in shown and "tok/s" in shown
    mid = [int(n.replace(",", "")) for n in re.findall(r"samples done, ([\d,]+) tokens", shown)]
    assert mid and max(mid) > 0  # tokens moved before the only call returned


def test_the_live_line_counts_finished_calls_without_an_engine_counter():
    from ponder.cli.live import tick
    from ponder.ledger import Ledger
    from ponder.types import Usage

    ledger = Ledger()
    ledger.charge("policy", Usage(calls=2, completion_tokens=40))
    ledger.generations = 5
    now = tick(ledger, object(), 0, started=time.monotonic() - 2.0)
    assert (now.calls, now.samples, now.tokens) == (2, 5, 40) and 15 < now.rate < 25
    assert "2 calls, 5 samples done, 40 tokens" in now.line()
