"""The sampling strategies on the scripted backend: votes, ties, selection, stopping, revision, programs, budgets."""

import asyncio
import dataclasses

import pytest

from ponder import Budget, InvalidParameter, Ledger, Problem, Reply, ScriptedBackend
from ponder.errors import VerifierError
from ponder.registry import STRATEGIES, VERIFIERS
from ponder.strategies import at_budget
from ponder.strategies.adaptive_consistency import AdaptiveConsistency, leader_probability
from ponder.strategies.best_of_n import BestOfN, select
from ponder.strategies.cot import ChainOfThought
from ponder.strategies.program_aided import ProgramAided, extract_program, run_program
from ponder.strategies.revision import Revision
from ponder.strategies.self_consistency import SelfConsistency, majority_vote
from ponder.types import SamplingParams, Score, user

MATH = Problem("p1", "Tom has 2 apples and buys 3. How many?", "5")
OPEN = Problem("p2", "Describe a cat.", None, kind="open")


def run(coro):
    return asyncio.run(coro)


def solve(strategy, backend, problem=MATH, budget=None):
    ledger = Ledger(budget)
    return run(strategy.solve(problem, backend, ledger)), ledger


def says(*answers):
    """A script whose replies end in 'The answer is X.' (None: a reply with no number in it)."""
    return [f"Let me think. The answer is {a}." if a is not None else "I am not sure." for a in answers]


class Recording:
    """Wraps a backend and sums the usage of everything it returned, to compare with the ledger."""

    def __init__(self, inner):
        self.inner, self.model, self.info = inner, inner.model, inner.info
        self.prompt = self.completion = self.calls = 0

    async def generate(self, messages, params, prefix=""):
        gens = await self.inner.generate(messages, params, prefix)
        self.calls += 1
        self.prompt += sum(g.usage.prompt_tokens for g in gens)
        self.completion += sum(g.usage.completion_tokens for g in gens)
        return gens


# -- majority vote ------------------------------------------------------------------------------------------
def test_majority_vote_counts_answers_and_ignores_none():
    winner, votes = majority_vote(["3", None, "4", "4", None])
    assert winner == "4" and votes == {"3": 1.0, "4": 2.0}
    assert majority_vote([None, None]) == (None, {})


def test_majority_vote_breaks_ties_by_summed_logprob_else_earliest():
    assert majority_vote(["3", "4", "4", "3"])[0] == "3"  # no logprobs: the earliest
    assert majority_vote(["3", "4", "4", "3"], [-2.0, -0.1, -0.2, -1.0])[0] == "4"
    assert majority_vote(["3", "4", "4", "3"], [-0.1, -0.5, -0.5, -0.1])[0] == "3"
    assert majority_vote(["3", "4", "4", "3"], [-9.0, None, -0.1, -9.0])[0] == "3"  # one missing: earliest


def test_self_consistency_votes_over_one_batched_call():
    backend = ScriptedBackend(says(3, 4, None, 4, 3, 4))
    result, ledger = solve(SelfConsistency(n=6), backend)
    assert result.answer == "4" and result.votes == {"3": 2.0, "4": 3.0}
    assert "The answer is 4" in result.text
    assert len(backend.calls) == 1 and backend.calls[0].params.n == 6
    assert [c.answer for c in result.candidates] == ["3", "4", None, "4", "3", "4"]
    assert result.usage_by_role == ledger.usage_by_role and not result.budget_exhausted


def test_self_consistency_reads_an_echoed_answer_format():
    # small models echo the prompt's format: "The answer is: The answer is 5."
    script = ["2 + 3 = 5.\n\nThe answer is: The answer is 5.", "The answer is 5.", "The answer is 6."]
    result, _ = solve(SelfConsistency(n=3), ScriptedBackend(script))
    assert result.answer == "5" and result.votes == {"5": 2.0, "6": 1.0}


def test_self_consistency_tie_goes_to_the_more_confident_answer():
    script = [Reply("The answer is 3.", logprob=-1.0), Reply("The answer is 4.", logprob=-0.2)]
    assert solve(SelfConsistency(n=2), ScriptedBackend(script))[0].answer == "4"
    assert solve(SelfConsistency(n=2, logprobs=False), ScriptedBackend(script))[0].answer == "3"


