"""Shared by test_sweep.py and the subprocess it kills: a small jsonl task and a deterministic slow backend."""

import asyncio
import json
from pathlib import Path

from ponder.backends.scripted import Reply, ScriptedBackend

ANSWERS = [3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610]


def write_task(folder: Path, n: int = len(ANSWERS)) -> str:
    """A jsonl file of n questions whose answers are ANSWERS; returns the task spec."""
    path = folder / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is number {i}?", "answer": str(a)}) + "\n"
                            for i, a in enumerate(ANSWERS[:n])))
    return f"jsonl:{path}"


def reply(call, i):
    """Deterministic in (question, seed + i): right when (seed + i) is even, else off by one; 'Yes' to self-eval."""
    if call.params.max_tokens == 1:
        return Reply("Yes", logprob=-0.3, top_logprobs={"Yes": -0.3, "No": -1.5})
    q = int(call.last_user.split()[-1].rstrip("?"))
    seed = (call.params.seed or 0) + i
    value = ANSWERS[q] + (seed % 2)
    return f"Let me think.\n\nIt is {value}.\n\nThe answer is {value}."


class SlowScripted(ScriptedBackend):
    """The scripted backend, with a pause per call so a sweep can be killed part-way."""

    def __init__(self, delay: float = 0.0, **kw):
        super().__init__(reply, **kw)
        self.delay = delay

    async def generate(self, messages, params, prefix=""):
        await asyncio.sleep(self.delay)
        return await super().generate(messages, params, prefix)
