"""The README's benchmark figures, formatted from the committed JSON in benchmarks/results/.

    .venv/bin/python benchmarks/figures.py      # prints every block the README quotes

tests/test_readme_figures.py checks that the README contains each block exactly as formatted here, so a figure
in the README is always the one a committed benchmark printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
GAIN_TOKEN_CAP = 8.0


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def points(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def quality_table(q: dict[str, Any]) -> str:
    """quality.json: greedy, the best strategy within the token cap and its paired gain, the main strategies,
    coverage, the two samplers, and the compute-optimal policy."""
    lines = [
        "| figure | value |",
        "|---|---|",
        f"| problems (GSM8K test, the first N) | {q['n_problems']} |",
        f"| greedy chain of thought | {pct(q['greedy_accuracy'])} "
        f"({q['greedy_tokens_per_problem']:.0f} tokens per problem) |",
        f"| best strategy within {GAIN_TOKEN_CAP:g}x greedy's tokens | `{q['best_strategy']}`: "
        f"{pct(q['best_accuracy'])} ({q['tokens_per_problem']:.0f} tokens, "
        f"{q['tokens_ratio_vs_greedy']:.2f}x greedy) |",
        f"| its gain over greedy (paired 95% bootstrap interval) | {points(q['gain_over_greedy'])} points "
        f"({points(q['gain_over_greedy_ci_low'])} to {points(q['gain_over_greedy_ci_high'])}) |",
    ]
    for label in ("self_consistency@8", "program_aided@1", "program_aided@8", "hybrid_consistency@1",
                  "hybrid_consistency@4", "adaptive_consistency@8"):
        g = next((c for c in q["candidates"] if c["label"] == label), None)
        if g is not None:
            lines.append(f"| `{label}` | {pct(g['accuracy'])}, gain {points(g['gain'])} "
                         f"({points(g['gain_ci'][0])} to {points(g['gain_ci'][1])}), {g['cost_ratio']:.2f}x tokens |")
    pk = q.get("pass_at_k") or {}
    if pk:
        lines.append(f"| chain-of-thought pass@1 / @4 / @8 (oracle coverage) | {pct(pk.get('1'))} / "
                     f"{pct(pk.get('4'))} / {pct(pk.get('8'))} |")
    sc = q.get("sampler_comparison")
    if sc:
        for name, what in (("pure", "pure temperature (T 0.8, no truncation)"),
                           ("chosen", "Qwen's sampler (T 0.7, top_p 0.8, top_k 20, rep. 1.05)")):
            s = sc[name]
            lines.append(f"| {what}, first {sc['n_problems']}: maj@1 / @2 / @4; pass@4 | "
                         f"{pct(s['maj_at_1'])} / {pct(s['maj_at_2'])} / {pct(s['maj_at_4'])}; "
                         f"{pct(s['pass_at_4'])} |")
        g = sc.get("single_sample_gain_of_chosen")
        if g:
            lines.append(f"| single-sample gain of Qwen's sampler over pure temperature (paired) | "
                         f"{points(g['gain'])} points ({points(g['ci'][0])} to {points(g['ci'][1])}) |")
    for key, label in (("compute_optimal_vs_best_fixed", "the best fixed strategy"),
                       ("compute_optimal_vs_majority", "maj@8")):
        fig = q.get(key)
        if fig:
            lines.append(f"| compute-optimal policy vs {label} (probe-binned, 5 x 2-fold held out) | {fig['text']} |")
    return "\n".join(lines) + "\n"


def engine_row(e: dict[str, Any]) -> str:
    s, b, c = e["sequential"], e["batched"], e["concurrent"]
    return (f"(a) {s['tok_s_median']:.1f} tok/s ({s['tok_s_min']:.1f}–{s['tok_s_max']:.1f}), "
            f"(b) {b['tok_s_median']:.1f} ({b['tok_s_min']:.1f}–{b['tok_s_max']:.1f}), "
            f"(c) {c['tok_s_median']:.1f} ({c['tok_s_min']:.1f}–{c['tok_s_max']:.1f}); "
            f"**b/a {e['ratio_batched_vs_sequential']:.2f}, c/a {e['ratio_concurrent_vs_sequential']:.2f}**")


def server_row(s: dict[str, Any]) -> str:
    return (f"concurrency 1: p50 +{s['p50_overhead_ms_c1']:.1f} ms, p99 +{s['p99_overhead_ms_c1']:.1f} ms; "
            f"concurrency 32: **p50 +{s['p50_overhead_ms_c32']:.1f} ms, p99 +{s['p99_overhead_ms_c32']:.1f} ms**")


def ray_row(r: dict[str, Any]) -> str:
    runs = r["overhead_pct_1_actor_paired_runs"]
    return (f"in-process {r['in_process']['problems_per_min']:.1f}, Ray 1 actor "
            f"{r['ray_1_actor']['problems_per_min']:.1f}, Ray 2 actors {r['ray_2_actors']['problems_per_min']:.1f}; "
            f"**overhead with 1 actor {r['overhead_pct_1_actor']:+.1f}%** (paired runs {min(runs):+.0f}% to "
            f"{max(runs):+.0f}%)")


def verifier_table(v: dict[str, Any]) -> str:
    """verifier.json: the learned verifier against the vote and the oracle, cross-fitted, and out of distribution."""
    c4 = next(c for c in v["curves"] if c["k"] == 4)
    s = v["scorer"]
    lines = [
        "| figure | value |",
        "|---|---|",
        f"| problems (GSM8K test, the first N; 8 chains + 8 programs each) | {v['n_problems']} |",
        f"| scorer (chosen by grouped cross-validation) | {s['estimator']}, {len(s['features'])} features, "
        f"cross-fitted AUC {s['cv_auc']:.3f}, ECE {s['cv_ece']:.3f} |",
        f"| maj@8 / pass@8 (oracle) | {pct(v['maj_at_8'])} / {pct(v['pass_at_8'])} |",
        f"| learned weighted best-of-8 | {pct(v['learned_best_of_n_at_8'])}: {points(v['gain_over_majority'])} "
        f"points over maj@8 ({points(v['gain_over_majority_ci_low'])} to "
        f"{points(v['gain_over_majority_ci_high'])}), {100 * v['gap_closed']:.0f}% of the gap to pass@8 |",
        f"| learned max best-of-8 | {pct(v['learned_max_at_8'])}: "
        f"{points(v['learned_max_at_8'] - v['maj_at_8'])} points ({points(v['max_gain_over_majority_ci'][0])} "
        f"to {points(v['max_gain_over_majority_ci'][1])}) |",
        f"| at k = 4: maj / learned weighted / pass | {pct(c4['majority'])} / {pct(c4['learned_weighted'])} / "
        f"{pct(c4['pass_at_k'])}; gain {points(c4['gain_over_majority'])} "
        f"({points(c4['gain_over_majority_ci'][0])} to {points(c4['gain_over_majority_ci'][1])}) |",
    ]
    o = v.get("out_of_distribution")
    if o and o.get("n_problems"):
        lines.append(f"| out of distribution: {o['task']}, {o['n_problems']} problems, k = {o['k']} | AUC "
                     f"{o['auc']:.3f}; maj {pct(o['majority'])}, learned weighted {pct(o['learned_weighted'])} "
                     f"({points(o['gain_over_majority'])}, {points(o['gain_over_majority_ci'][0])} to "
                     f"{points(o['gain_over_majority_ci'][1])}), pass {pct(o['pass_at_k'])} |")
    cost = v["cost"]
    lines.append(f"| cost of fitting and evaluating | {cost['fit_and_evaluate_seconds']:.0f} s, "
                 f"{100 * cost['fit_share_of_sampling']:.1f}% of the sampling time of its pools |")
    sv = v.get("step_value")
    if sv:
        lines.append(f"| step value (prefixes cut after each step, {sv['n_prefixes']} of them) | cross-fitted AUC "
                     f"{sv['cv_auc']:.3f}; within a problem at one step {sv['within_problem_auc']:.3f} |")
    r = cost.get("rescoring")
    if r:
        lines.append(f"| re-scoring (teacher forcing) per sample | {r['logprobs_only']['seconds_per_sample']:.1f} s; "
                     f"with the hidden state {r['with_hidden']['seconds_per_sample']:.1f} s (sampling: "
                     f"{cost['sampling_seconds_per_sample']:.1f} s) |")
    return "\n".join(lines)



def profile_table(p: dict[str, Any]) -> str:
    """profile.json: the step model's held-out error, where a step's time goes, prefixes, what-if hardware."""
    lines = ["| model | step model: held-out error (median / p90 / worst bucket median) | best achieved (share of "
             "ceiling): bandwidth, FLOP/s | "
             "host share of a width-8 step | prefill saved by the prefix cache (beam / budget forcing) | "
             "width-1 step with two 2.7k-token prefixes cached / empty cache | host-cache copies, share of a "
             "16-sample request | H200, same steps |", "|---|---|---|---|---|---|---|---|"]
    for name, m in p["models"].items():
        c = m["calibration"]
        e = p["step_model_error"][name]
        h200 = next((w for w in c["what_if"] if w["hardware"] == "h200"), None)
        pre = m["prefixes"]
        eff, mach = c["efficiency"], c["machine"]
        lines.append(
            f"| {name} | {pct(e['median'])} / {pct(e['p90'])} / {pct(e['worst_bucket_median'])} | "
            f"{eff['bandwidth'] * mach['memory_bandwidth'] / 1e9:.1f} GB/s ({pct(eff['bandwidth'])}), "
            f"{eff['flops'] * mach['flops'] / 1e9:.0f} GFLOP/s ({pct(eff['flops'])}) | "
            f"{pct(c['host_share_by_width'].get('8'))} | "
            f"{pct(pre['beam_search/prefill_saved'])} / {pct(pre['budget_forcing/prefill_saved'])} | "
            f"{m['cached_prefix_cost']['slowdown']:.2f}x | "
            + (f"{pct(m['cache_copy_cost']['share'])} | " if "cache_copy_cost" in m else "n/a | ")
            + (f"{h200['tokens_per_second']:.0f} tok/s, bound by {h200['binding']} |" if h200 else "n/a |"))
    return "\n".join(lines)


def peer_table(p: dict[str, Any]) -> str:
    """peer.json: ponder's tok/s over llama-server's per width (median of interleaved runs, a bootstrap 95% interval
    of that median, and the runs' range)."""
    lines = ["| model | width | ponder tok/s | llama-server tok/s | ratio [95% CI] (range) | llama-server --kv-unified "
             "tok/s | ratio [95% CI] (range) |", "|---|---|---|---|---|---|---|"]

    def ratio(m: dict[str, Any], suffix: str, w: str) -> str:
        runs, ci = m[f"ratio_runs{suffix}"][w], m.get(f"ratios_ci{suffix}", {}).get(w)
        interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        return f"{m[f'ratios{suffix}'][w]:.2f}{interval} ({min(runs):.2f}-{max(runs):.2f})"

    for name, m in p["models"].items():
        tok = m["median_tok_s"]
        for w in m["ratios"]:
            unified = (f"{tok['server_kv_unified'][w]:.1f} | {ratio(m, '_kv_unified', w)} |"
                       if "ratio_runs_kv_unified" in m else "n/a | n/a |")
            lines.append(f"| {name} | {w} | {tok['ponder'][w]:.1f} | {tok['server'][w]:.1f} | {ratio(m, '', w)} | "
                         + unified)
    return "\n".join(lines)


def tiled_table(t: dict[str, Any]) -> str:
    """tiled.json: ponder's engine with llama.cpp's tiled matmul off over on (median of alternating runs, a bootstrap
    95% interval of that median, and the runs' range)."""
    labels = {"prefill": "prefill", "width_1": "decode, width 1", "width_8": "decode, width 8"}
    lines = ["| model | measure | off tok/s | on tok/s | off / on [95% CI] (range) |", "|---|---|---|---|---|"]
    for name, m in t["models"].items():
        for key, label in labels.items():
            runs, ci = m["ratio_runs"][key], m.get("ratios_ci", {}).get(key)
            interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
            lines.append(f"| {name} | {label} | {m['median_tok_s']['off'][key]:.1f} | "
                         f"{m['median_tok_s']['on'][key]:.1f} | {m['ratios'][key]:.2f}{interval} "
                         f"({min(runs):.2f}-{max(runs):.2f}) |")
    return "\n".join(lines)


def search_table(s: dict[str, Any]) -> str:
    """search.json: step-level search with the learned step value against best-of-N at the same budget."""
    names = {"beam_search": "beam_search, step value", "particle_filtering": "particle_filtering, step value",
             "particle_filtering_uniform": "particle_filtering, uniform weights",
             "best_of_n_majority": "majority of N (pool)", "best_of_n_learned_weighted":
             "learned weighted best-of-N (pool)", "best_of_n_pass_at_k": "pass@N (oracle, pool)"}
    lines = [f"| budget {s['budget']}, {s['n_problems']} GSM8K problems | accuracy [95% CI] | generated tokens per "
             "problem | vs learned weighted best-of-N [95% CI] |", "|---|---|---|---|"]
    for key, label in names.items():
        a = s["arms"].get(key)
        if a:
            lo, hi = a["accuracy_ci"]
            glo, ghi = a["gain_over_best_of_n_ci"]
            lines.append(f"| {label} | {pct(a['accuracy'])} [{pct(lo)}, {pct(hi)}] | {a['tokens_mean']:.0f} | "
                         f"{points(a['gain_over_best_of_n'])} [{points(glo)}, {points(ghi)}] |")
    return "\n".join(lines)


def open_table(o: dict[str, Any]) -> str:
    """open.json: win rate against the greedy baseline on the built-in open prompts, and the judge's position bias."""
    lines = [f"| {o['n_prompts']} open prompts, judged by {o['judge']} | win rate vs greedy [95% CI] | judge's "
             "preference [95% CI] | generated tokens per prompt |", "|---|---|---|---|"]
    for c in o["curves"]:
        lines.append(f"| `{c['strategy']}@{c['budget']}` | {pct(c['win_rate'])} [{pct(c['ci_low'])}, "
                     f"{pct(c['ci_high'])}] | {pct(c['preference'])} [{pct(c['preference_ci_low'])}, "
                     f"{pct(c['preference_ci_high'])}] | {c['tokens']:.0f} |")
    lines.append(f"| the judge's position bias: in its verdicts (0: none, +50: always the first shown) / in its "
                 f"probabilities; self-agreement across orders | {points(o['position_bias'])} / "
                 f"{points(o['position_bias_in_probability'])} points; {pct(o['self_agreement'])} of "
                 f"{o['n_verdicts']} verdicts | | |")
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    """Every block the README quotes, by the JSON it comes from."""
    out = {"engine.json": engine_row(load("engine")), "server.json": server_row(load("server")),
           "ray.json": ray_row(load("ray"))}
    if (RESULTS / "quality.json").exists():
        out["quality.json"] = quality_table(load("quality"))
    if (RESULTS / "verifier.json").exists():
        out["verifier.json"] = verifier_table(load("verifier"))
    if (RESULTS / "search.json").exists():
        out["search.json"] = search_table(load("search"))
    if (RESULTS / "open.json").exists():
        out["open.json"] = open_table(load("open"))
    if (RESULTS / "profile.json").exists():
        out["profile.json"] = profile_table(load("profile"))
    for peer in ("peer", "peer_width1"):  # every width, and width 1 alone with more repetitions
        if (RESULTS / f"{peer}.json").exists():
            out[f"{peer}.json"] = peer_table(load(peer))
    if (RESULTS / "tiled.json").exists():
        out["tiled.json"] = tiled_table(load("tiled"))
    return out


if __name__ == "__main__":
    for name, text in blocks().items():
        print(f"<!-- {name} -->\n{text}\n")