# -- best of n ----------------------------------------------------------------------------------------------
def test_select_max_takes_the_best_sample_weighted_the_best_answer():
    answers, scores = ["7", "8", "8", None], [0.9, 0.5, 0.5, 1.0]
    assert select(answers, scores, "max") == ("7", {"7": 0.9, "8": 0.5})
    assert select(answers, scores, "weighted") == ("8", {"7": 0.9, "8": 1.0})
    assert select(["1", "2"], [0.5, 0.5], "max")[0] == "1"
    assert select([None], [1.0], "max") == (None, {})


def _length_scores(problem, texts):  # a plain callable is a verifier: longer texts score higher
    return [len(t) / 100 for t in texts]


def test_best_of_n_scores_candidates_with_a_callable_and_selects_by_mode():
    script = ["Working: the answer is 7.", "The answer is 8.", "Hence the answer is 8."]
    best = solve(BestOfN(n=3, verifier=_length_scores, mode="max"), ScriptedBackend(script))[0]
    weighted = solve(BestOfN(n=3, verifier=_length_scores, mode="weighted"), ScriptedBackend(script))[0]
    assert best.answer == "7" and weighted.answer == "8"
    assert [c.score for c in weighted.candidates] == [len(t) / 100 for t in script]
    assert weighted.text == script[2]  # the best-scored text among those answering 8


class _AskTheModel:
    """A model-based verifier taking its backend as its factory registry does: the strategy meters it."""

    def __init__(self, backend):
        self.backend = backend

    async def score(self, problem, candidates):
        gens = await self.backend.generate(user("Is it right?"), SamplingParams(n=len(candidates)))
        return [Score(1.0 if g.text.startswith("Yes") else 0.0) for g in gens]


def test_best_of_n_meters_a_model_verifier_as_its_own_role():
    VERIFIERS.register("test_ask_the_model", _AskTheModel)

    def script(call, i):
        return ("No", "Yes")[i] if "Is it right" in call.last_user else says(1, 2)[i]

    backend = Recording(ScriptedBackend(script))
    result, ledger = solve(BestOfN(n=2, verifier="test_ask_the_model", mode="max"), backend)
    assert result.answer == "2"
    assert result.usage_by_role["verifier"].completion_tokens == 2 and result.usage_by_role["verifier"].calls == 1
    assert ledger.total.completion_tokens == backend.completion and ledger.total.prompt_tokens == backend.prompt


def test_best_of_n_with_an_oracle_needs_a_reference_and_fails_before_sampling():
    backend = ScriptedBackend(says(1, 2))
    with pytest.raises(VerifierError, match="reference answer"):
        solve(BestOfN(n=2, verifier="math"), backend, OPEN)
    assert backend.calls == []


def test_best_of_n_with_the_math_oracle_is_pass_at_n():
    backend = ScriptedBackend(says(4, 5, 4))
    result, ledger = solve(BestOfN(n=3, verifier="math", mode="max"), backend)
    assert result.answer == "5" and [c.score for c in result.candidates] == [0.0, 1.0, 0.0]
    assert "verifier" not in ledger.usage_by_role  # grading against the reference costs no model calls


def test_best_of_n_rejects_unknown_verifiers_and_modes():
    with pytest.raises(Exception, match="valid verifiers"):
        BestOfN(verifier="oracle_of_delphi")
    with pytest.raises(InvalidParameter, match="mode"):
        BestOfN(mode="median")
    with pytest.raises(InvalidParameter, match="verifier"):
        BestOfN(verifier=0.5)


# -- adaptive consistency -----------------------------------------------------------------------------------
def test_leader_probability_is_the_beta_tail():
    assert leader_probability(3, 0) == 15 / 16
    assert leader_probability(4, 0) == 31 / 32
    assert leader_probability(5, 1) == 120 / 128
    assert leader_probability(6, 1) == 247 / 256
    assert leader_probability(2, 2) == 0.5


