"""Engine speed benchmark (same as `ponder bench engine`): writes benchmarks/results/engine.json.

    .venv/bin/python benchmarks/engine.py [--model qwen2.5-coder-0.5b] [--runs 3] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ponder.benchmarking import run_engine_benchmark, write_result
from ponder.models import resolve

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "engine.json"))
    args = ap.parse_args()

    def progress(mode: str, r: int, runs: int) -> None:
        print(f"run {r + 1}/{runs}: {mode}", flush=True)

    result = run_engine_benchmark(resolve(args.model), runs=args.runs, max_tokens=args.max_tokens,
                                  n_threads=args.threads, progress=progress,
                                  on_run=lambda partial: write_result(partial, args.out))
    write_result(result, args.out)
    print(json.dumps({k: v for k, v in result.items() if k.startswith("ratio") or k in ("sequential", "batched",
                                                                                          "concurrent")}, indent=1))


if __name__ == "__main__":
    main()
