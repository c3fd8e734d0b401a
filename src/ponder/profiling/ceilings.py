"""This machine's ceilings, measured by two short micro-benchmarks: memory read bandwidth and matmul FLOP/s.

Bandwidth: `threads` workers each sum their own slice of a buffer far larger than the caches (numpy releases the
GIL inside the reduction), repeated, best of the repeats: the read stream a decode step makes over the weights.
FLOP/s: float32 matrix products (numpy's BLAS, its own threads), best of the repeats. Both are upper bounds the
engine can approach, not reach: llama.cpp's quantised kernels also dequantise as they go.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ceilings:
    memory_bandwidth: float
    """Bytes per second read."""
    flops: float
    """FLOP/s of a float32 matmul."""
    threads: int
    seconds: float
    """How long measuring took."""


def measure_ceilings(threads: int = 2, buffer_bytes: int = 512 << 20, repeats: int = 5, n: int = 1024) -> Ceilings:
    start = time.perf_counter()
    buf = np.ones(buffer_bytes // 8, dtype=np.float64)
    parts = np.array_split(buf, threads)
    best_bw = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best_bw = max(best_bw, buf.nbytes / (time.perf_counter() - t))
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    best_flops = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best_flops = max(best_flops, 2.0 * n**3 / (time.perf_counter() - t))
    return Ceilings(best_bw, best_flops, threads, time.perf_counter() - start)
