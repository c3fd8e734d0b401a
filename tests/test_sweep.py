"""The sweep: one pool per problem at N = max(budget), search once per budget, resumable after kill -9."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.errors import BackendError, InvalidParameter, StoreError, UnknownName
from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, check_resume, parse_budgets, plan, run_sweep, settings
from ponder.tasks import load_task
from sweep_helpers import ANSWERS, SlowScripted, reply, write_task

HERE = Path(__file__).parent


def sweep(tmp_path, strategies=("cot", "self_consistency"), budgets=(1, 2, 4), backend=None, concurrency=4,
          name="run", limit=4, **kw):
    config = SweepConfig(write_task(tmp_path), "scripted", tuple(strategies), tuple(budgets), limit=limit, **kw)
    backend = backend or SlowScripted()
    store = Store.create(tmp_path / name, settings(config, backend, "math"))
    tally = asyncio.run(run_sweep(config, backend, store, InProcessExecutor(backend, concurrency)))
    return config, backend, store, tally


def test_pool_is_drawn_once_at_the_largest_budget_and_greedy_once(tmp_path):
    _, backend, store, tally = sweep(tmp_path, budgets=(1, 2, 4, 8))
    samples, results = store.samples(), store.results()
    assert len(samples) == 4 * 8 and len(results) == 4
    pool_calls = [c for c in backend.calls if c.params.n > 1]
    assert len(pool_calls) == 4 and all(c.params.n == 8 for c in pool_calls)
    assert all(r.strategy == "cot" and r.budget == 1 for r in results)
    greedy_calls = [c for c in backend.calls if c.params.n == 1]
    assert all(c.params.temperature == 0.0 for c in greedy_calls)
    for pid in {s.problem_id for s in samples}:
        pool = [s for s in samples if s.problem_id == pid]
        assert [s.index for s in pool] == list(range(8))
        assert [s.seed - pool[0].seed for s in pool] == list(range(8))  # sample i has seed base + i
    # graded against the reference: even seeds answer right, odd ones are off by one
    assert all(s.correct == (s.seed % 2 == 0) for s in samples)
    assert all(s.usage_by_role["policy"].completion_tokens > 0 for s in samples)
    assert tally.rows == len(samples) + len(results)


def test_pools_do_not_depend_on_the_executors_concurrency(tmp_path):
    def pools(store):
        return [(s.problem_id, s.index, s.seed, s.text, s.answer, s.correct) for s in store.samples()]

    one = sweep(tmp_path, concurrency=1, name="a")[2]
    many = sweep(tmp_path, concurrency=6, name="b")[2]
    assert pools(one) == pools(many)


def test_search_strategies_run_once_per_budget_and_best_of_n_pool_gets_self_eval_scores(tmp_path):
    _, _, store, _ = sweep(tmp_path, strategies=("best_of_n", "budget_forcing"), budgets=(1, 2), limit=2)
    results = store.results()
    assert sorted((r.problem_id, r.budget) for r in results) == [("jsonl/q0", 1), ("jsonl/q0", 2),
                                                                  ("jsonl/q1", 1), ("jsonl/q1", 2)]
    assert {r.strategy for r in results} == {"budget_forcing"}
    samples = store.samples()
    assert len(samples) == 2 * 2
    assert all(0.0 < s.score < 1.0 for s in samples)
    assert all(s.usage_by_role["verifier"].completion_tokens == 1 for s in samples)


def test_program_aided_pool_answers_with_the_programs_output(tmp_path):
    def program(call, i):
        q = int(call.last_user.split()[-1].rstrip("?"))
        return f"```python\nx = {ANSWERS[q]}\nprint(x + {i})\n```"

    from ponder.backends.scripted import ScriptedBackend

    _, _, store, _ = sweep(tmp_path, strategies=("program_aided",), budgets=(1, 2), limit=1,
                           backend=ScriptedBackend(program))
    samples = store.samples()
    assert [(s.pool, s.answer, s.correct) for s in samples] == [("program_aided", "3", True),
                                                                 ("program_aided", "4", False)]


def test_a_rerun_draws_nothing_twice(tmp_path):
    config, _, store, _ = sweep(tmp_path)
    again = SlowScripted()
    tally = asyncio.run(run_sweep(config, again, store))
    assert again.calls == [] and tally.rows == 0


def test_a_failing_unit_stops_the_sweep_and_keeps_finished_units(tmp_path):
    class Flaky(SlowScripted):
        async def generate(self, messages, params, prefix=""):
            if "number 2" in messages[-1].content:
                raise BackendError("the server went away")
            return await super().generate(messages, params, prefix)

    with pytest.raises(BackendError, match="went away"):
        sweep(tmp_path, backend=Flaky(), concurrency=1)
    store = Store.open(tmp_path / "run")
    assert {s.problem_id for s in store.samples()} == {"jsonl/q0", "jsonl/q1"}


KILLED_RUN = """
import asyncio, sys
sys.path.insert(0, {here!r})
from sweep_helpers import SlowScripted
from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, run_sweep, settings

