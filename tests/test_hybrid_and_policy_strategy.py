"""hybrid_consistency votes over chains and programs; compute_optimal applies a policy file that report writes."""

import asyncio
import json

import pytest

from ponder import Ledger, Problem, ScriptedBackend
from ponder.errors import InvalidParameter
from ponder.strategies.compute_optimal import ComputeOptimal, agreement, bin_of
from ponder.strategies.hybrid_consistency import HybridConsistency
from ponder.strategies.program_aided import PROGRAM_PROMPT

MATH = Problem("q", "What is 17 * 24?", "408")


def mixed(chains, programs):
    """Chains answer `chains[i]`; programs print `programs[i]`."""
    def reply(call, i):
        system = call.messages[0].content if call.messages and call.messages[0].role == "system" else ""
        if system == PROGRAM_PROMPT:
            return f"```python\nprint({programs[i]})\n```"
        return f"Step by step.\n\nThe answer is {chains[i]}."
    return reply


def test_agreement_across_methods_outvotes_a_majority_of_one_method():
    # chains: 392, 392, 408; programs: 408, 408, 5 -> 408 has 3 votes, 392 has 2.
    backend = ScriptedBackend(mixed(["392", "392", "408"], ["408", "408", "5"]))
    res = asyncio.run(HybridConsistency(n=3, seed=1).solve(MATH, backend, Ledger()))
    assert res.answer == "408" and res.votes == {"392": 2.0, "408": 3.0, "5": 1.0}
    assert len(res.candidates) == 6 and [t["method"] for t in res.trace] == ["cot"] * 3 + ["program"] * 3
    assert res.usage_by_role["policy"].calls == 2  # one batched call per method


def test_hybrid_refuses_problems_without_a_value():
    backend = ScriptedBackend(mixed(["1"], ["1"]))
    with pytest.raises(InvalidParameter, match="math"):
        asyncio.run(HybridConsistency(n=1).solve(Problem("c", "write f", kind="code"), backend, Ledger()))


def test_probe_agreement_and_bins():
    assert agreement(["4", "4"]) == 1.0 and agreement(["4", "5"]) == 0.5 and agreement([None, None]) == 0.0
    assert [bin_of(a) for a in (1.0, 0.75, 0.5, 0.25, 0.0)] == [1, 2, 2, 3, 3]


def policy_file(tmp_path, choices):
    doc = {"kind": "ponder.compute_optimal_policy", "version": 1, "model": "scripted", "task": "gsm8k",
           "probe": {"pool": "cot", "samples": 2, "temperature": 0.7, "max_tokens": 64},
           "bins": {"edges": [1.0, 0.5]}, "choices": choices}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_compute_optimal_runs_the_choice_of_the_probes_bin_and_charges_the_probe(tmp_path):
    path = policy_file(tmp_path, {
        "1": {"strategy": "cot", "params": {}, "budget": 1, "label": "cot@1"},
        "2": {"strategy": "self_consistency", "params": {}, "budget": 4, "label": "self_consistency@4"}})
    agreeing = ScriptedBackend(lambda call, i: "The answer is 408.")
    res = asyncio.run(ComputeOptimal(policy=path, seed=3).solve(MATH, agreeing, Ledger()))
    assert res.trace[0]["bin"] == 1 and res.trace[0]["strategy"] == "cot@1" and res.answer == "408"
    assert res.usage_by_role["policy"].calls == 2  # the probe, then greedy
    split = ScriptedBackend(lambda call, i: f"The answer is {408 if i % 2 else 392}.")
    res = asyncio.run(ComputeOptimal(policy=path, seed=3).solve(MATH, split, Ledger()))
    assert res.trace[0]["bin"] == 2 and res.trace[0]["strategy"] == "self_consistency@4"
    assert res.trace[0]["probe_tokens"] > 0
    assert res.usage_by_role["policy"].completion_tokens > res.trace[0]["probe_tokens"]


def test_a_bad_policy_file_is_refused_when_the_strategy_is_built(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(InvalidParameter, match="ponder report"):
        ComputeOptimal(policy=str(bad))
    with pytest.raises(InvalidParameter, match="cannot read"):
        ComputeOptimal(policy=str(tmp_path / "missing.json"))


def test_report_writes_a_policy_that_the_strategy_loads(tmp_path):
    from ponder.experiments.report import build_report
    from synthetic_rows import make_rows
    from test_report import FakeStore

    files = build_report(FakeStore(make_rows(40, 8)), tmp_path / "r")
    if files.policy is None:
        pytest.fail("the synthetic run has a cot pool: report must write policy.json")
    doc = json.loads(files.policy.read_text())
    assert doc["probe"]["samples"] == 2 and set(doc["choices"]) <= {"1", "2", "3"}
    strategy = ComputeOptimal(policy=str(files.policy))
    for b in doc["choices"]:
        assert strategy.chosen_strategy(int(b)) is not None


def test_the_server_applies_the_policy_for_reasoning_effort_auto(tmp_path):
    from ponder.server import ServerConfig, create_app
    from ponder.server.config import DEFAULT_EFFORTS, Effort
    from test_server_errors import post

    path = policy_file(tmp_path, {"1": {"strategy": "cot", "params": {}, "budget": 1, "label": "cot@1"},
                                  "3": {"strategy": "self_consistency", "params": {}, "budget": 3,
                                        "label": "self_consistency@3"}})
    config = ServerConfig(efforts={**DEFAULT_EFFORTS, "auto": Effort("compute_optimal", {"policy": path})})
    app = create_app(ScriptedBackend(lambda call, i: "The answer is 408.", model="tiny"), config=config)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 17 * 24?"}],
            "reasoning_effort": "auto", "ponder": {"kind": "math"}}
    r = post(app, body=body)
    assert r.status_code == 200, r.text
    decision = r.json()["ponder"]["choices"][0]["policy"]
    assert decision["bin"] == 1 and decision["strategy"] == "cot@1" and decision["probe_tokens"] > 0
    assert r.json()["choices"][0]["message"]["content"] == "The answer is 408."
    without = create_app(ScriptedBackend(lambda call, i: "4", model="tiny"))
    assert post(without, body=body).status_code == 400  # no --policy: "auto" is not a level
