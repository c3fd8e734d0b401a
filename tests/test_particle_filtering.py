"""Particle filtering (Puri et al. 2025) on the scripted backend: weights, resampling, budget and selection."""

from __future__ import annotations

import asyncio
import random

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.errors import InvalidParameter
from ponder.ledger import Budget, Ledger
from ponder.strategies.particle_filtering import ParticleFiltering, resampling_weights, systematic_resample
from ponder.types import Problem

PROBLEM = Problem(id="p", question="2+2?", answer="4")


def stepper(call, i):
    """Step 1: a good or a bad first step, by seed parity; step 2: the answer its first step leads to."""
    if not call.prefix:
        return "good start" if (call.params.seed or 0) % 2 == 0 else "bad start"
    return "The answer is 4." if call.prefix.startswith("good") else "The answer is 5."


def prm(problem, texts):
    return [0.9 if t.startswith("good") else 0.1 for t in texts]


def test_weights_are_the_softmax_of_log_odds() -> None:
    assert resampling_weights([0.5, 0.5], 1.0) == pytest.approx([0.5, 0.5])
    w = resampling_weights([0.9, 0.1], 1.0)
    assert w[0] == pytest.approx(81 / 82)  # odds 9 against 1/9
    assert resampling_weights([0.9, 0.1], 10.0)[0] < w[0] < resampling_weights([0.9, 0.1], 0.5)[0]
    assert sum(resampling_weights([0.0, 1.0, 0.3], 1.0)) == pytest.approx(1.0)  # clipped, no infinities


def test_systematic_resampling_draws_by_weight() -> None:
    rng = random.Random(0)
    assert systematic_resample([1.0, 0.0, 0.0], 4, rng) == [0, 0, 0, 0]
    assert sorted(systematic_resample([0.25] * 4, 4, rng)) == [0, 1, 2, 3]
    draws = systematic_resample([0.75, 0.25], 8, rng)
    assert draws.count(0) == 6 and draws.count(1) == 2


def test_resampling_moves_particles_to_the_steps_the_verifier_trusts() -> None:
    backend = ScriptedBackend(stepper)
    result = asyncio.run(ParticleFiltering(particles=4, verifier=prm, seed=0).solve(PROBLEM, backend, Ledger()))
    assert result.answer == "4"
    first = next(t for t in result.trace if t.get("step") == 0)
    assert len(first["picked"]) == 4 and all(first["weights"][i] > 0.2 for i in first["picked"])
    # every finished candidate descends from a good first step: the bad ones were resampled away
    assert result.candidates and all(c.text.startswith("good") for c in result.candidates)
    assert sum(1 for c in backend.calls if c.prefix == "") == 4  # one first step per particle


def test_the_budget_is_the_number_of_particles_and_validation_names_the_field() -> None:
    assert ParticleFiltering().at_budget(8).particles == 8
    with pytest.raises(InvalidParameter, match="particles"):
        ParticleFiltering(particles=0)
    with pytest.raises(InvalidParameter, match="resample_temperature"):
        ParticleFiltering(resample_temperature=0)


def test_a_spent_budget_stops_the_filter_with_what_finished() -> None:
    backend = ScriptedBackend(stepper)
    ledger = Ledger(Budget(tokens=3))
    result = asyncio.run(ParticleFiltering(particles=4, verifier=prm, seed=0).solve(PROBLEM, backend, ledger))
    assert result.budget_exhausted and result.answer is None
