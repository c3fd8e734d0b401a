"""The run store: one SQLite file per sweep (WAL mode), one row per sample or search result, resumable.

Tables: `run` (the sweep's config as JSON: task, model and its sha256, sampling parameters, prompts, seeds,
ponder version), `problems` (id, the prompt sent, reference, metadata), `samples` (pool rows, UNIQUE(problem_id,
pool, idx)), `results` (search/greedy rows, UNIQUE(problem_id, strategy, budget)) and, for open tasks,
`judgments` (each result judged against the baseline, same key). Every write is one
transaction, committed before the next unit starts, so a process killed at any moment (kill -9 included) loses
only the unit in flight; the UNIQUE keys make a unit impossible to store twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ponder.errors import StoreError
from ponder.experiments.records import JudgmentRow, ProblemRow, ResultRow, SampleRow
from ponder.types import Problem, Usage

SCHEMA_VERSION = 2
"""2: samples carry their mean token log-probability (votes break ties by it, as the deployed strategies do)."""
STORE_FILE = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS problems (
    problem_id TEXT PRIMARY KEY, position INTEGER NOT NULL, question TEXT NOT NULL, reference TEXT,
    metadata TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS samples (
    problem_id TEXT NOT NULL, pool TEXT NOT NULL, idx INTEGER NOT NULL, seed INTEGER NOT NULL, text TEXT NOT NULL,
    answer TEXT, correct INTEGER NOT NULL, score REAL, finish_reason TEXT NOT NULL, usage TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL, seconds REAL NOT NULL, mean_logprob REAL,
    UNIQUE (problem_id, pool, idx));
CREATE TABLE IF NOT EXISTS results (
    problem_id TEXT NOT NULL, strategy TEXT NOT NULL, budget INTEGER NOT NULL, answer TEXT, correct INTEGER NOT NULL,
    finish_reason TEXT NOT NULL, budget_exhausted INTEGER NOT NULL, usage TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL, seconds REAL NOT NULL, trace TEXT NOT NULL, text TEXT NOT NULL DEFAULT '',
    UNIQUE (problem_id, strategy, budget));
"""
_SESSIONS = "CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, seconds REAL NOT NULL)"
"""Wall-clock seconds of each sweep session (a run, or a resume): what a local model's compute cost in time."""
_FEATURES = ("CREATE TABLE IF NOT EXISTS features (problem_id TEXT NOT NULL, pool TEXT NOT NULL, idx INTEGER NOT NULL, "
             "source TEXT NOT NULL, vals TEXT NOT NULL, UNIQUE (problem_id, pool, idx))")
"""Each sample's own features for a learned verifier, as JSON: "sampled" (from the log-probabilities it was drawn
with) or "rescored" (`ponder verifier featurize`, which replaces them). A store made before it gains it on open."""
_STEPS = "CREATE TABLE IF NOT EXISTS steps (id INTEGER PRIMARY KEY AUTOINCREMENT, vals TEXT NOT NULL)"
"""The engine's steps (backends/steptrace.py) of a run swept with --profile, as JSON, for `ponder profile`. Made
only by such a run: a store without it was not profiled (or predates profiling)."""
_JUDGMENTS = ("CREATE TABLE IF NOT EXISTS judgments (problem_id TEXT NOT NULL, strategy TEXT NOT NULL, "
              "budget INTEGER NOT NULL, response_first REAL NOT NULL, baseline_first REAL NOT NULL, "
              "usage TEXT NOT NULL, seconds REAL NOT NULL, UNIQUE (problem_id, strategy, budget))")
"""Each result on an open problem judged against the baseline in both orders (JudgmentRow); the judge's usage is
the evaluation's. A store made before it gains it on open."""
_TABLES = {"run", "problems", "samples", "results"}


def store_path(path: str | Path) -> Path:
    """A run folder holds `store.sqlite`; a path ending in .sqlite/.db is the file itself."""
    p = Path(path)
    return p if p.suffix in (".sqlite", ".db") else p / STORE_FILE


def _usage_json(usage_by_role: Mapping[str, Usage]) -> str:
    return json.dumps({role: u.to_dict() for role, u in sorted(usage_by_role.items())})


def _values_json(values: Mapping[str, float] | None) -> str:
    # JSON has no NaN: an unknown feature is stored as null
    return json.dumps({k: (None if v != v else float(v)) for k, v in (values or {}).items()})


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _usage_of(text: str) -> dict[str, Usage]:
    return {role: Usage(**fields) for role, fields in json.loads(text).items()}


