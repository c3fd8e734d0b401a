"""Deterministic sweeps: `--deterministic` reaches the engine and the store, a resume keeps the run's mode, and (slow,
on the real tiny model) in-process, Ray and resumed runs store identical rows."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.backends.scripted import ScriptedBackend
from ponder.errors import InvalidParameter, StoreError
from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, check_resume, run_sweep, settings
from sweep_helpers import SlowScripted, reply, write_task

MODEL = Path(os.environ.get("PONDER_HOME", Path.home() / ".cache" / "ponder")) / "models" / "smollm2-135m.gguf"
runner = CliRunner()


def cli(*args):
    from ponder.cli import app

    return runner.invoke(app, ["sweep", *map(str, args)])


@pytest.fixture
def opened(monkeypatch):
    """The options the CLI opens each backend with; a local model spec gets a scripted stand-in."""
    import ponder.backends.factory as factory

    calls: list[tuple[str, dict]] = []

    def fake(spec, **opts):
        calls.append((spec, opts))
        backend = ScriptedBackend(reply, model=spec)
        backend.deterministic = bool(opts.get("deterministic"))
        return backend

    monkeypatch.setattr(factory, "open_backend", fake)
    return calls


def test_the_flag_reaches_the_engine_and_the_store_and_a_resume_keeps_it(tmp_path, opened):
    task = write_task(tmp_path, 2)
    first = cli("--task", task, "--model", "smollm2-135m", "--budgets", "1,2", "--deterministic", "--out",
                tmp_path / "r")
    assert first.exit_code == 0, first.output
    assert opened[-1] == ("smollm2-135m", {"deterministic": True})
    assert Store.open(tmp_path / "r").config["deterministic"] is True
    resumed = cli("--resume", tmp_path / "r")  # no flag: the stored mode, not the default
    assert resumed.exit_code == 0, resumed.output
    assert opened[-1] == ("smollm2-135m", {"deterministic": True})


def test_a_default_run_records_it_and_cannot_be_resumed_deterministic(tmp_path, opened):
    task = write_task(tmp_path, 2)
    assert cli("--task", task, "--model", "smollm2-135m", "--budgets", "1", "--out", tmp_path / "r").exit_code == 0
    assert opened[-1] == ("smollm2-135m", {})
    assert Store.open(tmp_path / "r").config["deterministic"] is False
    refused = cli("--resume", tmp_path / "r", "--deterministic")
    assert refused.exit_code == 2 and "deterministic: False -> True" in refused.output
    assert len(opened) == 1  # refused before the model loads


def test_a_store_made_before_the_flag_resumes_as_default(tmp_path):
    config = SweepConfig(write_task(tmp_path, 2), "scripted", ("cot",), (1,))
    backend = SlowScripted()
    old = {k: v for k, v in settings(config, backend, "math").items() if k != "deterministic"}
    check_resume(old, settings(config, backend, "math"), tmp_path)  # no difference
    with pytest.raises(StoreError, match="deterministic: False -> True"):
        check_resume(old, settings(SweepConfig(config.task, "scripted", ("cot",), (1,), deterministic=True),
                                   backend, "math"), tmp_path)


def test_run_sweep_refuses_a_backend_that_cannot_fix_its_batches(tmp_path):
    config = SweepConfig(write_task(tmp_path, 2), "scripted", ("cot",), (1,), deterministic=True)
    listed = ScriptedBackend(["a", "b"])  # replies by call order: not deterministic
    store = Store.create(tmp_path / "r", settings(config, listed, "math"))
    with pytest.raises(InvalidParameter, match="deterministic"):
        asyncio.run(run_sweep(config, listed, store))
    other = Store.create(tmp_path / "d", settings(SweepConfig(config.task, "scripted", ("cot",), (1,)),
                                                  SlowScripted(), "math"))
    with pytest.raises(StoreError, match="mode it was made in"):  # a library caller cannot switch modes either
        asyncio.run(run_sweep(config, SlowScripted(), other))


def test_cli_refuses_deterministic_on_an_http_server_before_making_a_store(tmp_path):
    result = cli("--task", write_task(tmp_path, 1), "--model", "http://127.0.0.1:9/v1#m", "--deterministic",
                 "--out", tmp_path / "r")
    assert result.exit_code == 2 and "deterministic" in result.output
    assert not (tmp_path / "r" / "store.sqlite").exists()


def test_ray_replicas_are_opened_deterministic():
    from ponder.distributed.launch import replica_spec

    spec, _ = replica_spec("smollm2-135m", 2, 1, deterministic=True)
    assert dict(spec.options) == {"deterministic": True, "n_threads": 1}


def test_the_report_says_whether_a_run_was_deterministic(tmp_path):
    from ponder.experiments.report import write_report

    for name, flag in (("d", True), ("n", False)):
        config = SweepConfig(write_task(tmp_path, 2), "scripted", ("cot", "self_consistency"), (1, 2),
                             deterministic=flag)
        backend = SlowScripted()
        store = Store.create(tmp_path / name, settings(config, backend, "math"))
        asyncio.run(run_sweep(config, backend, store, InProcessExecutor(backend)))
        store.close()
        files = write_report(tmp_path / name)
        assert files.deterministic is flag
        assert json.loads(files.summary_json.read_text())["provenance"]["deterministic"] is flag
        assert ("Batching: deterministic" in files.summary_md.read_text()) is flag


# ---- slow: the real tiny model --------------------------------------------------------------------------------
def rows(store: Store) -> list[tuple]:
    """Every stored sample and result: texts, answers, seeds and token counts."""
    samples = [(s.problem_id, s.pool, s.index, s.seed, s.text, s.answer, s.correct, s.finish_reason,
                s.mean_logprob, s.usage_by_role["policy"].completion_tokens, s.usage_by_role["policy"].prompt_tokens)
               for s in store.samples()]
    results = [(r.problem_id, r.strategy, r.budget, r.text, r.answer, r.correct, r.finish_reason,
                r.usage_by_role["policy"].completion_tokens) for r in store.results()]
    return samples + results


@pytest.fixture(scope="module")
def model() -> str:
    pytest.importorskip("llama_cpp")
    if not MODEL.is_file():
        pytest.skip("smollm2-135m not pulled: ponder models pull smollm2-135m")
    return str(MODEL)


CONFIG = {"task": "gsm8k", "strategies": ("cot", "self_consistency"), "budgets": (1, 2), "limit": 3,
          "max_tokens": 128, "seed": 3, "deterministic": True}
"""The issue's sweep. At 128 tokens, default batching or flash attention at 1 vs 2 threads changed its rows."""


