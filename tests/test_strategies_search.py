"""Budget forcing, beam search / DVTS and the judged tournament, on the scripted backend (and once on a real model)."""

import asyncio
import itertools
import re
from pathlib import Path

import pytest

from ponder.backends.scripted import ScriptedBackend
from ponder.errors import InvalidParameter, VerifierError
from ponder.ledger import Budget, Ledger
from ponder.registry import VERIFIERS
from ponder.strategies.beam_search import BeamSearch, has_final_answer
from ponder.strategies.budget_forcing import FORCED_ANSWER, THINK_CLOSE, BudgetForcing
from ponder.strategies.tournament import Tournament
from ponder.types import Problem, SamplingParams

PROBLEM = Problem("p1", "What is 3 + 4?", answer="7")
OPEN = Problem("w1", "Write a haiku about rain.", kind="open")


def run(coro):
    return asyncio.run(coro)


def solve(strategy, backend, problem=PROBLEM, budget=None):
    ledger = Ledger(budget)
    return run(strategy.solve(problem, backend, ledger)), ledger


# -- budget forcing ---------------------------------------------------------------------------------------------

def thinking_script(thought: str, answer: str):
    """Thinking calls (stopped at </think>) get `thought`; the answer call gets `answer`."""
    def script(call, i):
        return thought if THINK_CLOSE in call.params.stop else answer
    return script


def test_budget_forcing_appends_wait_exactly_max_waits_times_then_accepts_the_stop():
    backend = ScriptedBackend(thinking_script("three plus four</think> ignored", " The answer is 7"))
    strategy = BudgetForcing(min_thinking_tokens=20, max_thinking_tokens=100, max_waits=2)
    result, _ = solve(strategy, backend)
    thinking_calls = [c for c in backend.calls if THINK_CLOSE in c.params.stop]
    assert len(thinking_calls) == 3
    assert [c.prefix.count("Wait") for c in thinking_calls] == [0, 1, 2]
    assert thinking_calls[1].prefix.rstrip().endswith("Wait")
    answer_call = backend.calls[-1]
    assert answer_call.prefix.endswith(f"{THINK_CLOSE}\n\n") and FORCED_ANSWER not in answer_call.prefix
    assert [t["event"] for t in result.trace].count("wait") == 2
    assert result.answer == "7" and not result.budget_exhausted


def test_budget_forcing_needs_no_wait_when_thinking_passes_the_minimum():
    backend = ScriptedBackend(thinking_script("a b c d e f</think>", " 7"))
    result, _ = solve(BudgetForcing(min_thinking_tokens=4, max_thinking_tokens=100, max_waits=3), backend)
    assert len(backend.calls) == 2 and "Wait" not in backend.calls[1].prefix
    assert result.answer == "7"


def test_budget_forcing_cuts_long_thinking_and_forces_the_final_answer():
    long_thought = " ".join(f"w{i}" for i in range(50)) + " 99</think>"
    backend = ScriptedBackend(thinking_script(long_thought, " 42"))
    result, ledger = solve(BudgetForcing(max_thinking_tokens=8, answer_max_tokens=16), backend)
    assert backend.calls[0].params.max_tokens == 8
    answer_call = backend.calls[-1]
    assert answer_call.prefix.endswith(f"{THINK_CLOSE}\n\n{FORCED_ANSWER}")
    assert "w7" in answer_call.prefix and "w8" not in answer_call.prefix
    assert result.answer == "42"
    assert any(t.get("forced") for t in result.trace)
    policy = ledger.usage_by_role["policy"]
    assert policy.thinking_tokens == 8
    assert policy.completion_tokens == 8 + 1  # the forced answer's one token is not thinking


def test_budget_forcing_reports_thinking_tokens_apart_from_answer_tokens():
    backend = ScriptedBackend(thinking_script("one two</think>", " The answer is 7 , surely"))
    result, ledger = solve(BudgetForcing(min_thinking_tokens=5, max_waits=1), backend)
    policy = ledger.usage_by_role["policy"]
    thinking = sum(1 for c in backend.calls if THINK_CLOSE in c.params.stop) * 2
    assert policy.thinking_tokens == thinking == 4
    assert policy.completion_tokens - policy.thinking_tokens == 6
    assert result.usage_by_role["policy"] == policy


def test_budget_forcing_out_of_budget_answers_from_the_thinking_and_says_so():
    backend = ScriptedBackend(thinking_script("so it is 5 then more more more more more", " 9"))
    result, _ = solve(BudgetForcing(max_thinking_tokens=100), backend, budget=Budget(tokens=5))
    assert result.budget_exhausted
    assert result.answer == "5"  # from the thinking: no token was left for the answer
    assert len(backend.calls) == 1


