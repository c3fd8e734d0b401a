"""The report: files, summary figures recomputed from the rows by hand, the CLI, and rendering in Chromium."""

import json
import math
import re
import shutil
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import StoreError
from ponder.experiments.report import build_report
from ponder.strategies.adaptive_consistency import AdaptiveConsistency
from synthetic_rows import CONFIG, make_rows

N = 8
CHROMIUM = Path("/usr/bin/chromium")


class FakeStore:
    """The store's read API over in-memory rows."""

    def __init__(self, rows, config=CONFIG):
        self.config = config
        self._problems, self._samples, self._results = rows

    def problems(self):
        return self._problems

    def samples(self):
        return self._samples

    def results(self):
        return self._results

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@pytest.fixture(scope="module")
def rows():
    return make_rows(20, N, seed=1)


@pytest.fixture(scope="module")
def report(rows, tmp_path_factory):
    return build_report(FakeStore(rows), tmp_path_factory.mktemp("run") / "report", name="synthetic")


def pools(samples):
    out = {}
    for s in sorted(samples, key=lambda s: s.index):
        out.setdefault(s.problem_id, []).append(s)
    return out


def hand_majority(answers):
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def test_summary_json_has_the_headline_keys(report):
    summary = json.loads(report.summary_json.read_text())
    for key in ("greedy_accuracy", "best_strategy", "best_accuracy", "best_tokens_ratio_vs_greedy",
                "adaptive_token_savings_vs_majority", "compute_optimal_vs_best_fixed", "compute_optimal_vs_majority",
                "oracle_upper_bound_efficiency_vs_majority", "usd_per_solved_problem", "provenance"):
        assert key in summary
    assert summary["provenance"]["model_sha256"] == CONFIG["model_info"]["sha256"]
    assert summary["provenance"]["report_ponder_version"]


def test_summary_numbers_recomputed_from_rows(rows, report):
    _problems, samples, results = rows
    s = json.loads(report.summary_json.read_text())
    by_pid = pools(samples)
    greedy = [r for r in results if r.strategy == "cot"]
    assert s["greedy_accuracy"] == pytest.approx(np.mean([r.correct for r in greedy]))
    # maj@N and best-of-N@N are one vote over each whole pool; maj@1 and pass@N have closed forms.
    maj_n = np.mean([next(x.correct for x in p if x.answer == hand_majority([x.answer for x in p])) if
                     hand_majority([x.answer for x in p]) else False for p in by_pid.values()])
    assert s["maj_at_k"][str(N)] == pytest.approx(maj_n)
    assert s["maj_at_k"]["1"] == pytest.approx(np.mean([np.mean([x.correct for x in p]) for p in by_pid.values()]))
    assert s["pass_at_k"][str(N)] == pytest.approx(np.mean([any(x.correct for x in p) for p in by_pid.values()]))
    bon = []
    for p in by_pid.values():
        tally = Counter()
        for x in p:
            if x.answer is not None:
                tally[x.answer] += x.score
        winner = max(tally, key=lambda a: (tally[a], -[x.answer for x in p].index(a))) if tally else None
        bon.append(any(x.correct for x in p if x.answer == winner))
    assert s["best_of_n_at_k"][str(N)] == pytest.approx(np.mean(bon))
    # Adaptive consistency consumes a prefix of each pool; majority voting spends the whole pool.
    rule = AdaptiveConsistency(n_max=N)
    used = [sum(x.usage_by_role["policy"].completion_tokens for x in p[:rule.stopping_point([x.answer for x in p])])
            for p in by_pid.values()]
    every = [sum(x.usage_by_role["policy"].completion_tokens for x in p) for p in by_pid.values()]
    assert s["adaptive_token_savings_vs_majority"] == pytest.approx(1 - sum(used) / sum(every))
    assert s["truncation_share"] == pytest.approx(
        np.mean([x.finish_reason == "length" for x in [*samples, *results]]))
    accuracies = [s["greedy_accuracy"], *s["maj_at_k"].values(), *s["best_of_n_at_k"].values()]
    assert s["best_accuracy"] >= max(accuracies) - 1e-12


def test_usd_per_solved_problem_of_the_best_strategy(rows, report):
    _, samples, results = rows
    s = report.summary
    usd_per_second = CONFIG["hardware_usd_per_hour"] / 3600
    if s["best_strategy"] in ("best_of_n", "best_of_n_max") and s["best_budget"] == N:
        spent = sum(sum(u.seconds for u in x.usage_by_role.values()) for x in samples) * usd_per_second
    elif s["best_strategy"] in ("beam_search", "cot"):
        mine = [r for r in results if (r.strategy, r.budget) == (s["best_strategy"], s["best_budget"])]
        spent = sum(r.usage_by_role["policy"].seconds for r in mine) * usd_per_second
    else:
        pytest.skip(f"no hand formula for {s['best_strategy']}@{s['best_budget']} in this synthetic run")
    solved = s["best_accuracy"] * s["n_problems"]
    assert s["usd_per_solved_problem"] == pytest.approx(spent / solved)


def test_summary_md_states_the_figures(report):
    text = report.summary_md.read_text()
    s = report.summary
    assert f"Greedy accuracy: {100 * s['greedy_accuracy']:.1f}%" in text
    assert f"@{N}: {100 * s['maj_at_k'][str(N)]:.1f}%" in text
    assert f"saves {100 * s['adaptive_token_savings_vs_majority']:.1f}%" in text
    assert "Compute-optimal policy" in text and "per solved problem" in text
    for key in ("oracle_upper_bound_efficiency_vs_majority", "oracle_upper_bound_efficiency_vs_best_of_n"):
        r = s[key]
        assert (f"{r:.2f}x less compute" if r is not None else "never matched") in text
    for key in ("compute_optimal_vs_best_fixed", "compute_optimal_vs_majority"):
        assert s[key]["text"] in text
        assert (s[key]["ratio"] is None) == (not s[key]["measurable"])