def test_stopping_point_follows_the_beta_rule_in_rounds_and_caps():
    unanimous = ["a"] * 12
    assert AdaptiveConsistency(n_max=16).stopping_point(unanimous) == 4  # 31/32 > 0.95, 15/16 is not
    one_dissent = ["a", "b", "a", "a", "a", "a", "a", "a", "a"]
    assert AdaptiveConsistency(n_max=16).stopping_point(one_dissent) == 7  # (6, 1): 0.965
    assert AdaptiveConsistency(n_max=16, round_size=3).stopping_point(one_dissent) == 9  # checks at 3, 6, 9
    assert AdaptiveConsistency(n_max=5).stopping_point(one_dissent) == 5
    assert AdaptiveConsistency(n_max=16).stopping_point(["a", None, None, "a", "a", "a"]) == 6  # None casts no vote
    assert AdaptiveConsistency(n_max=16, threshold=0.94).stopping_point(unanimous) == 4  # 15/16 is not > 0.94...
    assert AdaptiveConsistency(n_max=16, threshold=0.9).stopping_point(unanimous) == 3  # ...but it is > 0.9


def test_adaptive_solve_stops_where_the_rule_says_and_uses_seeds_of_the_pool():
    pool = says(5, 6, 5, 5, 5, 5, 5, 5, 5, 5)
    strategy = AdaptiveConsistency(n_max=10, round_size=2, seed=100)
    backend = ScriptedBackend(pool)
    result, _ = solve(strategy, backend)
    expected = strategy.stopping_point([f"{a}" for a in (5, 6, 5, 5, 5, 5, 5, 5, 5, 5)])
    assert len(result.candidates) == expected == 8 and result.answer == "5"
    assert [c.params.seed for c in backend.calls] == [100, 102, 104, 106]
    assert [t["settled"] for t in result.trace] == [False, False, False, True]


def test_adaptive_matches_the_majority_vote_with_clearly_fewer_tokens():
    # 20 problems, pools of 16 with a clear majority at varying strength, in a fixed interleaved order
    pools = []
    for p in range(20):
        wrong = p % 5  # 0..4 wrong answers out of 16
        pools.append(["7" if (i * 7 + p) % 16 >= wrong else str(8 + i % 2) for i in range(16)])
    sc_tokens = ad_tokens = agree = 0
    for pool in pools:
        sc, _ = solve(SelfConsistency(n=16), ScriptedBackend(says(*pool)))
        ad, _ = solve(AdaptiveConsistency(n_max=16), ScriptedBackend(says(*pool)))
        agree += sc.answer == ad.answer == "7"
        sc_tokens += sc.usage.completion_tokens
        ad_tokens += ad.usage.completion_tokens
    assert agree == 20
    print(f'adaptive used {ad_tokens / sc_tokens:.0%} of the tokens of self-consistency at n=16')
    assert ad_tokens < 0.6 * sc_tokens


# -- revision -----------------------------------------------------------------------------------------------
def test_revision_feeds_back_the_last_attempt_and_selects_last_or_vote():
    script = says(4, 4, 5)
    last, _ = solve(Revision(rounds=2), ScriptedBackend(script))
    backend = ScriptedBackend(script)
    vote, _ = solve(Revision(rounds=2, select="vote"), backend)
    assert last.answer == "5" and vote.answer == "4"
    assert vote.votes == {"4": 2.0, "5": 1.0}
    second = backend.calls[1].messages
    assert second[-2].role == "assistant" and second[-2].content == script[0]
    assert second[-1].content == Revision().revise_prompt
    assert [t["answer"] for t in vote.trace] == ["4", "4", "5"]
    assert Revision().at_budget(4).rounds == 3


def test_revision_last_skips_a_round_cut_off_before_its_answer():
    script = ["The answer is 5.", "Let me recount: first 2, then 3, then the total is " + "more " * 50]
    result, _ = solve(Revision(rounds=1, max_tokens=40), ScriptedBackend(script))
    assert [c.finish_reason for c in result.candidates] == ["stop", "length"]
    assert result.candidates[1].answer is None and result.answer == "5"  # a cut-off round has no answer


def test_revision_vote_tie_goes_to_the_later_round():
    assert solve(Revision(rounds=1, select="vote"), ScriptedBackend(says(4, 5)))[0].answer == "5"


# -- program aided ------------------------------------------------------------------------------------------
def test_extract_program_finds_fenced_unclosed_bare_and_pal_style_code():
    assert extract_program("Here:\n```python\nprint(2 + 3)\n```\nDone.") == "print(2 + 3)\n"
    assert extract_program("```python\nx = 4\nprint(x)") == "x = 4\nprint(x)\n"  # cut off by max_tokens
    assert extract_program("x = 1\nprint(x + 1)") == "x = 1\nprint(x + 1)\n"
    assert extract_program("```py\ndef solution():\n    return 9\n```").endswith("print(solution())\n")
    assert extract_program("python code block\nprint(2 + 3)") == "print(2 + 3)\n"  # a fence-less reply
    assert extract_program("```python\n  x = 2\n  print(x)\n```") == "x = 2\nprint(x)\n"
    assert extract_program("The answer is 5.") is None


