"""Hardware descriptions for what-if predictions: memory bandwidth, FLOP/s, memory size and price per hour.

A few examples ship with ponder (HARDWARE); any other is a JSON file with the same fields. The figures are the
vendors' published peaks (dense, no sparsity) and example cloud prices: a prediction says what the workload would
do at the efficiency ponder's engine reached on this machine, not a quote. "this-machine" is measured on the spot
(ceilings.py). This module owns the descriptions; it ignores how they are used (predict.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import InvalidParameter


@dataclass(frozen=True)
class Hardware:
    name: str
    memory_bandwidth: float
    """Bytes per second, peak."""
    flops: float
    """FLOP/s, peak dense, at the precision the weights compute in."""
    memory_bytes: float
    usd_per_hour: float
    note: str = ""


HARDWARE: dict[str, Hardware] = {
    h.name: h for h in (
        Hardware("h200", 4.8e12, 989e12, 141e9, 3.50, "NVIDIA H200 SXM: HBM3e, BF16 dense tensor cores"),
        Hardware("a100-80gb", 2.039e12, 312e12, 80e9, 1.80, "NVIDIA A100 80GB SXM: HBM2e, BF16 dense"),
        Hardware("l4", 300e9, 121e12, 24e9, 0.80, "NVIDIA L4: GDDR6, FP16 dense"),
        Hardware("laptop-cpu", 60e9, 0.5e12, 16e9, 0.05, "a recent 8-core laptop CPU: dual-channel LPDDR5"),
    )
}
"""Shipped examples: ponder profile --hardware NAME."""


def load_hardware(spec: str) -> Hardware:
    """A shipped example by name, or a JSON file with Hardware's fields."""
    if spec in HARDWARE:
        return HARDWARE[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InvalidParameter("hardware", spec, f"use one of {', '.join(HARDWARE)}, or a JSON file with the fields "
                               "name, memory_bandwidth (B/s), flops (FLOP/s), memory_bytes, usd_per_hour")
    try:
        raw = json.loads(path.read_text())
        hw = Hardware(**raw)
        for field in ("memory_bandwidth", "flops", "memory_bytes", "usd_per_hour"):
            value = getattr(hw, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{field} must be a positive number, not {value!r}")
        return hw
    except (ValueError, TypeError) as exc:
        raise InvalidParameter("hardware", spec, f"not a hardware description ({exc}): give name, memory_bandwidth "
                               "(B/s), flops (FLOP/s), memory_bytes and usd_per_hour") from None
