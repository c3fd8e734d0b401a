"""Process-wide switches that llama.cpp's CPU backend reads from the environment, once, at its first matmul.

This module owns the one ponder sets, GGML_CPU_TILED_MM (llama.cpp's tiled K-quant matmul), and the environment
a child process gets (`child_env`: without what ponder set, so a llama-server started for comparison runs at its
own defaults). A value the user exported is kept whatever the engine asks for. It ignores every other ggml
variable.

Why the tiled matmul is off by default: llama.cpp takes it for K-quant weights whenever a batch has 8 or more
tokens, and on this project's 2-core AVX-512 machine it made the default 1.5B model's decode slower than the
stock kernels; on the 0.5B it changed decode little, and on both it made prefill faster
(benchmarks/results/tiled.json; peer.json has the effect against llama-server, which keeps it on). Test-time
compute spends most on decode.
"""

from __future__ import annotations

import os
import re

from ponder.errors import InvalidParameter

TILED_MM = "GGML_CPU_TILED_MM"
_set_here: dict[str, str] = {}
"""The variables this process set, with the value it set (the user's own exports are never listed)."""


def _atoi(text: str) -> int:
    """C's atoi, which llama.cpp applies to the variable: leading whitespace, a sign and digits; else 0."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def use_tiled_matmul(enabled: bool) -> bool:
    """Ask for the tiled matmul on or off in this process, before the first model loads; returns what llama.cpp
    will use. An exported GGML_CPU_TILED_MM wins. llama.cpp latches the value at its first matmul, so a second
    engine in the same process that asks for the other setting gets InvalidParameter rather than a silent no."""
    want = "1" if enabled else "0"
    current = os.environ.get(TILED_MM)
    if current is None:
        os.environ[TILED_MM] = _set_here[TILED_MM] = want
        return enabled
    if _set_here.get(TILED_MM) == current and current != want:
        raise InvalidParameter("tiled_matmul", enabled, f"an engine in this process already loaded with "
                               f"tiled_matmul={not enabled} and llama.cpp reads {TILED_MM} once per process: use "
                               "the same setting for every engine, or a separate process")
    return _atoi(current) != 0


def child_env() -> dict[str, str]:
    """This process's environment without the variables ponder set (those the user exported stay)."""
    return {k: v for k, v in os.environ.items() if _set_here.get(k) != v}


def tiled_matmul_in_children() -> bool:
    """Whether a ponder engine in a process started from this one (inheriting this environment) uses the tiled
    matmul by default: the variable as this process has it, else off."""
    current = os.environ.get(TILED_MM)
    return current is not None and _atoi(current) != 0