def test_budget_forcing_at_budget_scales_the_thinking_budget():
    scaled = BudgetForcing(min_thinking_tokens=64, max_thinking_tokens=256, base_thinking_tokens=128).at_budget(4)
    assert (scaled.max_thinking_tokens, scaled.min_thinking_tokens) == (512, 128)
    with pytest.raises(InvalidParameter, match="min_thinking_tokens"):
        BudgetForcing(min_thinking_tokens=10, max_thinking_tokens=5)


# -- beam search and DVTS -------------------------------------------------------------------------------------

def last_step(text: str) -> str:
    steps = [s for s in text.split("\n\n") if s.strip()]
    return steps[-1].strip() if steps else ""


def tree_script(step0: dict, later: dict):
    """Children of the empty prefix are named s{call}{i}; a later step's children come from `later[parent]`."""
    seen: dict[int, int] = {}  # id of a recorded call -> its order among the first step's calls

    def script(call, i):
        if call.prefix == "":
            k = seen.setdefault(id(call), len(seen))
            return f"{step0[k][i]}\n\nnext"
        return later[last_step(call.prefix)][i]
    return script


def scorer(table: dict):
    """A step verifier (a plain callable) that scores the last step by table lookup."""
    return lambda problem, cands: [table.get(last_step(c), 0.5) for c in cands]


STEP0 = {0: ["s00", "s01"], 1: ["s10", "s11"]}
SCORES = {"s00": 0.9, "s01": 0.8, "s10": 0.2, "s11": 0.1, "The answer is 5": 0.7, "The answer is 3": 0.6}
LATER = {"s00": ["The answer is 5", "The answer is 5"], "s01": ["The answer is 3", "The answer is 3"],
         "s10": ["The answer is 3", "The answer is 3"], "s11": ["The answer is 3", "The answer is 3"]}


def expanded_at_step(backend, step: int, width: int) -> set[str]:
    return {last_step(c.prefix) for c in backend.calls[step * width:(step + 1) * width]}


def test_beam_search_keeps_the_top_scoring_beams_across_all_parents():
    backend = ScriptedBackend(tree_script(STEP0, LATER))
    strategy = BeamSearch(beam_width=2, expansions=2, max_steps=4, verifier=scorer(SCORES))
    result, _ = solve(strategy, backend)
    assert all(c.params.n == 2 and c.params.stop == ("\n\n",) for c in backend.calls)
    assert expanded_at_step(backend, 1, 2) == {"s00", "s01"}  # both of the first parent's children won
    assert result.answer == "5"  # 2 x 0.7 beats 2 x 0.6
    assert len(result.candidates) == 4 and all(c.answer in {"5", "3"} for c in result.candidates)


def test_dvts_subtrees_expand_their_own_best_child_even_when_another_subtree_scores_higher():
    backend = ScriptedBackend(tree_script(STEP0, LATER))
    strategy = BeamSearch(beam_width=2, expansions=2, max_steps=4, dvts=True, verifier=scorer(SCORES))
    result, _ = solve(strategy, backend)
    assert expanded_at_step(backend, 1, 2) == {"s00", "s10"}  # s10 (0.2) survives though s01 (0.8) scored higher
    assert sorted(c.answer for c in result.candidates) == ["3", "3", "5", "5"]


def test_beam_search_never_returns_an_unfinished_candidate():
    backend = ScriptedBackend(lambda call, i: f"so far 99 apples {len(call.prefix)}\n\nmore")
    result, _ = solve(BeamSearch(beam_width=2, expansions=2, max_steps=3, verifier=scorer({}), seed=10), backend)
    assert len(backend.calls) == 6
    seeds = [c.params.seed for c in backend.calls]
    assert len(set(seeds)) == 6 and None not in seeds  # every call its own seed: beams of one prefix differ
    assert result.answer is None and result.text == "" and result.candidates == ()
    assert result.trace[-1]["event"] == "no_finished_candidate"


def first_then(first: str, rest: str):
    """The very first generation is `first`, every later one `rest`."""
    count = itertools.count()
    return lambda call, i: first if next(count) == 0 else rest


