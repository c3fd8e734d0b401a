"""The data contract, the scripted backend, the ledger and the registry."""

import asyncio

import pytest

from ponder import (
    STRATEGIES,
    Budget,
    BudgetExhausted,
    InvalidParameter,
    Ledger,
    Price,
    PriceTable,
    Reply,
    SamplingParams,
    ScriptedBackend,
    UnknownName,
    Usage,
    answer_of,
)
from ponder.errors import MissingExtra
from ponder.extras import require
from ponder.types import user


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("field", "value"), [("n", 0), ("n", -1), ("temperature", -0.1), ("max_tokens", 0), ("top_p", 0.0)]
)
def test_sampling_params_reject_bad_values_naming_the_parameter(field, value):
    with pytest.raises(InvalidParameter, match=field):
        SamplingParams(**{field: value})


def test_sampling_params_accept_a_single_stop_string():
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)


def test_usage_adds_fieldwise():
    a = Usage(1, 2, 3, 4, 5, 0.5)
    b = Usage(10, 20, 30, 40, 50, 1.5)
    assert a + b == Usage(11, 22, 33, 44, 55, 2.0)
    assert (a + b).total_tokens == 33


def test_scripted_backend_honours_stop_max_tokens_and_records_calls():
    backend = ScriptedBackend(["one two three four", "alpha STOP beta"])
    gens = run(backend.generate(user("q"), SamplingParams(n=2, max_tokens=3, stop=("STOP",))))
    assert [g.finish_reason for g in gens] == ["length", "stop"]
    assert gens[0].text == "one two three "
    assert gens[1].text == "alpha "
    assert gens[0].usage.prompt_tokens == 1 and gens[1].usage.prompt_tokens == 0
    assert len(backend.calls) == 1 and backend.calls[0].params.n == 2


def test_scripted_backend_reports_logprobs_when_asked():
    backend = ScriptedBackend([Reply("Yes", logprob=-0.1, top_logprobs={"Yes": -0.1, "No": -2.4})])
    (gen,) = run(backend.generate(user("q"), SamplingParams(logprobs=True, top_logprobs=2)))
    assert gen.logprobs[0].top["No"] == -2.4
    assert gen.mean_logprob == pytest.approx(-0.1)


def test_scripted_backend_says_when_its_script_runs_out():
    backend = ScriptedBackend(["only one"])
    run(backend.generate(user("q"), SamplingParams()))
    with pytest.raises(Exception, match="ran out of replies"):
        run(backend.generate(user("q"), SamplingParams()))


def test_ledger_totals_equal_the_sum_of_backend_usage_by_role():
    backend = ScriptedBackend(lambda call, i: "a b c d" if call.params.n > 1 else "x y")
    ledger = Ledger()
    policy, verifier = ledger.meter(backend, "policy"), ledger.meter(backend, "verifier")
    gens = run(policy.generate(user("p q"), SamplingParams(n=3)))
    vgens = run(verifier.generate(user("r"), SamplingParams()))
    by_role = ledger.usage_by_role
    assert by_role["policy"].completion_tokens == sum(g.completion_tokens for g in gens) == 12
    assert by_role["policy"].prompt_tokens == 2
    assert by_role["verifier"].completion_tokens == vgens[0].completion_tokens == 2
    assert by_role["policy"].calls == 1 and ledger.total.calls == 2


def test_ledger_clamps_max_tokens_to_the_token_budget_then_refuses():
    backend = ScriptedBackend(lambda call, i: "w " * 100)
    ledger = Ledger(Budget(tokens=10))
    metered = ledger.meter(backend)
    gens = run(metered.generate(user("q"), SamplingParams(n=2, max_tokens=50)))
    assert [g.completion_tokens for g in gens] == [5, 5]
    with pytest.raises(BudgetExhausted, match="tokens budget exhausted"):
        run(metered.generate(user("q"), SamplingParams()))


def test_ledger_counts_thinking_tokens_and_calls_budget():
    backend = ScriptedBackend(lambda call, i: "hmm let me think")
    ledger = Ledger(Budget(calls=1))
    run(ledger.meter(backend, thinking=True).generate(user("q"), SamplingParams()))
    assert ledger.total.thinking_tokens == 4
    with pytest.raises(BudgetExhausted, match="calls"):
        run(ledger.meter(backend).generate(user("q"), SamplingParams()))


def test_price_table_charges_tokens_for_priced_models_and_hardware_time_otherwise():
    prices = PriceTable({"m": Price(1.0, 0.5, 2.0)}, hardware_usd_per_hour=3.6)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, cached_tokens=500_000, seconds=10)
    assert prices.cost("m", usage) == pytest.approx(0.5 + 0.25 + 2.0)
    assert prices.cost("local", usage) == pytest.approx(0.01)


def test_budget_rejects_impossible_limits():
    with pytest.raises(InvalidParameter, match="budget tokens"):
        Budget(tokens=0)


def test_registry_names_the_valid_choices():
    with pytest.raises(UnknownName) as err:
        STRATEGIES.get("majority")
    assert "self_consistency" in str(err.value) and "beam_search" in str(err.value)


def test_missing_extra_names_the_pip_command():
    with pytest.raises(MissingExtra, match=r"pip install 'ponder\[local\]'"):
        require("definitely_not_a_module_xyz", "local")


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("work...\n#### 1,234", "1234"),
        ("The answer is $18.00.", "18"),
        ("3 apples and 4 pears make 7", "7"),
        ("no digits here", None),
    ],
)
def test_answer_extraction_and_normalisation(text, answer):
    assert answer_of(text) == answer
