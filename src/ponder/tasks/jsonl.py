"""jsonl:PATH: a user's own problems, one JSON object per line, with configurable field names.

    ponder sweep --task jsonl:my.jsonl              # fields "question" and "answer" (and "id" if present)

An answer in GSM8K style ("... #### 42") is reduced to its final value. Other fields go into the metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import InvalidParameter
from ponder.tasks.base import MathChecker, TaskKind, reference_of
from ponder.types import Problem


@dataclass(frozen=True)
class JsonlTask:
    """Problems read from a JSON Lines file."""

    path: str
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str = "id"
    kind: TaskKind = "math"

    @property
    def name(self) -> str:
        return f"jsonl:{self.path}"

    def problems(self, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The file's problems in file order (seed is unused)."""
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise InvalidParameter("task", self.name, f"no file at {path}; give the path of a .jsonl file")
        out: list[Problem] = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if limit is not None and len(out) >= limit:
                    break
                if line.strip():
                    out.append(self._problem(self._parse(line, n), n))
        return out

    def _parse(self, line: str, n: int) -> dict:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidParameter("task", self.name, f"line {n} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or self.question_field not in record:
            raise InvalidParameter("question_field", self.question_field,
                                   f"line {n} has no such field; name the field that holds the question")
        return record

    def _problem(self, record: dict, n: int) -> Problem:
        raw = record.get(self.answer_field)
        reference = None if raw is None else (reference_of(str(raw)) if "####" in str(raw) else str(raw))
        question = str(record[self.question_field])
        rest = {k: v for k, v in record.items() if k not in (self.question_field, self.answer_field)}
        return Problem(
            id=f"jsonl/{record.get(self.id_field, n)}",
            question=question,
            answer=reference,
            kind=self.kind,
            metadata=rest,
            checker=MathChecker(reference) if self.kind == "math" and reference is not None else None,
        )