def test_html_is_self_contained_with_every_figure_and_table(report):
    page = report.html.read_text()
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(images) == len(report.figures) == 7  # the four axes, coverage, per-bin, frontier
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)
    for cls in ("summary", "accuracy", "truncation", "bins", "frontier-oracle", "fits", "provenance"):
        assert f'<table class="{cls}">' in page
    assert CONFIG["model_info"]["sha256"] in page
    for name in report.figures:
        assert (report.folder / f"{name}.png").stat().st_size > 5000


_PROBE = """<script>window.addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({images: [...document.images].map(i => [i.complete, i.naturalWidth]),
                                    tables: document.querySelectorAll('table').length,
                                    cells: document.querySelectorAll('td').length});
  document.body.appendChild(out);
});</script>"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_chromium_renders_images_and_tables(report, tmp_path):
    # A copy of the page with a probe that writes what the browser loaded into the DOM.
    page = tmp_path / "probe.html"
    page.write_text(report.html.read_text().replace("</body>", _PROBE + "</body>"))
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; chromium printed: {dom[:500]}"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(probe["images"]) == 7
    assert all(done and width > 100 for done, width in probe["images"]), probe["images"]
    assert probe["tables"] >= 7 and probe["cells"] > 50


def test_cli_writes_the_report_and_prints_the_headline(rows, tmp_path, monkeypatch):
    store_module = types.ModuleType("ponder.experiments.store")
    store_module.Store = types.SimpleNamespace(open=lambda path: FakeStore(rows))
    monkeypatch.setitem(sys.modules, "ponder.experiments.store", store_module)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run1")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run1" / "report" / "index.html").exists()
    assert "greedy accuracy" in result.output and "index.html" in result.output


def test_cli_corrupt_store_is_a_clear_error_and_exit_2(tmp_path, monkeypatch):
    def corrupt(path):
        raise StoreError(f"{path} is not a ponder store: file is not a database; delete it and sweep again")

    store_module = types.ModuleType("ponder.experiments.store")
    store_module.Store = types.SimpleNamespace(open=corrupt)
    monkeypatch.setitem(sys.modules, "ponder.experiments.store", store_module)
    result = CliRunner().invoke(app, ["report", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "not a ponder store" in result.output
    assert "Traceback" not in result.output


def test_report_of_a_run_without_verifier_scores_or_search(tmp_path):
    problems, samples, _ = make_rows(6, 4)
    plain = [type(s)(**{**s.__dict__, "score": None}) for s in samples]
    files = build_report(FakeStore((problems, plain, [])), tmp_path / "r")
    s = files.summary
    assert s["greedy_accuracy"] is None and s["compute_optimal_vs_best_of_n"] is None
    assert s["best_of_n_at_k"] == {} and math.isfinite(s["best_accuracy"])
    assert "n/a" in files.summary_md.read_text()
    assert shutil.which("true")  # the environment can run subprocesses (used by the chromium test)


def _real_store(tmp_path, rows):
    store_module = pytest.importorskip("ponder.experiments.store")
    from ponder.types import Problem

    problems, samples, results = rows
    run = tmp_path / "run"
    with store_module.Store.create(run, CONFIG) as store:
        store.add_problems([Problem(p.problem_id, p.question, p.reference) for p in problems])
        store.add_samples(samples)
        for r in results:
            store.add_result(r)
    return run


def test_cli_report_from_a_real_store_matches_the_rows(rows, report, tmp_path):
    run = _real_store(tmp_path, rows)
    result = CliRunner().invoke(app, ["report", str(run)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    stored = json.loads((run / "report" / "summary.json").read_text())
    _, _, results = rows
    assert stored["greedy_accuracy"] == pytest.approx(np.mean([r.correct for r in results if r.strategy == "cot"]))
    for key, value in report.summary.items():  # the same figures as from the rows in memory
        assert stored[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_cli_on_a_corrupt_store_file_exits_2(rows, tmp_path):
    run = _real_store(tmp_path, rows)
    db = next(run.glob("*.sqlite"))
    for extra in run.glob("*.sqlite-*"):  # the WAL and shared-memory files
        extra.unlink()
    db.write_bytes(b"this is not SQLite at all" * 100)
    result = CliRunner().invoke(app, ["report", str(run)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "corrupt" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")], env={"COLUMNS": "200"})
    assert missing.exit_code == 2 and "no run store" in missing.output


def test_cli_report_learned_adds_a_cross_fitted_verifier_beside_the_vote(rows, tmp_path):
    run = _real_store(tmp_path, rows)
    result = CliRunner().invoke(app, ["report", str(run), "--learned"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    learned = json.loads((run / "report" / "summary.json").read_text())["learned_verifier"]
    ks = [c["k"] for c in learned["curves"]]
    assert ks == [1, 2, 4, 8] and 0 <= learned["cv_auc"] <= 1
    for c in learned["curves"]:  # on the same subsets, no selection beats the oracle
        assert c["learned_weighted"] <= c["pass_at_k"] + 1e-9 and c["majority"] <= c["pass_at_k"] + 1e-9
    html = (run / "report" / "index.html").read_text()
    assert "Learned verifier" in html and "self_eval best-of-k" in html