config = SweepConfig({task!r}, "scripted", ("cot", "self_consistency"), (1, 2, 4), seed=7)
backend = SlowScripted(delay=0.5)  # long enough to be killed part-way even on a busy machine
store = Store.create({out!r}, settings(config, backend, "math"))
asyncio.run(run_sweep(config, backend, store, InProcessExecutor(backend, 2)))
print("finished")
"""


def _count(db):
    try:
        return sum(map(len, _rows(db).values()))
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def _rows(db):
    conn = sqlite3.connect(db)
    try:
        return {"samples": conn.execute("SELECT * FROM samples ORDER BY problem_id, pool, idx").fetchall(),
                "results": conn.execute("SELECT * FROM results ORDER BY problem_id, strategy, budget").fetchall()}
    finally:
        conn.close()


def test_kill_9_mid_sweep_then_resume_loses_nothing_and_draws_nothing_twice(tmp_path):
    task, out = write_task(tmp_path), tmp_path / "run"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN.format(here=str(HERE), task=task, out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db, deadline = out / "store.sqlite", time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # kill once a few units are stored, long before the end
            if db.exists() and _count(db) >= 6:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _rows(db)
    assert 6 <= sum(map(len, before.values())) < 12 * 5  # killed part-way

    store = Store.open(out)
    config = SweepConfig.from_dict(store.config)
    backend = SlowScripted()
    check_resume(store.config, settings(config, backend, "math"), out)  # same settings: accepted
    asyncio.run(run_sweep(config, backend, store))
    after = _rows(db)

    assert len(after["samples"]) == 12 * 4 and len(after["results"]) == 12  # every unit, exactly once
    assert len({r[:3] for r in after["samples"]}) == 12 * 4
    assert set(before["samples"]) <= set(after["samples"])  # finished rows untouched, byte for byte
    assert set(before["results"]) <= set(after["results"])
    done_before = len({r[:2] for r in before["samples"]}) + len(before["results"])
    assert len(backend.calls) == 12 * 2 - done_before  # only the missing units were drawn
    # the resumed units drew the same seeds a whole run would have
    whole = Store.create(tmp_path / "whole", store.config)
    asyncio.run(run_sweep(config, SlowScripted(), whole))
    assert [r[:6] for r in _rows(tmp_path / "whole" / "store.sqlite")["samples"]] == [r[:6] for r in after["samples"]]


def test_resume_with_other_settings_is_refused_naming_the_differences(tmp_path):
    config, backend, store, _ = sweep(tmp_path)
    other = SweepConfig(config.task, "scripted", config.strategies, (1, 2, 8), limit=4, max_tokens=256)
    with pytest.raises(StoreError) as err:
        check_resume(store.config, settings(other, backend, "math"), tmp_path / "run")
    assert "budgets: [1, 2, 4] -> [1, 2, 8]" in str(err.value) and "max_tokens: 512 -> 256" in str(err.value)
    assert "pool_size" in str(err.value) and "seed" not in str(err.value)


runner = CliRunner()


def cli(*args):
    from ponder.cli import app

    return runner.invoke(app, ["sweep", *map(str, args)])


def test_cli_runs_resumes_and_refuses_other_settings(tmp_path):
    task = write_task(tmp_path, 3)
    first = cli("--task", task, "--model", "scripted", "--budgets", "1,2", "--out", tmp_path / "r")
    assert first.exit_code == 0, first.output
    assert "truncated (hit max_tokens): 0/9" in first.output and "store.sqlite" in first.output
    again = cli("--resume", tmp_path / "r")
    assert again.exit_code == 0 and "nothing new to run" in again.output
    refused = cli("--resume", tmp_path / "r", "--seed", "5", "--budgets", "1,4")
    assert refused.exit_code == 2
    assert "seed: 0 -> 5" in refused.output and "budgets: [1, 2] -> [1, 4]" in refused.output


def test_cli_grows_a_run_by_the_tasks_next_problems_and_never_shrinks_it(tmp_path):
    task = write_task(tmp_path, 5)
    assert cli("--task", task, "--model", "scripted", "--budgets", "1,2", "--limit", 2, "--out",
               tmp_path / "r").exit_code == 0
    with Store.open(tmp_path / "r") as store:
        first = {(s.problem_id, s.index): s.text for s in store.samples()}
    grown = cli("--resume", tmp_path / "r", "--limit", 4)
    assert grown.exit_code == 0, grown.output
    with Store.open(tmp_path / "r") as store:
        assert store.config["limit"] == 4 and len(store.problem_ids()) == 4
        samples = {(s.problem_id, s.index): s.text for s in store.samples()}
        assert len(samples) == 4 * 2 and all(samples[k] == v for k, v in first.items())  # old rows kept as drawn
        assert len(store.results()) == 4
    assert "nothing new to run" in cli("--resume", tmp_path / "r").output  # the grown limit is the run's now
    shrunk = cli("--resume", tmp_path / "r", "--limit", 3)
    assert shrunk.exit_code == 2 and "never shrinks" in " ".join(shrunk.output.split())
    other = cli("--resume", tmp_path / "r", "--limit", 5, "--seed", "9")
    assert other.exit_code == 2 and "seed: 0 -> 9" in other.output
    with Store.open(tmp_path / "r") as store:
        assert store.config["limit"] == 4  # a refused resume leaves the run as it was


def test_cli_passes_task_options_to_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"q": "What is number 0?", "label": "3"}\n{"q": "What is number 1?", "label": "5"}\n')
    result = cli("--task", f"jsonl:{path}", "--task-opt", "question_field=q", "--task-opt", "answer_field=label",
                 "--model", "scripted", "--strategies", "cot", "--budgets", "1", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    store = Store.open(tmp_path / "r")
    assert store.config["task_options"] == {"question_field": "q", "answer_field": "label"}
    assert [p.reference for p in store.problems()] == ["3", "5"]
    assert cli("--task-opt", "oops", "--task", "gsm8k", "--model", "scripted", "--out", tmp_path / "s").exit_code == 2


def test_cli_reports_truncation(tmp_path):
    task = write_task(tmp_path, 2)
    result = cli("--task", task, "--model", "scripted", "--budgets", "1,2", "--max-tokens", "3",
                 "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "truncated (hit max_tokens): 6/6 = 100.0%" in result.output


@pytest.mark.parametrize(("budgets", "message"), [("", "at least one"), ("4,2", "increasing"), ("1,1", "increasing"),
                                                  ("0,1", ">= 1"), ("1,x", "whole numbers")])
def test_bad_budgets_are_refused_with_the_fix(budgets, message):
    with pytest.raises(InvalidParameter, match=message):
        parse_budgets(budgets)


def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path):
    unknown = cli("--task", "gsm9k", "--model", "scripted", "--out", tmp_path / "a")
    assert unknown.exit_code == 2 and "unknown task 'gsm9k'" in unknown.output and "gsm8k" in unknown.output
    bad = cli("--task", write_task(tmp_path), "--model", "scripted", "--budgets", "4,2", "--out", tmp_path / "b")
    assert bad.exit_code == 2 and "increasing" in bad.output
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "store.sqlite").write_bytes(b"\x00garbage" * 500)
    corrupt = cli("--resume", tmp_path / "c")
    assert corrupt.exit_code == 2 and "corrupt" in corrupt.output
    both = cli("--task", "gsm8k", "--model", "scripted")
    assert both.exit_code == 2 and "--out" in both.output


def test_config_validates_strategies_and_limit():
    with pytest.raises(UnknownName, match="self_consistency"):
        SweepConfig("gsm8k", "scripted", ("self_consistancy",), (1, 2))
    with pytest.raises(InvalidParameter, match="limit"):
        SweepConfig("gsm8k", "scripted", ("cot",), (1,), limit=0)


def test_program_aided_is_refused_on_code_tasks():
    problems = load_task("humaneval").problems(1)
    with pytest.raises(InvalidParameter, match="takes only math problems"):
        plan(SweepConfig("humaneval", "scripted", ("program_aided",), (1,)), problems)


def test_code_tasks_get_no_math_system_prompt():
    problems = load_task("humaneval").problems(1)
    units = plan(SweepConfig("humaneval", "scripted", ("cot", "self_consistency"), (1, 2)), problems)
    assert all(dict(u.settings)["system"] == "" for u in units)


@pytest.mark.slow
def test_real_tiny_model_sweep_end_to_end(tmp_path):
    pytest.importorskip("llama_cpp")
    model = Path(os.environ.get("PONDER_HOME", Path.home() / ".cache" / "ponder")) / "models" / "smollm2-135m.gguf"
    if not model.is_file():
        pytest.skip("smollm2-135m not pulled: ponder models pull smollm2-135m")
    from ponder.backends.factory import open_backend

    backend = open_backend(str(model))
    try:
        config = SweepConfig(write_task(tmp_path, 2), str(model), ("cot", "self_consistency"), (1, 2),
                             max_tokens=32)
        store = Store.create(tmp_path / "run", settings(config, backend, "math"))
        asyncio.run(run_sweep(config, backend, store, InProcessExecutor(backend, 2)))
    finally:
        backend.close()
    assert len(store.samples()) == 4 and len(store.results()) == 2
    assert len(store.config["model_sha256"]) == 64
    assert all(s.usage_by_role["policy"].completion_tokens > 0 for s in store.samples())
    assert all(s.finish_reason in ("stop", "length") for s in store.samples())


def test_reply_helper_is_deterministic():
    from ponder.backends.scripted import ScriptedCall
    from ponder.types import SamplingParams, user

    call = ScriptedCall(user("What is number 1?"), SamplingParams(seed=4), "")
    assert reply(call, 0) == reply(call, 0) and "5" in reply(call, 0)


def test_a_cut_off_pool_sample_has_no_answer_and_is_not_right():
    import asyncio

    from ponder import Problem, ScriptedBackend
    from ponder.experiments.units import PoolUnit, run_unit

    problem = Problem("p", "What is 2 + 2?", "4")
    unit = PoolUnit(problem, "cot", 2, 0, (("max_tokens", 8), ("temperature", 0.8)))
    backend = ScriptedBackend(["The answer is 4.", "two plus two is 4 and then " + "more " * 20])
    rows = asyncio.run(run_unit(unit, backend)).samples
    assert [(r.answer, r.correct, r.finish_reason) for r in rows] == [("4", True, "stop"), (None, False, "length")]


def test_the_deployed_strategy_on_a_stored_pool_gives_the_curves_estimate_at_k_equals_n(tmp_path):
    """Curves and strategies share one selection: maj@N from the store equals SelfConsistency(n=N) run on the same
    samples, on pools built to tie (two answers, two votes each) so that the log-probability tie-break decides."""
    from ponder.backends.scripted import Reply, ScriptedBackend
    from ponder.experiments.outcomes import CostModel, pool_outcomes, pool_strategies
    from ponder.ledger import Ledger
    from ponder.strategies.self_consistency import SelfConsistency
    from ponder.tasks.base import grade

    def tied(call, i):
        q = int(call.last_user.split()[-1].rstrip("?"))
        seed = (call.params.seed or 0) + i
        value = ANSWERS[q] + (seed % 2)  # two right, two wrong in every pool of 4
        return Reply(f"It is {value}.\n\nThe answer is {value}.", logprob=-0.05 * (1 + (seed * 7) % 11))

    backend = ScriptedBackend(tied)
    config, _, store, _ = sweep(tmp_path, strategies=("self_consistency",), budgets=(4,), backend=backend, limit=8)
    samples = store.samples()
    assert all(s.mean_logprob is not None for s in samples)  # pools carry log-probabilities
    pids = [p.problem_id for p in store.problems()]
    majority = [s for s in pool_strategies() if s.name == "self_consistency"]
    (curve,) = pool_outcomes(pids, samples, CostModel(), [4], strategies=majority)
    problems = {p.id: p for p in load_task(config.task).problems(8)}
    deployed = []
    for pid in pids:
        seed = samples[[s.problem_id for s in samples].index(pid)].seed
        strategy = SelfConsistency(n=4, seed=seed, temperature=config.temperature)
        res = asyncio.run(strategy.solve(problems[pid], backend, Ledger()))
        deployed.append(float(asyncio.run(grade(problems[pid], res.answer))) if res.answer else 0.0)
    assert curve.correct.tolist() == deployed
    assert 0 < sum(deployed) < len(deployed)  # the tie-break went both ways: the test can tell them apart


def test_pools_at_several_temperatures_are_curves_of_their_own(tmp_path):
    """The sampler is a compute knob: each temperature gets its pools and curves, and the policy can choose it."""
    from ponder.backends.scripted import ScriptedBackend
    from ponder.experiments.outcomes import owner_of
    from ponder.experiments.summary import analyze

    def cool_is_right(call, i):
        q = int(call.last_user.split()[-1].rstrip("?"))
        value = ANSWERS[q] + (0 if call.params.temperature < 0.5 or i % 2 else 1)
        return f"The answer is {value}."

    config, _, store, _ = sweep(tmp_path, strategies=("self_consistency",), budgets=(1, 2),
                                backend=ScriptedBackend(cool_is_right), temperatures=(0.3, 0.9))
    assert {s.pool for s in store.samples()} == {"cot@T=0.3", "cot@T=0.9"}
    a = analyze(store.problems(), store.samples(), store.results(), store.config)
    acc = {o.label: o.accuracy() for o in a.outcomes if o.deployable}
    assert acc["self_consistency[T=0.3]@1"] == 1.0 and acc["self_consistency[T=0.9]@1"] == 0.5
    assert owner_of("self_consistency[T=0.3]") == ("self_consistency", {"temperature": 0.3})
    assert owner_of("best_of_n_max") == ("best_of_n", {"mode": "max"})
    with pytest.raises(InvalidParameter, match="temperatures"):
        SweepConfig(config.task, "scripted", ("self_consistency",), (1,), temperatures=(0.0,))


def test_a_sweeps_kv_cache_type_is_validated_recorded_and_reaches_only_a_local_engine(tmp_path):
    from ponder.errors import InvalidParameter

    config = SweepConfig("gsm8k", "m.gguf", ("cot",), (1,), kv_cache_type="q8_0")
    assert config.to_dict()["kv_cache_type"] == "q8_0"
    assert SweepConfig.from_dict(config.to_dict()) == config
    assert SweepConfig.from_dict({k: v for k, v in config.to_dict().items() if k != "kv_cache_type"}).kv_cache_type \
        == "f16"  # a store made before the setting
    with pytest.raises(InvalidParameter, match="q8_0, q4_0"):
        SweepConfig("gsm8k", "m.gguf", ("cot",), (1,), kv_cache_type="q2_k")
    with pytest.raises(InvalidParameter, match="deterministic"):
        SweepConfig("gsm8k", "m.gguf", ("cot",), (1,), deterministic=True, kv_cache_type="q4_0")
    task = write_task(tmp_path, 2)
    refused = cli("--task", task, "--model", "scripted", "--budgets", "1", "--kv-cache-type", "q8_0",
                  "--out", tmp_path / "r")
    assert refused.exit_code == 2 and "kv_cache_type" in refused.output and not (tmp_path / "r").exists()