def _is_blank(file: Path) -> bool:
    """True for a file with no tables: a store whose creation never committed."""
    try:
        conn = sqlite3.connect(file)
        try:
            return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def config_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Human-readable `key: stored -> given` lines for every setting that differs."""
    keys = sorted(set(stored) | set(given))
    return [f"{k}: {stored.get(k)!r} -> {given.get(k)!r}" for k in keys if stored.get(k) != given.get(k)]


class Store:
    """A sweep's SQLite store. Only the sweep driver writes; curves and reports read rows."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path, self._conn = path, conn

    # -- opening ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: Mapping[str, Any]) -> Store:
        """A new store at `path` (a run folder); refuses to overwrite an existing one."""
        file = store_path(path)
        if file.exists() and not _is_blank(file):
            raise StoreError(f"{file} already exists; resume it with --resume {path}, or choose a new --out")
        file.parent.mkdir(parents=True, exist_ok=True)
        store = cls(file, cls._connect(file))
        # One transaction: a store killed while being created is left blank (and may be created again), never half-made.
        conn = store._conn
        conn.execute("BEGIN")
        for statement in [*filter(str.strip, _SCHEMA.split(";")), _SESSIONS, _FEATURES, _JUDGMENTS]:
            conn.execute(statement)
        conn.executemany("INSERT INTO run VALUES (?, ?)", [
            ("schema_version", str(SCHEMA_VERSION)), ("config", json.dumps(dict(config), sort_keys=True))])
        conn.commit()
        return store

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """An existing store; StoreError if it is missing, not SQLite, damaged, or not a ponder store."""
        file = store_path(path)
        if not file.is_file():
            raise StoreError(f"no run store at {file}; start a run with `ponder sweep --out {path}`")
        try:
            conn = cls._connect(file)
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{file} is corrupt or not a ponder store ({exc}); "
                             "start a new run with another --out") from None
        if check != "ok" or not tables >= _TABLES:
            conn.close()
            detail = check if check != "ok" else f"missing tables {sorted(_TABLES - tables)}"
            raise StoreError(f"{file} is corrupt or not a ponder store ({detail}); start a new run with another --out")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(samples)")}
        if "mean_logprob" not in columns:  # a version-1 store: its samples have no log-probabilities (NULL)
            with conn:
                conn.execute("ALTER TABLE samples ADD COLUMN mean_logprob REAL")
        with conn:
            conn.execute(_FEATURES)
            conn.execute(_JUDGMENTS)
        store = cls(file, conn)
        store.config  # noqa: B018 - validate the config row now, not at first use
        return store

    @staticmethod
    def _connect(file: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(file)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a committed unit survives kill -9 and power loss
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the run ---------------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        row = self._conn.execute("SELECT value FROM run WHERE key='config'").fetchone()
        try:
            config = json.loads(row[0]) if row else None
        except json.JSONDecodeError:
            config = None
        if not isinstance(config, dict):
            raise StoreError(f"{self.path} has no readable run config; it is corrupt: start a new run")
        return config

    def value(self, key: str) -> Any:
        """A JSON value kept in the run table beside the config (never compared on resume), or None."""
        row = self._conn.execute("SELECT value FROM run WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_value(self, key: str, value: Any) -> None:
        if key in ("config", "schema_version"):
            raise ValueError(f"{key} is the store's own")
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO run VALUES (?, ?)", (key, json.dumps(value)))

    def set_limit(self, limit: int) -> None:
        """Grow the run to the task's first `limit` problems (see sweep.grown_limit); the rows it holds stay."""
        config = {**self.config, "limit": limit}
        with self._conn:
            self._conn.execute("UPDATE run SET value=? WHERE key='config'", (json.dumps(config, sort_keys=True),))

    # -- writing ---------------------------------------------------------------------------------------
    def add_problems(self, problems: Sequence[Problem]) -> None:
        """Record the problems (prompt as sent, reference, metadata); existing ones are left alone."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO problems VALUES (?, ?, ?, ?, ?)",
                [(p.id, i, p.question, p.answer, json.dumps(dict(p.metadata), default=str))
                 for i, p in enumerate(problems)])

    def add_samples(self, rows: Iterable[SampleRow]) -> None:
        """All of one unit's pool samples in one transaction: all are stored, or none."""
        with self._conn:
            self._conn.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.problem_id, r.pool, r.index, r.seed, r.text, r.answer, int(r.correct), r.score,
                  r.finish_reason, _usage_json(r.usage_by_role),
                  sum(u.completion_tokens for u in r.usage_by_role.values()), r.seconds, r.mean_logprob)
                 for r in rows])
            self._conn.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, 'sampled', ?)", [
                (r.problem_id, r.pool, r.index, _values_json(r.features)) for r in rows if r.features is not None])

    def add_steps(self, records: Sequence[Any]) -> None:
        """Engine steps (StepRecord) of this run, appended."""
        with self._conn:
            self._conn.execute(_STEPS)
            self._conn.executemany("INSERT INTO steps (vals) VALUES (?)",
                                   [(json.dumps(r.to_dict()),) for r in records])

    def steps(self) -> list[dict[str, Any]] | None:
        """The recorded engine steps as dicts, in order; None when the run was not profiled."""
        if not self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='steps'").fetchone():
            return None
        return [json.loads(v) for (v,) in self._conn.execute("SELECT vals FROM steps ORDER BY id")]

    def add_features(self, rows: Iterable[tuple[str, str, int, Mapping[str, float]]], source: str) -> None:
        """(problem_id, pool, idx, values) of existing samples, from `source` ("sampled" or "rescored")."""
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)",
                                   [(pid, pool, idx, source, _values_json(v)) for pid, pool, idx, v in rows])

    def features(self) -> dict[tuple[str, str, int], tuple[str, dict[str, float]]]:
        """(problem_id, pool, idx) -> (source, values) for every sample that has features."""
        rows = self._conn.execute("SELECT problem_id, pool, idx, source, vals FROM features")
        return {(pid, pool, idx): (source, {k: _nan(v) for k, v in json.loads(vals).items()})
                for pid, pool, idx, source, vals in rows}

    def add_sample(self, row: SampleRow) -> None:
        self.add_samples([row])

    def add_result(self, row: ResultRow) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.problem_id, row.strategy, row.budget, row.answer, int(row.correct), row.finish_reason,
                 int(row.budget_exhausted), _usage_json(row.usage_by_role),
                 sum(u.completion_tokens for u in row.usage_by_role.values()), row.seconds,
                 json.dumps(row.trace, default=str), row.text))

    def add_judgment(self, row: JudgmentRow) -> None:
        with self._conn:
            self._conn.execute("INSERT INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (row.problem_id, row.strategy, row.budget, row.response_first, row.baseline_first,
                                _usage_json(row.usage_by_role), row.seconds))

    # -- reading ---------------------------------------------------------------------------------------
    def problems(self) -> list[ProblemRow]:
        rows = self._conn.execute("SELECT problem_id, question, reference FROM problems ORDER BY position")
        return [ProblemRow(*r) for r in rows]

    def problem_metadata(self) -> dict[str, dict[str, Any]]:
        """problem_id -> the metadata stored with it (template, source, ...)."""
        rows = self._conn.execute("SELECT problem_id, metadata FROM problems")
        return {pid: json.loads(meta or "{}") for pid, meta in rows}

    def problem_ids(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT problem_id FROM problems ORDER BY position")]

    def samples(self) -> list[SampleRow]:
        rows = self._conn.execute(
            "SELECT s.problem_id, pool, idx, seed, text, answer, correct, score, finish_reason, usage, seconds, "
            "mean_logprob FROM samples s JOIN problems p USING (problem_id) ORDER BY p.position, pool, idx")
        return [SampleRow(pid, pool, idx, seed, text, answer, bool(ok), score, fin, _usage_of(usage), secs, lp)
                for pid, pool, idx, seed, text, answer, ok, score, fin, usage, secs, lp in rows]

    def results(self) -> list[ResultRow]:
        rows = self._conn.execute(
            "SELECT r.problem_id, strategy, budget, answer, correct, finish_reason, budget_exhausted, usage, "
            "seconds, trace, text FROM results r JOIN problems p USING (problem_id) "
            "ORDER BY p.position, strategy, budget")
        return [ResultRow(pid, strat, budget, answer, bool(ok), fin, bool(ex), _usage_of(usage), secs,
                          json.loads(trace), text)
                for pid, strat, budget, answer, ok, fin, ex, usage, secs, trace, text in rows]

    def judgments(self) -> list[JudgmentRow]:
        rows = self._conn.execute(
            "SELECT j.problem_id, strategy, budget, response_first, baseline_first, usage, seconds FROM judgments j "
            "JOIN problems p USING (problem_id) ORDER BY p.position, strategy, budget")
        return [JudgmentRow(pid, strat, budget, rf, bf, _usage_of(usage), secs)
                for pid, strat, budget, rf, bf, usage, secs in rows]

    def done_keys(self) -> set[tuple[Any, ...]]:
        """Keys of finished units: ("pool", problem_id, pool), ("result", problem_id, strategy, budget) and
        ("judgment", problem_id, strategy, budget)."""
        pools = self._conn.execute("SELECT DISTINCT problem_id, pool FROM samples")
        results = self._conn.execute("SELECT problem_id, strategy, budget FROM results")
        judged = self._conn.execute("SELECT problem_id, strategy, budget FROM judgments")
        return ({("pool", *r) for r in pools} | {("result", *r) for r in results}
                | {("judgment", *r) for r in judged})

    def start_session(self) -> int:
        """Open a sweep session (one per run or resume); its wall-clock time prices a local model's compute."""
        with self._conn:
            self._conn.execute(_SESSIONS)  # for a store made before sessions were recorded
            return int(self._conn.execute("INSERT INTO sessions (seconds) VALUES (0)").lastrowid or 0)

    def set_session_seconds(self, session: int, seconds: float) -> None:
        with self._conn:
            self._conn.execute("UPDATE sessions SET seconds = ? WHERE id = ?", (seconds, session))

    def wall_seconds(self) -> float:
        """Wall-clock seconds the sweep sessions spent running units (0 for a store made before sessions)."""
        try:
            return float(self._conn.execute("SELECT COALESCE(SUM(seconds), 0) FROM sessions").fetchone()[0])
        except sqlite3.OperationalError:
            return 0.0

    def truncation(self) -> tuple[int, int]:
        """(rows that hit max_tokens, all rows), samples and results together."""
        cut = total = 0
        for table in ("samples", "results"):
            c, t = self._conn.execute(
                f"SELECT COALESCE(SUM(finish_reason = 'length'), 0), COUNT(*) FROM {table}").fetchone()
            cut, total = cut + c, total + t
        return cut, total
