"""The local llama.cpp engine: pure helpers (fast) and the engine itself on the tiny model (slow)."""

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from ponder.backends.decoding import TextAssembler, check_fits, common_prefix_len, held_back, token_logprob
from ponder.errors import ContextOverflow, CorruptModel, InvalidParameter, ModelNotFound
from ponder.types import Message, SamplingParams, user

TINY = Path("~/.cache/ponder/models/smollm2-135m.gguf").expanduser()


def run(coro):
    return asyncio.run(coro)


# ---- fast: text assembly and stop strings ---------------------------------------------------------------------
def test_stop_string_spanning_token_boundaries_is_cut():
    t = TextAssembler(stop=("\n\nQuestion",))
    assert not t.feed(b"The answer is 4.\n")
    assert not t.feed(b"\nQue")
    assert t.feed(b"stion 2: more")
    assert t.finish() == "The answer is 4."
    assert t.stopped


def test_earliest_of_several_stop_strings_wins():
    t = TextAssembler(stop=("END", "##"))
    t.feed(b"abc ## def END")
    assert t.finish() == "abc "


def test_utf8_character_split_across_tokens():
    euro = "€".encode()  # three bytes
    t = TextAssembler()
    t.feed(b"price " + euro[:1])
    assert t.pop_delta() == "price "  # the half character is held back
    t.feed(euro[1:] + b"5")
    assert t.pop_delta() == "€5"
    assert t.finish() == "price €5"


def test_unfinished_utf8_at_the_end_becomes_a_replacement_char():
    t = TextAssembler()
    t.feed(b"ok " + "€".encode()[:2])
    assert t.finish() == "ok \ufffd"


def test_stream_deltas_hold_back_a_possible_stop_prefix_and_never_emit_the_stop():
    t = TextAssembler(stop=("</answer>",))
    out = []
    for piece in [b"42 </", b"ans", b"wer> tail"]:
        t.feed(piece)
        out.append(t.pop_delta())
    out.append(t.pop_delta(final=True))
    assert out[0] == "42 "
    assert "".join(out) == "42 "


def test_stream_deltas_release_a_false_alarm():
    t = TextAssembler(stop=("</answer>",))
    t.feed(b"a </b")
    assert t.pop_delta() == "a </b"  # "</b" is not a prefix of the stop string
    t.feed(b"x </an")
    assert t.pop_delta() == "x "
    t.feed(b"d")
    assert t.pop_delta() == "</and"
    assert t.finish() == "a </bx </and"


def test_held_back_and_common_prefix():
    assert held_back("abc </an", ("</answer>",)) == 4
    assert held_back("abc", ("</answer>",)) == 0
    assert held_back("x<", ("<a", "<<b")) == 1
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix_len([], [1]) == 0


def test_check_fits_names_the_sizes_and_the_fix():
    check_fits(100, 400, n_ctx_seq=512, n_ctx=512)  # fits exactly
    with pytest.raises(ContextOverflow) as err:
        check_fits(100, 413, n_ctx_seq=512, n_ctx=512)
    msg = str(err.value)
    assert "513" in msg and "512" in msg and "max_tokens" in msg and "n_ctx" in msg


def test_token_logprob_is_log_softmax_with_sorted_alternatives():
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    tl = token_logprob(logits, 2, 2, lambda i: f"t{i}")
    lse = math.log(sum(math.exp(x) for x in logits))
    assert tl.token == "t2"
    assert tl.logprob == pytest.approx(2.0 - lse, abs=1e-6)
    assert list(tl.top) == ["t1", "t2"]
    assert tl.top["t1"] == pytest.approx(3.0 - lse, abs=1e-6)


# ---- errors that need llama.cpp but no real model ----------------------------------------------------------------
def test_corrupt_gguf_raises_corrupt_model(tmp_path):
    pytest.importorskip("llama_cpp")
    from ponder.backends.llamacpp import LlamaCppBackend

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(CorruptModel, match="not a loadable GGUF"):
        LlamaCppBackend(bad)


def test_missing_model_file_and_bad_settings():
    pytest.importorskip("llama_cpp")
    from ponder.backends.llamacpp import LlamaCppBackend

    with pytest.raises(ModelNotFound):
        LlamaCppBackend("/nonexistent/model.gguf")
    with pytest.raises(InvalidParameter, match="n_seq_max"):
        LlamaCppBackend(TINY, n_seq_max=1)