def test_beam_search_prefers_a_low_scored_finished_candidate_over_high_scored_unfinished_ones():
    script = first_then("The answer is 3", "still 99\n\n")
    table = {"The answer is 3": 0.1, "still 99": 0.9}
    backend = ScriptedBackend(script)
    result, _ = solve(BeamSearch(beam_width=2, expansions=2, max_steps=3, verifier=scorer(table)), backend)
    assert len(backend.calls) == 6  # the search went on past the finished candidate
    assert result.answer == "3"
    assert [c.answer for c in result.candidates] == ["3"]


def test_a_step_cut_by_max_tokens_is_not_finished_and_an_empty_step_ends_the_beam():
    def script(call, i):
        return "The answer is 4 because a b c d e f" if call.prefix == "" else ""
    strategy = BeamSearch(beam_width=1, expansions=1, max_steps=3, max_step_tokens=4, verifier=scorer({}))
    backend = ScriptedBackend(script)
    result, _ = solve(strategy, backend)
    assert len(backend.calls) == 2 and len(result.candidates) == 1 and result.answer == "4"
    assert result.candidates[0].text == "The answer is 4 "  # finished only when the model ended its turn
    cut, _ = solve(BeamSearch(beam_width=1, expansions=1, max_steps=1, max_step_tokens=4, verifier=scorer({})),
                   ScriptedBackend(script))
    assert cut.answer is None and cut.candidates == ()
    assert has_final_answer("so \\boxed{2}") and not has_final_answer("answer 2")


def test_beam_search_out_of_budget_returns_the_best_finished_so_far_marked():
    script = first_then("The answer is 8", "keep going 1\n\n")
    strategy = BeamSearch(beam_width=2, expansions=2, max_steps=5, verifier=scorer({}))
    backend = ScriptedBackend(script)
    result, _ = solve(strategy, backend, budget=Budget(calls=2))
    assert result.budget_exhausted and result.answer == "8"
    assert len(backend.calls) == 2


def test_beam_search_names_a_verifier_that_returns_the_wrong_number_of_scores():
    strategy = BeamSearch(beam_width=1, expansions=2, verifier=lambda problem, cands: [0.5])
    with pytest.raises(VerifierError, match="one Score per candidate"):
        solve(strategy, ScriptedBackend(lambda call, i: "step\n\n"))


class RecordingBackend(ScriptedBackend):
    """Sums the usage of every generation it returns, to compare against the ledger."""

    def __init__(self, script):
        super().__init__(script)
        self.prompt = self.completion = 0

    async def generate(self, messages, params, prefix=""):
        gens = await super().generate(messages, params, prefix)
        self.prompt += sum(g.usage.prompt_tokens for g in gens)
        self.completion += sum(g.usage.completion_tokens for g in gens)
        return gens


class BackendStepScorer:
    """A step verifier that asks its backend (so its calls are metered as "verifier")."""

    def __init__(self, backend):
        self.backend = backend

    async def score(self, problem, candidates):
        from ponder.types import Score, user
        gens = await asyncio.gather(*(self.backend.generate(user(f"Rate: {c}"), SamplingParams(max_tokens=4))
                                      for c in candidates))
        return [Score(float(g[0].text.split()[-1])) for g in gens]


def test_ledger_totals_equal_the_sum_of_backend_usage_for_a_beam_search():
    def script(call, i):
        if call.last_user.startswith("Rate:"):
            return f"score {0.9 if '5' in call.last_user else 0.3}"
        return "The answer is 5" if "step" in call.prefix else f"step {i}\n\n"
    VERIFIERS.register("test_backend_scorer", BackendStepScorer)
    backend = RecordingBackend(script)
    result, ledger = solve(BeamSearch(beam_width=2, expansions=2, verifier="test_backend_scorer"), backend)
    assert result.answer == "5"
    assert ledger.total.prompt_tokens == backend.prompt
    assert ledger.total.completion_tokens == backend.completion
    assert ledger.total.calls == len(backend.calls)
    by_role = ledger.usage_by_role
    assert by_role["verifier"].calls == 8 and by_role["policy"].calls == 4


def test_beam_search_at_budget_keeps_k_candidates_per_step():
    assert (BeamSearch(expansions=4).at_budget(16).beam_width, BeamSearch(expansions=4).at_budget(16).expansions) \
        == (4, 4)
    assert BeamSearch(expansions=4).at_budget(1).beam_width == 1
    with pytest.raises(InvalidParameter, match="aggregate"):
        BeamSearch(aggregate="mean")
    assert BeamSearch(step_delimiter="\\n").step_delimiter == "\n"  # as typed on a command line


# -- tournament -----------------------------------------------------------------------------------------------

