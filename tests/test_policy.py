"""The deployable compute-optimal policy: probe bins see no grades, choices are fitted on training problems only,
and a ratio is a number only when it is measurable."""

import numpy as np

from ponder.experiments import policy
from ponder.experiments.outcomes import AXES, Outcome
from ponder.experiments.records import SampleRow


def outcome(name, budget, correct, tokens, deployable=True):
    correct = np.asarray(correct, dtype=float)
    cost = {a: np.full(len(correct), float(tokens)) for a in AXES}
    return Outcome(name, budget, correct, cost, deployable)


def probe_pools(agreeing):
    """Two probe samples per problem: the same answer where `agreeing`, two different ones elsewhere."""
    rows = []
    for i, agree in enumerate(agreeing):
        for j, a in enumerate(("1", "1") if agree else ("1", "2")):
            rows.append(SampleRow(f"p{i:03d}", "cot", j, j, "", a, bool(j), None, "stop"))
    return rows


def test_bins_come_from_the_probe_answers_never_from_the_grades():
    agreeing = [True, False, True, False]
    samples = probe_pools(agreeing)
    regraded = [SampleRow(**{**s.__dict__, "correct": not s.correct}) for s in samples]
    pids = [f"p{i:03d}" for i in range(4)]
    cost = {pid: [10.0, 10.0] for pid in pids}
    a = policy.probe_data(pids, samples, policy.Probe(), cost)
    b = policy.probe_data(pids, regraded, policy.Probe(), cost)
    assert a.bins.tolist() == b.bins.tolist() == [1, 2, 1, 2]
    assert a.cost.tolist() == [20.0] * 4  # the probe's two samples are charged to the policy


def test_a_policy_that_spends_where_it_pays_is_measurably_cheaper_than_the_best_fixed_strategy():
    rng = np.random.default_rng(0)
    n = 300
    easy = rng.random(n) < 0.6
    cheap = np.where(easy, 1.0, 0.2)  # greedy solves the easy ones and few hard ones, at 100 tokens
    costly = np.where(easy, 1.0, 0.8)  # the vote solves most of both, at 1000 tokens
    outcomes = [outcome("cot", 1, cheap, 100), outcome("vote", 8, costly, 1000)]
    samples = probe_pools(easy.tolist())
    pids = [f"p{i:03d}" for i in range(n)]
    pd = policy.probe_data(pids, samples, policy.Probe(), {pid: [5.0, 5.0] for pid in pids})
    c = policy.compare(outcomes, pd, "tokens", repeats=3, seed=1)
    r = policy.ratio(c)
    # easy -> cot (100 + 10 probe), hard -> vote (1000 + 10): about 1000 / (0.6 * 110 + 0.4 * 1010) = 2.1x.
    assert r.measurable, r.reason
    assert 1.8 < r.value < 2.5 and r.ci_low > 1.0
    assert abs(r.accuracy_gap) < 0.02
    assert all(ch == "bin 1: cot@1; bin 2: vote@8" for ch in c.chosen)


def test_every_accuracy_zero_is_not_measurable():
    n = 40
    outcomes = [outcome("cot", 1, np.zeros(n), 100), outcome("vote", 8, np.zeros(n), 800)]
    pids = [f"p{i:03d}" for i in range(n)]
    pd = policy.probe_data(pids, probe_pools([i % 2 == 0 for i in range(n)]), policy.Probe(),
                           {pid: [5.0, 5.0] for pid in pids})
    r = policy.ratio(policy.compare(outcomes, pd, "tokens"))
    assert not r.measurable and r.value is None
    assert "not measurable" in r.text()


def test_a_ratio_whose_interval_includes_one_is_not_a_number():
    rng = np.random.default_rng(3)
    n = 30
    same = (rng.random(n) < 0.5).astype(float)
    outcomes = [outcome("a", 1, same, 100), outcome("b", 2, same, 101)]
    pids = [f"p{i:03d}" for i in range(n)]
    pd = policy.probe_data(pids, probe_pools([i % 3 == 0 for i in range(n)]), policy.Probe(),
                           {pid: [0.0, 0.0] for pid in pids})
    r = policy.ratio(policy.compare(outcomes, pd, "tokens", baseline=outcomes[0]))
    assert not r.measurable and "includes 1" in r.reason
