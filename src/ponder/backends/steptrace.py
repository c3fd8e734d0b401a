"""A record of every engine step, for `ponder profile`: what was decoded and prefilled together, and where the
step's time went.

The scheduler appends one StepRecord per llama_decode call when tracing is on (a LlamaCppBackend opened with
trace=True). Times are wall-clock seconds from time.perf_counter on the scheduler's thread:

- `decode_s`: inside llama_decode (the model's forward pass over the batch: weights, KV cache, attention);
- `sample_s`: choosing every running sequence's next token (llama.cpp's sampler chain, log-probabilities,
  detokenising and stop strings);
- `other_s`: the rest of the step, and the scheduler's work since the previous step (admitting jobs, forking
  prefixes, building the batch): Python;
- `cache_s`: copying KV to and from the host prefix cache in that time (a finished sequence copied out, a cached
  prefix copied back), taken out of the two above: it is memory traffic, not sampling or Python.

This module owns the record and its thread-safe log; it ignores what the numbers mean (ponder.profiling).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """One llama_decode call."""

    start: float
    """perf_counter seconds at the step's start (relative times only)."""
    width: int
    """Sequences decoded (one new token each)."""
    prefill_tokens: int
    """Prompt tokens prefilled in the same batch."""
    context_sum: int
    """Sum over the decoded sequences of the tokens each attends to (its KV cache length)."""
    context_max: int
    prefill_context_sum: int
    """Sum over the prefilled tokens of the positions each attends to."""
    prefill_kv_tokens: int
    """Sum over the prefill chunks of the KV cells each chunk's attention reads (its end position)."""
    kv_cells: int
    """KV cells holding tokens after the step (running sequences, prefills and cached prefixes)."""
    decode_s: float
    sample_s: float
    other_s: float
    cache_s: float = 0.0
    """0 in steps recorded before ponder timed the host cache's copies (they were then in sample_s and other_s)."""

    @property
    def seconds(self) -> float:
        return self.decode_s + self.sample_s + self.other_s + self.cache_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepLog:
    """The steps of one engine, appended by its scheduler thread and read from any other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: list[StepRecord] = []

    def append(self, record: StepRecord) -> None:
        with self._lock:
            self._steps.append(record)

    def take(self) -> list[StepRecord]:
        """Every step since the last take, and forget them."""
        with self._lock:
            out, self._steps = self._steps, []
        return out