def test_run_program_returns_the_normalised_last_printed_line_or_none():
    assert run(run_program("print('working')\nprint(10 / 4)")) == "2.5"
    assert run(run_program("print(1000.0)")) == "1000"
    assert run(run_program("raise SystemExit(3)")) is None
    assert run(run_program("x = 1")) is None


def test_program_aided_votes_over_program_results_not_over_text():
    script = ["```python\nprint(2 + 3)\n```", "The answer is 6: ```python\nprint(2 + 4)\n```",
              "```python\nprint(1/0)\n```", "```python\ndef solution():\n    return 5\n```"]
    result, _ = solve(ProgramAided(n=4), ScriptedBackend(script))
    assert result.answer == "5" and result.votes == {"5": 2.0, "6": 1.0}
    assert [c.answer for c in result.candidates] == ["5", "6", None, "5"]
    assert [t["program"] for t in result.trace] == [True, True, True, True]


def test_program_aided_refuses_problems_that_are_not_math():
    with pytest.raises(InvalidParameter, match="math"):
        solve(ProgramAided(n=1), ScriptedBackend(["print(1)"]), OPEN)


# -- shared behaviour: budgets, validation, metering --------------------------------------------------------
STRATEGY_CASES = [
    ChainOfThought(),
    SelfConsistency(n=3),
    BestOfN(n=3, verifier=_length_scores),
    AdaptiveConsistency(n_max=6, round_size=2),
    Revision(rounds=2),
    ProgramAided(n=2),
]


def _any_reply(call, i):
    return "```python\nprint(5)\n```\nThe answer is 5." if i % 2 == 0 else "Hmm. The answer is 6."


@pytest.mark.parametrize("strategy", STRATEGY_CASES, ids=lambda s: s.name)
def test_ledger_totals_equal_the_backend_usage(strategy):
    backend = Recording(ScriptedBackend(_any_reply))
    result, ledger = solve(strategy, backend)
    assert result.answer in ("5", "6") and result.strategy == strategy.name
    assert ledger.total.completion_tokens == backend.completion > 0
    assert ledger.total.prompt_tokens == backend.prompt > 0
    assert ledger.total.calls == backend.calls == result.usage.calls
    assert result.usage_by_role == ledger.usage_by_role


@pytest.mark.parametrize("strategy", STRATEGY_CASES, ids=lambda s: s.name)
def test_a_spent_budget_returns_the_best_so_far_without_crashing(strategy):
    backend = ScriptedBackend(lambda call, i: "step " * 60 + "The answer is 5.")
    result, ledger = solve(strategy, backend, budget=Budget(tokens=40))
    assert result.budget_exhausted
    assert ledger.total.completion_tokens <= 40


def test_budget_cut_keeps_the_answers_found_so_far():
    backend = ScriptedBackend(lambda call, i: "The answer is 5.")
    result, _ = solve(AdaptiveConsistency(n_max=10, threshold=0.99), backend, budget=Budget(calls=3))
    assert result.budget_exhausted and result.answer == "5" and len(result.candidates) == 3
    result, _ = solve(Revision(rounds=3), ScriptedBackend(says(4, 5, 6, 7)), budget=Budget(calls=2))
    assert result.budget_exhausted and result.answer == "5"


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [(SelfConsistency, "n", 0), (BestOfN, "n", 0), (AdaptiveConsistency, "n_max", 0), (ProgramAided, "n", -1),
     (Revision, "rounds", -1), (AdaptiveConsistency, "threshold", 1.0), (ChainOfThought, "temperature", -1.0),
     (SelfConsistency, "max_tokens", 0), (AdaptiveConsistency, "round_size", 0)],
)
def test_bad_hyperparameters_are_refused_by_name(cls, field, value):
    with pytest.raises(InvalidParameter, match=field):
        cls(**{field: value})


