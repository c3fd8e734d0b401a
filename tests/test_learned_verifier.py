"""The learned verifier: features, leak-free splits, cross-fitting, the scorer file and the live verifier, on
synthetic data and the scripted backend (the real-model numbers are benchmarks/verifier.py's)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.errors import InvalidParameter
from ponder.experiments.labelled import group_of
from ponder.experiments.verifier_fit import auc, cross_fit, ece, fit_final, group_folds
from ponder.ledger import Ledger
from ponder.strategies.best_of_n import BestOfN
from ponder.types import Problem
from ponder.verifiers.features import POOL_FEATURES, pool_features, sample_features
from ponder.verifiers.learned import LearnedVerifier
from ponder.verifiers.scorer import Scorer, ScorerCard, ScorerFileError, load_scorer, read_card

SHA = "a" * 64


def test_pool_features_measure_votes_program_agreement_rank_and_margins() -> None:
    rows = pool_features(["4", "4", "5", None], [-0.1, -0.5, -0.2, None], programs=["4", "5", "5", "5"])
    assert [r["vote_share"] for r in rows] == [0.5, 0.5, 0.25, 0.0]
    assert [r["program_agreement"] for r in rows[:3]] == [0.25, 0.25, 0.75] and math.isnan(rows[3]["program_agreement"])
    assert [r["logprob_rank"] for r in rows] == [0.0, 2 / 3, 1 / 3, 1.0] and rows[3]["no_answer"] == 1.0
    assert math.isnan(pool_features(["4"], [None])[0]["program_agreement"])  # no programs drawn: unknown
    # against the strongest rival: "4" leads "5" by one vote of four but trails it by two programs of four
    assert [r["vote_margin"] for r in rows] == [0.25, 0.25, -0.25, -0.5]
    assert [r["program_margin"] for r in rows] == [-0.5, -0.5, 0.5, -0.75]
    assert pool_features(["4"], [None], programs=["4"])[0]["vote_margin"] == 1.0  # no rival: its whole share


def test_sample_features_from_token_logprobs() -> None:
    f = sample_features([-0.1, -2.0, -0.3] + [-0.05] * 8, truncated=True, entropies=[0.5, 1.5])
    assert f.get("min_logprob") == -2.0 and f.get("truncated") == 1.0 and f.get("mean_entropy") == 1.0
    assert f.get("tail_logprob") == pytest.approx(-0.05) and f.get("log_tokens") == pytest.approx(math.log1p(11))
    assert math.isnan(sample_features([], False).get("mean_logprob"))


def test_a_template_is_one_group_across_gsm8k_and_gsm_symbolic() -> None:
    original = group_of("gsm8k", "gsm8k/473", {"source": "0000.toml"})
    instance = group_of("gsm_symbolic", "gsm_symbolic/0000-3", {"template": "0000.toml", "seed": 3})
    assert original == instance and group_of("gsm8k", "gsm8k/1", {"source": "0001.toml"}) != original
    assert group_of("reasoning_gym:leg_counting", "rg/1", {}) != group_of("reasoning_gym:leg_counting", "rg/2", {})


def test_folds_never_split_a_group() -> None:
    groups = [f"g{i % 13}" for i in range(200)]
    folds = group_folds(groups, 5, seed=3)
    assert sorted(r for f in folds for r in f) == list(range(200))
    where = {}
    for i, fold in enumerate(folds):
        for r in fold:
            assert where.setdefault(groups[r], i) == i


def _memorisable(n_groups: int = 40, per: int = 8, seed: int = 0) -> tuple[list[list[float]], list[bool], list[str]]:
    """Each group has its own identifying feature value and its own random label: only a scorer that saw the
    group can predict it (a leak), one that did not is at chance."""
    rng = random.Random(seed)
    X, y, groups = [], [], []
    for g in range(n_groups):
        ident, label = rng.random(), rng.random() < 0.5
        for _ in range(per):
            X.append([ident, rng.gauss(0, 1)])
            y.append(label)
            groups.append(f"g{g}")
    return X, y, groups


def test_cross_fitting_never_lets_a_group_score_itself() -> None:
    X, y, groups = _memorisable()
    leaky = fit_final("boosting", X, y)
    in_sample = auc(y, [float(p) for p in leaky.predict_proba(X)[:, 1]])
    crossed = cross_fit(X, y, groups, folds=5, seed=0, families=("boosting",))
    assert in_sample > 0.9  # the identifying feature is learnable when a group is in training
    assert crossed.auc < 0.7, crossed.auc  # and worth nothing when it never is
    for g in set(groups):  # the model kept for a group is one fitted without it
        assert crossed.fold_of_group[g] in range(len(crossed.fold_models))


def test_cross_fitting_finds_a_real_signal_and_calibration_is_measured() -> None:
    rng = random.Random(1)
    X, y, groups = [], [], []
    for i in range(180):
        share = rng.random()
        X.append([share, rng.gauss(0, 1)])
        y.append(rng.random() < share)
        groups.append(f"p{i // 6}")
    fit = cross_fit(X, y, groups, folds=5, seed=0)
    assert fit.auc > 0.7 and fit.chosen in ("logistic", "boosting") and 0 <= fit.ece < 0.2
    assert ece([True, False], [1.0, 0.0]) == 0.0 and ece([True, False], [0.0, 1.0]) == 1.0


def _scorer(features: tuple[str, ...], sha: str | None = SHA) -> Scorer:
    rng = random.Random(2)
    X = [[rng.random() for _ in features] for _ in range(80)]
    y = [x[0] > 0.5 for x in X]
    card = ScorerCard(features=features, model_name="m", model_sha256=sha, estimator="logistic", cv_auc=0.9)
    return Scorer(card, fit_final("logistic", X, y))


def test_a_scorer_file_round_trips_and_refuses_another_model(tmp_path: Path) -> None:
    path = _scorer(("vote_share", "program_agreement")).save(tmp_path / "s.json")
    card, _ = read_card(path)
    assert card.features == ("vote_share", "program_agreement") and card.cv_auc == 0.9
    loaded = load_scorer(path, SHA, "m")
    assert loaded.predict([[0.9, 0.9]])[0] > loaded.predict([[0.1, 0.1]])[0]
    with pytest.raises(ScorerFileError, match="trained on m"):
        load_scorer(path, "b" * 64, "other-model")
    with pytest.raises(ScorerFileError, match="not other-model"):
        load_scorer(path, None, "other-model")


def test_a_missing_or_garbage_scorer_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScorerFileError, match="ponder verifier train"):
        load_scorer(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ScorerFileError, match="not a ponder scorer file"):
        load_scorer(tmp_path / "bad.json")


def test_the_learned_verifier_scores_with_votes_and_program_agreement_and_charges_the_programs(tmp_path) -> None:
    def script(call, i):
        if "Python program" in (call.messages[0].content if call.messages else ""):
            return "```python\nprint(4)\n```"
        return "The answer is 4." if i % 3 else "The answer is 5."

    path = _scorer(POOL_FEATURES[:2], sha=None).save(tmp_path / "s.json")
    backend = ScriptedBackend(script, model="m")
    problem = Problem(id="p", question="2+2?", answer="4")
    ledger = Ledger()
    strategy = BestOfN(n=6, verifier=f"learned:{path}", mode="max")
    result = asyncio.run(strategy.solve(problem, backend, ledger))
    assert result.answer == "4"
    scores = {c.answer: c.score for c in result.candidates}
    assert scores["4"] > scores["5"]  # more votes and every program agrees with 4
    assert ledger.usage_by_role["verifier"].completion_tokens > 0  # the programs were drawn and charged


def test_a_scorer_that_reads_logits_is_refused_without_a_local_engine(tmp_path) -> None:
    path = _scorer(("min_logprob", "vote_share"), sha=None).save(tmp_path / "s.json")
    with pytest.raises(InvalidParameter, match="--features pool"):
        LearnedVerifier(ScriptedBackend(lambda c, i: "x", model="m"), path=path)
    with pytest.raises(InvalidParameter, match="learned:PATH"):
        LearnedVerifier(ScriptedBackend(lambda c, i: "x"))


@pytest.mark.slow
def test_featurize_rescores_a_real_sweeps_samples_with_the_logprobs_they_were_drawn_with(tmp_path) -> None:
    """A tiny sweep on smollm2-135m stores sampled features; re-scoring them by teacher forcing gives each sample
    its full features (entropies, hidden state), and the re-read mean log-probability agrees with the sampled one."""
    from ponder.backends.factory import open_backend
    from ponder.experiments.executor import InProcessExecutor
    from ponder.experiments.featurize import featurize
    from ponder.experiments.store import Store
    from ponder.experiments.sweep import SweepConfig, run_sweep, settings

    tiny = Path("~/.cache/ponder/models/smollm2-135m.gguf").expanduser()
    assert tiny.is_file(), f"{tiny} is missing: `make test` pulls it (ponder models pull smollm2-135m)"
    config = SweepConfig("gsm8k", str(tiny), ("self_consistency",), (1, 2), limit=1, max_tokens=24)
    backend = open_backend(str(tiny), n_ctx=2048)
    try:
        store = Store.create(tmp_path / "run", settings(config, backend, "math"))
        asyncio.run(run_sweep(config, backend, store, InProcessExecutor(backend, 2)))
        store.close()
        sampled = Store.open(tmp_path / "run").features()
        assert len(sampled) == 2 and all(src == "sampled" and not math.isnan(v["min_logprob"])
                                         for src, v in sampled.values())
        report = featurize(tmp_path / "run", hidden=True, engine=backend)
        again = featurize(tmp_path / "run", hidden=True, engine=backend)
    finally:
        backend.close()
    assert report.samples == 2 and report.tokens > 0 and again.samples == 0 and again.skipped == 2  # resumable
    rescored = Store.open(tmp_path / "run").features()
    for key, (source, values) in rescored.items():
        assert source == "rescored" and values["mean_entropy"] > 0
        assert sum(k.startswith("hidden_") for k in values) == 576  # smollm2-135m's width
        assert values["mean_logprob"] == pytest.approx(sampled[key][1]["mean_logprob"], abs=0.15)


def test_the_server_serves_the_operators_scorer_and_refuses_a_clients_file(tmp_path) -> None:
    from ponder.server import ServerConfig, create_app
    from test_server_errors import CHAT, assert_openai_error, post

    path = _scorer(POOL_FEATURES[:1], sha=None).save(tmp_path / "s.json")
    backend = ScriptedBackend(lambda call, i: "The answer is 4." if i % 2 else "The answer is 5.", model="m")
    app = create_app(backend, config=ServerConfig(verifiers={"learned": f"learned:{path}"}))
    ask = {**CHAT, "model": "m", "ponder": {"strategy": "best_of_n", "params": {"n": 3, "verifier": "learned"}}}
    reply = post(app, body=ask)
    assert reply.status_code == 200, reply.text
    scores = [c["score"] for c in reply.json()["ponder"]["choices"][0]["candidates"]]
    assert len(scores) == 3 and all(0 < s < 1 for s in scores)
    named = {**ask, "ponder": {"strategy": "best_of_n", "params": {"verifier": f"learned:{path}"}}}
    error = assert_openai_error(post(app, body=named), 400)
    assert error["param"] == "ponder.params.verifier" and "--verifier learned:FILE" in error["message"]


def test_serve_checks_the_scorer_file_at_start(tmp_path) -> None:
    from typer.testing import CliRunner

    from ponder.cli import app

    path = _scorer(POOL_FEATURES[:1]).save(tmp_path / "s.json")  # made for the model with sha256 "aaa..."
    result = CliRunner().invoke(app, ["serve", "--model", "scripted", "--verifier", "learned:/no/such/file.json"])
    assert result.exit_code != 0 and "no scorer file" in result.output
    result = CliRunner().invoke(app, ["serve", "--model", "scripted", "--verifier", f"nope:{path}"])
    assert result.exit_code == 2 and "NAME:FILE" in result.output
