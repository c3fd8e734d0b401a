"""The run store: round trips, atomic units, refusal of duplicates, clear errors on corrupt files."""

import dataclasses
import sqlite3

import pytest

from ponder.errors import StoreError
from ponder.experiments.records import ResultRow, SampleRow
from ponder.experiments.store import Store, config_differences
from ponder.types import Problem, Usage

CONFIG = {"task": "gsm8k", "budgets": [1, 2, 4], "seed": 0}


def sample(i, pid="p1", finish="stop"):
    return SampleRow(pid, "cot", i, 100 + i, f"text {i}", str(i), i == 1, 0.5 if i else None, finish,
                     {"policy": Usage(10 if i == 0 else 0, 5, 0, 0, 1, 0.25)}, 0.25)


def make_store(tmp_path):
    store = Store.create(tmp_path / "run", CONFIG)
    store.add_problems([Problem("p1", "Q1?", "1"), Problem("p2", "Q2?", "2")])
    return store


def test_rows_round_trip_exactly(tmp_path):
    store = make_store(tmp_path)
    rows = [sample(0), sample(1, finish="length")]
    result = ResultRow("p2", "beam_search", 4, "2", True, "stop", False,
                       {"policy": Usage(3, 40, 1, 0, 4, 1.5), "verifier": Usage(9, 1, 0, 0, 2, 0.1)},
                       1.6, {"beams": [1, 2]}, "full text")
    store.add_samples(rows)
    store.add_result(result)
    store.close()
    reopened = Store.open(tmp_path / "run")
    assert reopened.config == CONFIG
    assert reopened.samples() == rows
    assert reopened.results() == [result]
    assert [p.problem_id for p in reopened.problems()] == ["p1", "p2"]
    assert reopened.done_keys() == {("pool", "p1", "cot"), ("result", "p2", "beam_search", 4)}
    assert reopened.truncation() == (1, 3)


def test_a_unit_is_stored_whole_or_not_at_all(tmp_path):
    store = make_store(tmp_path)
    store.add_samples([sample(0)])
    with pytest.raises(sqlite3.IntegrityError):
        store.add_samples([sample(1), sample(0)])  # the duplicate aborts the whole unit
    assert [r.index for r in store.samples()] == [0]


def test_store_uses_wal(tmp_path):
    store = make_store(tmp_path)
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_create_refuses_to_overwrite_and_open_refuses_missing(tmp_path):
    make_store(tmp_path).close()
    with pytest.raises(StoreError, match="--resume"):
        Store.create(tmp_path / "run", CONFIG)
    with pytest.raises(StoreError, match="no run store"):
        Store.open(tmp_path / "elsewhere")


def test_garbage_file_is_reported_as_corrupt(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "store.sqlite").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="corrupt"):
        Store.open(tmp_path / "run")


def test_foreign_sqlite_file_is_not_a_ponder_store(tmp_path):
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="missing tables"):
        Store.open(path)


def test_damaged_config_is_reported(tmp_path):
    make_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "run" / "store.sqlite")
    conn.execute("UPDATE run SET value='{not json' WHERE key='config'")
    conn.commit()
    with pytest.raises(StoreError, match="config"):
        Store.open(tmp_path / "run")


def test_config_differences_name_each_changed_key():
    diff = config_differences({"seed": 0, "budgets": [1, 2], "task": "gsm8k"},
                              {"seed": 1, "budgets": [1, 2], "task": "gsm8k", "max_tokens": 256})
    assert diff == ["max_tokens: None -> 256", "seed: 0 -> 1"]


def test_a_blank_file_left_by_a_killed_create_can_be_created_again(tmp_path):
    (tmp_path / "run").mkdir()
    sqlite3.connect(tmp_path / "run" / "store.sqlite").close()  # created, schema never committed
    with pytest.raises(StoreError, match="missing tables"):
        Store.open(tmp_path / "run")
    Store.create(tmp_path / "run", CONFIG).close()
    assert Store.open(tmp_path / "run").config == CONFIG


def test_sessions_add_up_the_sweeps_wall_time(tmp_path):
    store = make_store(tmp_path)
    assert store.wall_seconds() == 0.0
    first = store.start_session()
    store.set_session_seconds(first, 5.0)
    store.set_session_seconds(first, 7.5)  # updated as units finish; the last value counts
    second = store.start_session()  # a resume
    store.set_session_seconds(second, 2.5)
    assert store.wall_seconds() == pytest.approx(10.0)


def test_machine_time_is_shared_out_by_generated_tokens():
    from ponder.experiments.outcomes import CostModel
    from ponder.ledger import PriceTable

    rows = [dataclasses.replace(sample(i), usage_by_role={"policy": Usage(completion_tokens=t, seconds=99.0)},
                                seconds=99.0) for i, t in ((0, 10), (1, 30))]
    model = CostModel("local-model", None, PriceTable(hardware_usd_per_hour=3.6)).amortised(8.0, rows)
    tokens, _, seconds, usd = model.of(rows[1].usage_by_role, rows[1].seconds)
    assert (tokens, seconds) == (30, pytest.approx(6.0))  # 30 of 40 tokens -> 3/4 of 8 s, not the row's 99 s
    assert usd == pytest.approx(6.0 / 3600 * 3.6)