class BiasedJudge:
    """Prefers the better response, but leans to whichever comes first: one order alone gets it wrong."""

    def __init__(self, quality):
        self.quality, self.calls = quality, []

    async def compare(self, problem, a, b):
        self.calls.append((a, b))
        return 0.9 if self.quality[a] > self.quality[b] else 0.6


def test_tournament_judges_both_orders_and_picks_the_better_response_from_any_position():
    responses = ["draft zero", "draft one", "draft two", "the best draft"]
    judge = BiasedJudge({r: q for r, q in zip(responses, [2, 1, 3, 9], strict=True)})
    backend = ScriptedBackend(lambda call, i: responses[i])
    result, _ = solve(Tournament(n=4, judge=judge), backend, problem=OPEN)
    assert len(backend.calls) == 1 and backend.calls[0].params.n == 4
    assert len(judge.calls) == 6  # 3 matches, each judged in both orders
    assert {(b, a) for a, b in judge.calls} == set(judge.calls)
    assert result.text == "the best draft" and result.answer == "the best draft"
    assert [m["winner"] for m in result.trace] == [0, 3, 3]


def test_tournament_gives_a_bye_to_the_odd_one_out():
    responses = ["a", "b", "c"]
    judge = BiasedJudge({"a": 1, "b": 2, "c": 3})
    result, _ = solve(Tournament(n=3, judge=judge), ScriptedBackend(lambda call, i: responses[i]), problem=OPEN)
    assert len(judge.calls) == 4 and result.text == "c"
    assert any(m.get("bye") == 2 for m in result.trace)


class BackendJudge:
    """A judge built from the registry on the backend metered as "judge"."""

    def __init__(self, backend):
        self.backend = backend

    async def compare(self, problem, a, b):
        from ponder.types import user
        (gen,) = await self.backend.generate(user(f"A: {a}\nB: {b}"), SamplingParams(max_tokens=2))
        return float(gen.text)


def test_tournament_meters_the_judge_and_stops_at_the_budget_with_a_champion():
    def script(call, i):
        if call.last_user.startswith("A:"):
            return "1.0" if "long" in call.last_user.split("\n")[0] else "0.0"
        return ["short", "long one", "short", "short"][i]
    VERIFIERS.register("test_backend_judge", BackendJudge)
    result, ledger = solve(Tournament(n=4, judge="test_backend_judge"), ScriptedBackend(script), problem=OPEN)
    assert ledger.usage_by_role["judge"].calls == 6 and result.text == "long one"
    limited, _ = solve(Tournament(n=4, judge="test_backend_judge"), ScriptedBackend(script), problem=OPEN,
                       budget=Budget(calls=3))
    assert limited.budget_exhausted and limited.text in {"short", "long one"}
    assert any(m.get("undecided") for m in limited.trace)


# -- one real run each (slow) ---------------------------------------------------------------------------------

MODEL = Path.home() / ".cache/ponder/models/qwen2.5-coder-0.5b.gguf"


@pytest.fixture(scope="module")
def local_backend():
    llamacpp = pytest.importorskip("ponder.backends.llamacpp")
    if not MODEL.exists():
        pytest.skip(f"{MODEL} is not pulled")
    backend = llamacpp.LlamaCppBackend(MODEL, n_ctx=2048)
    yield backend
    backend.close()


@pytest.mark.slow
def test_budget_forcing_runs_on_the_local_model(local_backend):
    strategy = BudgetForcing(min_thinking_tokens=24, max_thinking_tokens=48, max_waits=1, answer_max_tokens=16)
    result, ledger = solve(strategy, local_backend)
    policy = ledger.usage_by_role["policy"]
    assert 0 < policy.thinking_tokens <= 48 < policy.completion_tokens + 48
    assert result.text.startswith("<think>") and THINK_CLOSE in result.text


@pytest.mark.slow
def test_beam_search_runs_on_the_local_model_and_reuses_the_parent_kv(local_backend):
    strategy = BeamSearch(beam_width=2, expansions=2, max_steps=2, max_step_tokens=48)  # default: self_eval
    result, ledger = solve(strategy, local_backend)
    assert ledger.usage_by_role["policy"].cached_tokens > 0
    assert ledger.usage_by_role["verifier"].calls > 0
    assert all(re.search(r"\S", c.text) for c in result.candidates)


@pytest.mark.slow
def test_tournament_runs_on_the_local_model(local_backend):
    pytest.importorskip("ponder.verifiers.judge")
    result, ledger = solve(Tournament(n=2, max_tokens=32), local_backend, problem=OPEN)
    assert result.text and ledger.usage_by_role["judge"].calls == 2