def test_a_q4_0_kv_cache_warns_with_the_measured_collapse():
    import json
    import warnings

    pytest.importorskip("llama_cpp")
    from ponder.backends.llamacpp import Q4_0_KEYS_WARNING, KVCacheWarning, LlamaCppBackend

    with pytest.warns(KVCacheWarning, match="q4_0 KV cache"), pytest.raises(ModelNotFound):
        LlamaCppBackend("/nonexistent/model.gguf", kv_cache_type="q4_0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelNotFound):
            LlamaCppBackend("/nonexistent/model.gguf", kv_cache_type="q8_0")
    # The figures the warning quotes are the committed ones.
    profile = json.loads((Path(__file__).parents[1] / "benchmarks/results/profile.json").read_text())
    by_type = profile["models"]["qwen2.5-coder-1.5b"]["kv_cache_accuracy"]["by_type"]
    assert f"from {by_type['f16']['accuracy']:.0%} (f16) to {by_type['q4_0']['accuracy']:.0%}" in Q4_0_KEYS_WARNING


# ---- slow: the engine on the tiny model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("llama_cpp")
    if not TINY.is_file():
        pytest.skip(f"tiny model not pulled: {TINY}")
    from ponder.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(TINY, n_ctx=1024, n_seq_max=8, n_threads=2)
    yield b
    b.close()


def _prompt_len(engine, messages, prefix=""):
    return len(engine.tokenize(engine.render(messages, prefix)))


@pytest.mark.slow
def test_n_samples_share_one_prefill(engine):
    engine.clear_cache()
    msgs = user("Name a colour.")
    before = engine.stats["prefilled_tokens"]
    gens = run(engine.generate(msgs, SamplingParams(max_tokens=8, n=4, seed=3, temperature=1.0)))
    p = _prompt_len(engine, msgs)
    assert len(gens) == 4
    assert engine.stats["prefilled_tokens"] - before == p - 1  # once, not four times
    assert gens[0].usage.cached_tokens == 0 and gens[0].usage.prompt_tokens == p
    assert all(g.usage.prompt_tokens == g.usage.cached_tokens == 0 for g in gens[1:])  # the prompt is charged once
    assert all(0 < g.completion_tokens <= 8 for g in gens)


@pytest.mark.slow
def test_seeds_are_reproducible_and_samples_differ(engine):
    params = SamplingParams(max_tokens=12, n=4, seed=11, temperature=1.5)
    msgs = user("Write a short poem.")
    engine.clear_cache()
    a = run(engine.generate(msgs, params))
    engine.clear_cache()  # same KV layout: outputs are bit-identical
    b = run(engine.generate(msgs, params))
    assert [g.text for g in a] == [g.text for g in b]
    assert len({g.text for g in a}) > 1


@pytest.mark.slow
def test_concurrent_requests_complete_in_shared_steps(engine):
    async def go():
        return await asyncio.gather(*[
            engine.generate(user(f"Say the number {i}."), SamplingParams(max_tokens=10, n=1 + i % 2, seed=i))
            for i in range(5)
        ])

    steps0, dec0 = engine.stats["steps"], engine.stats["decoded_tokens"]
    results = run(go())
    assert [len(r) for r in results] == [1, 2, 1, 2, 1]
    decoded = engine.stats["decoded_tokens"] - dec0
    assert decoded == sum(g.completion_tokens for r in results for g in r)
    assert engine.stats["steps"] - steps0 < decoded / 2  # batched: many tokens per llama_decode


@pytest.mark.slow
def test_oversized_request_fails_clearly_while_another_completes(engine):
    async def go():
        ok = asyncio.create_task(engine.generate(user("Hi"), SamplingParams(max_tokens=6, temperature=0)))
        with pytest.raises(ContextOverflow, match="n_ctx"):
            await engine.generate(user("word " * 1500), SamplingParams(max_tokens=8))
        with pytest.raises(ContextOverflow, match="max_tokens"):
            await engine.generate(user("Hi"), SamplingParams(max_tokens=2000))
        return await ok

    gens = run(go())
    assert gens[0].completion_tokens > 0


@pytest.mark.slow
def test_cancellation_frees_sequences(engine):
    sched = engine._scheduler

    async def go():
        task = asyncio.create_task(engine.generate(user("Tell a long story."), SamplingParams(max_tokens=400, n=4)))
        while engine.stats["decoded_tokens"] == dec0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await engine.generate(user("Hi"), SamplingParams(max_tokens=4, temperature=0))

    dec0 = engine.stats["decoded_tokens"]
    after = run(go())
    assert after[0].completion_tokens > 0
    assert engine.stats["decoded_tokens"] - dec0 < 4 * 400  # it did not run to the end
    assert not sched.jobs and not sched.waiting
    assert len(sched.free_slots) == sched.n_seq_max  # no slot or cell held: cached prefixes wait in host memory


@pytest.mark.slow
def test_prefix_continuation_reuses_the_parents_kv(engine):
    engine.clear_cache()
    msgs = user("List three fruits.")
    greedy = SamplingParams(max_tokens=8, temperature=0)
    parent = run(engine.generate(msgs, greedy))[0]
    child = run(engine.generate(msgs, greedy, prefix=parent.text))[0]
    p_parent = _prompt_len(engine, msgs)
    assert child.usage.prompt_tokens == _prompt_len(engine, msgs, parent.text)
    assert child.usage.cached_tokens >= p_parent  # the parent's prompt and (most of) its text came from cache
    assert not child.text.startswith(parent.text) or parent.text == ""


@pytest.mark.slow
def test_stop_strings_streaming_and_logprobs(engine):
    msgs = user("Count from 1 to 20, separated by commas.")
    greedy = SamplingParams(max_tokens=16, temperature=0, logprobs=True, top_logprobs=3)
    engine.clear_cache()
    full = run(engine.generate(msgs, greedy))[0]
    assert len(full.logprobs) == full.completion_tokens
    for tl in full.logprobs:
        assert tl.logprob <= 0 and tl.logprob == pytest.approx(max(tl.top.values()), abs=1e-4)

    async def collect():
        return [d async for d in engine.stream(msgs, greedy.with_(logprobs=False))]

    engine.clear_cache()
    deltas = run(collect())
    assert "".join(deltas) == full.text and len(deltas) > 1

    stop = full.text[len(full.text) // 2:][:2]
    cut = run(engine.generate(msgs, greedy.with_(stop=(stop,))))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]


@pytest.mark.slow
def test_stream_rejects_n_above_one(engine):
    async def go():
        async for _ in engine.stream([Message("user", "x")], SamplingParams(n=2)):
            pass

    with pytest.raises(InvalidParameter, match="n=1"):
        run(go())


@pytest.mark.slow
def test_more_samples_than_slots_run_in_waves(engine):
    sched = engine._scheduler
    gens = run(engine.generate(user("Pick a number."), SamplingParams(max_tokens=3, n=sched.n_seq_max + 2, seed=5)))
    assert len(gens) == sched.n_seq_max + 2
    assert all(0 < g.completion_tokens <= 3 for g in gens)
    assert len(sched.free_slots) == sched.n_seq_max  # no slot or cell held: cached prefixes wait in host memory


@pytest.mark.slow
def test_top_k_one_is_greedy_and_penalties_change_the_text(engine):
    msgs = user("Count: one, two, three,")
    engine.clear_cache()
    greedy = run(engine.generate(msgs, SamplingParams(max_tokens=16, temperature=0)))[0].text
    engine.clear_cache()
    top1 = run(engine.generate(msgs, SamplingParams(max_tokens=16, temperature=1.5, top_k=1, seed=3)))[0].text
    assert top1 == greedy  # only the likeliest token survives the top-k stage, whatever the temperature
    engine.clear_cache()
    penalised = run(engine.generate(msgs, SamplingParams(max_tokens=16, temperature=0, repetition_penalty=2.0,
                                                         frequency_penalty=2.0)))[0].text
    assert penalised != greedy


@pytest.mark.slow
def test_sixty_four_concurrent_requests_with_shared_prefixes_and_evictions_all_complete(engine):
    # Shared system prompts, mixed n and lengths on a small context: admissions evict cached prefixes while
    # other roots are still prefilling (this once handed a "busy" marker to llama_memory_seq_cp).
    system = "You are a terse assistant. " * 12

    async def go():
        return await asyncio.gather(*[
            engine.generate((Message("system", system[: 40 + 25 * (i % 7)]), Message("user", f"Say {i}.")),
                            SamplingParams(max_tokens=4 + i % 5, n=1 + i % 3, seed=i))
            for i in range(64)
        ])

    results = run(go())
    assert [len(r) for r in results] == [1 + i % 3 for i in range(64)]
    assert all(0 < g.completion_tokens <= 4 + i % 5 for i, r in enumerate(results) for g in r)
    sched = engine._scheduler
    assert not sched.jobs and not sched.waiting
    assert len(sched.free_slots) == sched.n_seq_max  # no slot or cell held: cached prefixes wait in host memory


@pytest.mark.slow
def test_cached_prefixes_wait_in_host_memory_not_in_kv_cells(engine):
    # In the unified KV cache a parked prefix would lengthen every later step's attention; in host memory it costs
    # nothing until a request shares it, and then it is copied back instead of prefilled.
    import llama_cpp as L

    sched = engine._scheduler
    engine.clear_cache()
    msgs = user("Name a colour.")
    run(engine.generate(msgs, SamplingParams(max_tokens=6, n=3, seed=1)))
    assert len(sched.cache) >= 1 and sched.cache.state_bytes > 0
    assert all(L.llama_memory_seq_pos_max(sched.mem, seq) == -1 for seq in range(sched.n_seq_max))
    prefilled, hits = engine.stats["prefilled_tokens"], engine.stats["cache_hits"]
    copying = engine.stats["cache_copy_seconds"]
    assert copying > 0  # the saves were timed
    again = run(engine.generate(msgs, SamplingParams(max_tokens=6, seed=2)))[0]
    assert engine.stats["prefilled_tokens"] == prefilled and engine.stats["cache_hits"] == hits + 1
    assert engine.stats["cache_copy_seconds"] > copying  # and the restore
    assert again.usage.cached_tokens == _prompt_len(engine, msgs) - 1 and again.completion_tokens > 0
    assert all(L.llama_memory_seq_pos_max(sched.mem, seq) == -1 for seq in range(sched.n_seq_max))