@pytest.mark.parametrize(
    ("name", "scaled"),
    [("cot", {}), ("self_consistency", {"n": 7}), ("best_of_n", {"n": 7}), ("adaptive_consistency", {"n_max": 7}),
     ("revision", {"rounds": 6}), ("program_aided", {"n": 7})],
)
def test_registry_builds_each_strategy_and_at_budget_scales_it(name, scaled):
    cls = STRATEGIES.get(name)
    strategy = cls()
    assert strategy.name == name and cls.paper
    after = at_budget(strategy, 7)
    changed = {f.name: getattr(after, f.name) for f in dataclasses.fields(after)
               if getattr(after, f.name) != getattr(strategy, f.name)}
    assert changed == scaled


def test_cot_is_greedy_and_single():
    backend = ScriptedBackend(says(5))
    result, _ = solve(ChainOfThought(), backend)
    assert result.answer == "5" and backend.calls[0].params.temperature == 0 and backend.calls[0].params.n == 1
    assert backend.calls[0].messages[0].role == "system"


# -- end to end on the 0.5B model (slow) --------------------------------------------------------------------
MODEL_05B = "~/.cache/ponder/models/qwen2.5-coder-0.5b.gguf"
SLOW_CASES = [
    ChainOfThought(max_tokens=96),
    SelfConsistency(n=3, max_tokens=96, seed=1),
    BestOfN(n=2, max_tokens=96, verifier="math", mode="max", seed=1),  # the oracle verifier: pass@2
    AdaptiveConsistency(n_max=3, max_tokens=96, seed=1),
    Revision(rounds=1, max_tokens=96, seed=1),
    ProgramAided(n=2, max_tokens=96, seed=1),
]


@pytest.fixture(scope="module")
def qwen05b():
    from pathlib import Path

    from ponder.backends.llamacpp import LlamaCppBackend

    path = Path(MODEL_05B).expanduser()
    if not path.is_file():
        pytest.skip(f"{path} is not pulled")
    with LlamaCppBackend(path, n_ctx=2048, n_threads=2, n_seq_max=4) as backend:
        yield backend


@pytest.mark.slow
@pytest.mark.parametrize("strategy", SLOW_CASES, ids=lambda s: s.name)
def test_each_strategy_runs_end_to_end_on_the_05b_model(qwen05b, strategy):
    problem = Problem("apples", "Tom has 2 apples and buys 3 more. How many apples does he have now?", "5")
    result, ledger = solve(strategy, qwen05b, problem)
    policy = ledger.usage_by_role["policy"]
    # every policy generation is a candidate, so the ledger's count is the candidates' sum
    assert policy.completion_tokens == sum(c.completion_tokens for c in result.candidates) > 0
    assert policy.prompt_tokens > 0 and all(c.completion_tokens <= 96 for c in result.candidates)
    assert result.answer is None or result.answer in {c.answer for c in result.candidates}
    assert all(c.finish_reason in ("stop", "length") for c in result.candidates)
    print(f"{strategy.name}: answer={result.answer} votes={dict(result.votes)} tokens={policy.completion_tokens} "
          f"seconds={policy.seconds:.1f}")


def test_self_consistency_cut_off_samples_do_not_vote():
    script = ["The answer is 4."] + ["so far 9 and 9 and " + "more " * 50] * 2
    result, _ = solve(SelfConsistency(n=3, max_tokens=30, logprobs=False), ScriptedBackend(script))
    assert [c.finish_reason for c in result.candidates] == ["stop", "length", "length"]
    assert result.answer == "4" and result.votes == {"4": 1.0}


def test_adaptive_stops_once_a_verifier_is_confident_in_the_leading_answer():
    backend = ScriptedBackend(lambda call, i: "The answer is 4.")
    problem = Problem("p", "2+2?", "4")
    alone = asyncio.run(AdaptiveConsistency(n_max=8).solve(problem, backend, Ledger()))
    sure = asyncio.run(AdaptiveConsistency(n_max=8, verifier=lambda p, texts: [0.95] * len(texts))
                       .solve(problem, backend, Ledger()))
    unsure = asyncio.run(AdaptiveConsistency(n_max=8, verifier=lambda p, texts: [0.5] * len(texts))
                         .solve(problem, backend, Ledger()))
    assert len(sure.candidates) == 1 < len(alone.candidates) == len(unsure.candidates)
    assert sure.answer == "4" and sure.trace[0]["confident"] is True
    assert "verifier" not in sure.usage_by_role  # a callable verifier spends no model calls
