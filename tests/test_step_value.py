"""The step-level value: prefix features, rows cut from a store's samples, grouped cross-fitting, the step scorer
file and the `step_value` verifier inside beam search and particle filtering (scripted backend; the real-model
numbers are benchmarks/search.py's)."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import replace

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.experiments.executor import InProcessExecutor
from ponder.experiments.step_train import step_rows, train_steps
from ponder.experiments.store import Store
from ponder.experiments.sweep import SweepConfig, run_sweep, settings
from ponder.experiments.verifier_fit import fit_final
from ponder.ledger import Ledger
from ponder.strategies.beam_search import BeamSearch
from ponder.strategies.particle_filtering import ParticleFiltering
from ponder.types import Problem
from ponder.verifiers.learned import LearnedVerifier
from ponder.verifiers.scorer import Scorer, ScorerCard, ScorerFileError, ScorerLevel, load_scorer, read_card
from ponder.verifiers.step_value import StepValueVerifier
from ponder.verifiers.steps import STEP_FEATURES, prefixes, step_features
from sweep_helpers import SlowScripted, write_task

QUESTION = "Tom has 7 bags of 9 apples. How many apples?"


def test_a_text_is_cut_after_each_step() -> None:
    assert prefixes("a\n\nb\n\n\n\nc") == ["a", "a\n\nb", "a\n\nb\n\nc"]


def test_agreement_counts_each_distinct_peer_once_and_ignores_restated_givens() -> None:
    prefix = "Tom has 9 = 9 apples per bag.\n\n7 * 9 = 63 apples."
    peers = ["7 * 9 = 63", "7 * 9 = 63", "7 + 9 = 16", prefix]  # a copy and the prefix itself count for nothing
    f = step_features(prefix, peers, QUESTION)
    assert f["result_agreement"] == 0.5 and f["weakest_result_agreement"] == 0.5  # "= 9" restates the question
    assert f["last_step_agreement"] == 0.5
    assert f["has_answer"] == 0.0 and math.isnan(f["answer_share"])
    assert f["depth"] == pytest.approx(math.log1p(2))
    alone = step_features(prefix, [prefix], QUESTION)
    assert math.isnan(alone["result_agreement"])  # no peers: unknown, not zero


def test_answer_share_and_invented_numbers() -> None:
    f = step_features("7 * 11 = 77\n\nThe answer is 77.", ["The answer is 77.", "The answer is 63.", "thinking"],
                      QUESTION)
    assert f["has_answer"] == 1.0 and f["answer_share"] == 0.5  # among the peers that state an answer
    assert f["invented_numbers"] == pytest.approx(1 / 3)  # of 7, 11 and 77: 11 was neither given nor computed
    assert step_features("a\na\na\nb", [], QUESTION)["repeated_lines"] == 0.5


def _store(tmp_path, limit: int = 10):
    config = SweepConfig(write_task(tmp_path), "scripted", ("self_consistency",), (4,), limit=limit)
    backend = SlowScripted()
    store = Store.create(tmp_path / "run", settings(config, backend, "math"))
    asyncio.run(run_sweep(config, backend, store, InProcessExecutor(backend, 4)))
    store.close()
    return tmp_path / "run"


def test_every_sample_gives_one_row_per_step_labelled_by_its_outcome(tmp_path) -> None:
    run = _store(tmp_path, limit=3)
    rows, infos = step_rows([run])
    with Store.open(run) as store:
        samples = [s for s in store.samples() if s.pool == "cot"]
    assert infos[0].samples == len(samples) == 12
    assert len(rows.labels) == 3 * len(samples)  # "Let me think." / "It is N." / "The answer is N."
    assert sorted(set(rows.depths)) == [1, 2, 3]
    right = {(s.problem_id, s.correct) for s in samples}
    assert all((p, y) in right for p, y in zip(rows.problem_ids, rows.labels, strict=True))
    assert {g for g in rows.groups} == {f"{infos[0].task}:{p}" for p in rows.problem_ids}


def test_training_is_grouped_and_each_fold_scorer_never_saw_its_problem(tmp_path) -> None:
    run = _store(tmp_path, limit=10)
    training = train_steps([run], folds=5)
    card = training.scorer.card
    assert card.level == ScorerLevel.STEP and card.features == STEP_FEATURES and card.n_groups == 10
    fit = training.fit
    X = training.rows.X
    for group in set(training.rows.groups):
        rows = [i for i, g in enumerate(training.rows.groups) if g == group]
        model = training.fold_scorer(group).estimator
        assert model is fit.fold_models[fit.fold_of_group[group]]  # the fold that held the problem out
        assert [fit.scores[i] for i in rows] == pytest.approx(list(model.predict_proba([X[i] for i in rows])[:, 1]))


def _step_scorer(good: str = "result_agreement", sign: int = 1) -> Scorer:
    """A step scorer that has learned one lesson: a prefix is good when `sign` * (`good` - 0.5) > 0."""
    rng = random.Random(0)
    X, y = [], []
    for _ in range(200):
        row = [rng.random() for _ in STEP_FEATURES]
        X.append(row)
        y.append(sign * (row[STEP_FEATURES.index(good)] - 0.5) > 0)
    card = ScorerCard(features=STEP_FEATURES, model_name="m", model_sha256=None, estimator="logistic",
                      level=ScorerLevel.STEP)
    return Scorer(card, fit_final("logistic", X, y))


def test_the_step_value_ranks_the_prefix_its_peers_agree_with() -> None:
    problem = Problem(id="p", question=QUESTION, answer="63")
    scores = asyncio.run(StepValueVerifier(scorer=_step_scorer()).score(
        problem, ["7 * 9 = 63", "9 * 7 = 63", "7 * 8 = 56"]))
    assert scores[0].value > scores[2].value and scores[1].value > scores[2].value


def test_step_and_outcome_files_are_not_interchangeable(tmp_path) -> None:
    path = _step_scorer().save(tmp_path / "steps.json")
    assert read_card(path)[0].level == ScorerLevel.STEP
    with pytest.raises(ScorerFileError, match="use it as step_value:"):
        LearnedVerifier(ScriptedBackend(lambda c, i: "x", model="m"), path)
    assert StepValueVerifier(ScriptedBackend(lambda c, i: "x", model="m"), path).scorer.card.level == "step"
    outcome = Scorer(ScorerCard(features=("vote_share",), model_name="m", model_sha256=None, estimator="logistic"),
                     fit_final("logistic", [[0.1], [0.9]] * 10, [False, True] * 10)).save(tmp_path / "o.json")
    with pytest.raises(ScorerFileError, match="use it as learned:"):
        load_scorer(outcome, level=ScorerLevel.STEP)


@pytest.mark.parametrize("strategy", [BeamSearch(beam_width=2, expansions=2, seed=0, max_steps=4),
                                      ParticleFiltering(particles=4, seed=0, max_steps=4)])
def test_search_follows_the_step_value_to_the_agreed_result(tmp_path, strategy) -> None:
    """Three of four first steps use a number the question never gave (the majority, 77), one does not (63): a
    value that distrusts invented numbers keeps the minority branch, where a vote or a blind search would not."""
    path = _step_scorer("invented_numbers", -1).save(tmp_path / "steps.json")

    def script(call, i):
        seed = (call.params.seed or 0) + i
        if "= " not in call.prefix:
            return "7 * 9 = 63" if seed % 4 == 3 else "7 * 11 = 77"
        value = call.prefix.split("= ")[-1].split()[0]
        return f"The answer is {value}."

    problem = Problem(id="p", question=QUESTION, answer="63")
    backend = ScriptedBackend(script, model="m")
    result = asyncio.run(replace(strategy, verifier=f"step_value:{path}").solve(problem, backend, Ledger()))
    assert result.answer == "63"


def test_serve_checks_a_step_file_at_start_under_the_verifier_that_reads_it(tmp_path) -> None:
    from typer.testing import CliRunner

    from ponder.cli import app

    path = _step_scorer().save(tmp_path / "steps.json")
    result = CliRunner().invoke(app, ["serve", "--model", "scripted", "--verifier", f"learned:{path}"])
    assert result.exit_code != 0 and "use it as step_value:" in " ".join(result.output.split())