def _sweep(backend, folder: Path, executor, on_result=None) -> Store:
    config = SweepConfig(model=str(MODEL), **CONFIG)
    store = Store.open(folder) if (folder / "store.sqlite").exists() else Store.create(
        folder, settings(config, backend, "math"))
    asyncio.run(run_sweep(config, backend, store, executor, on_result=on_result))
    return store


@pytest.mark.slow
def test_deterministic_sweeps_store_identical_rows_in_process_resumed_and_on_ray(tmp_path, model):
    pytest.importorskip("ray")
    from ponder.backends.factory import open_backend
    from ponder.distributed import RayExecutor
    from ponder.distributed.launch import RayOptions, ray_replicas

    class Stop(Exception):
        pass

    def stop_after_two(res):
        done.append(res)
        if len(done) == 2:
            raise Stop

    # Ray first: its replicas must hash the same ponder source as this driver (code_digest), which is fixed now.
    # The thread counts are the CLI's defaults on a 2-core machine: 1 per actor, 2 in-process.
    with ray_replicas(model, RayOptions(replicas=2), n_threads=1, deterministic=True) as backend:
        assert backend.deterministic
        on_ray = rows(_sweep(backend, tmp_path / "ray", RayExecutor(backend.pool, concurrency=4)))
    local = open_backend(model, n_threads=2, deterministic=True)
    try:
        assert local._scheduler.exclusive and local._scheduler.cache_entries == 0
        expected = rows(_sweep(local, tmp_path / "local", InProcessExecutor(local, concurrency=4)))
        done: list = []
        with pytest.raises(Stop):  # a run stopped part-way, then resumed on a fresh engine
            _sweep(local, tmp_path / "resumed", InProcessExecutor(local, concurrency=4), stop_after_two)
    finally:
        local.close()
    assert 0 < len(rows(Store.open(tmp_path / "resumed"))) < len(expected)
    again = open_backend(model, n_threads=1, deterministic=True)  # another thread count too
    try:
        resumed = rows(_sweep(again, tmp_path / "resumed", InProcessExecutor(again, concurrency=2)))
    finally:
        again.close()
    assert len(expected) == 3 * 2 + 3 and len({r[4] for r in expected[:6]}) > 1  # real, varied text
    assert resumed == expected
    assert on_ray == expected
    # The same settings recorded, sampler chain included: a Ray run may be resumed in-process and the other way.
    check_resume(Store.open(tmp_path / "ray").config, Store.open(tmp_path / "local").config, tmp_path)
