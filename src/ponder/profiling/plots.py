"""The profile's figures (matplotlib, Agg): the roofline with every step on it, and step time against context.

Both are drawn from a profile document (profile.py) alone, so a saved profile.json can be re-plotted anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ponder.experiments.plots import _pyplot, _save


def roofline(profile: Mapping[str, Any], path: Path) -> Path:
    """Achieved FLOP/s against arithmetic intensity (log-log), under the machine's two ceilings."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    bw, peak = profile["machine"]["memory_bandwidth"], profile["machine"]["flops"]
    rows = [r for r in profile["steps"] if r["achieved_flops"]]
    xs = [r["intensity"] for r in rows]
    lo, hi = min([*xs, 1.0]) / 2, max([*xs, peak / bw]) * 4
    grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.plot(grid, [min(peak, bw * x) for x in grid], color="black", lw=1.2, label="ceilings (measured)")
    scatter = ax.scatter(xs, [r["achieved_flops"] for r in rows], c=[r["width"] for r in rows], s=10, cmap="viridis")
    fig.colorbar(scatter, ax=ax, label="decode width")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs / byte)")
    ax.set_ylabel("achieved FLOP/s (inside llama_decode)")
    ax.set_title(f"roofline: {profile['model']['name']}, KV {profile['kv_cache_type']}")
    ax.legend(loc="lower right")
    return _save(fig, path)


def step_time(profile: Mapping[str, Any], path: Path) -> Path:
    """Decode step seconds against context per sequence, one colour per width, with each width's KV crossover."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_width: dict[int, list[tuple[float, float]]] = {}
    for r in profile["steps"]:
        if r["width"] and not r["prefill_tokens"]:
            by_width.setdefault(r["width"], []).append((r["context_sum"] / r["width"], r["seconds"]))
    cmap = plt.get_cmap("viridis")
    widths = sorted(by_width)
    for i, w in enumerate(widths):
        color = cmap(i / max(1, len(widths) - 1))
        pts = sorted(by_width[w])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", ms=3, color=color, label=f"width {w}")
        cross = profile["kv_crossover_context"].get(str(w))
        if cross and cross <= max(p[0] for p in pts) * 1.5:
            ax.axvline(cross, color=color, ls=":", lw=1)
    ax.set_xlabel("context per sequence (tokens)")
    ax.set_ylabel("step seconds")
    ax.set_title("decode step time; dotted: where KV reads pass weight reads")
    ax.legend(fontsize=7)
    return _save(fig, path)
