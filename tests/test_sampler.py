"""The sampler: vLLM/OpenAI names validated, model defaults filled in where a request sets none, the same fields
sent over HTTP, and a sweep that records the whole chain."""

import pytest

from ponder.backends.openai_wire import sampling_fields
from ponder.backends.overrides import Overrides, WithOverrides
from ponder.errors import InvalidParameter
from ponder.models.catalogue import CATALOGUE
from ponder.types import SamplerDefaults, SamplingParams


@pytest.mark.parametrize(("field", "value"), [
    ("top_k", -2), ("top_k", 2.5), ("top_k", "many"), ("min_p", 1.5), ("min_p", -0.1), ("top_p", 0.0),
    ("repetition_penalty", 0.0), ("repetition_penalty", float("nan")), ("presence_penalty", 2.5),
    ("frequency_penalty", -3), ("temperature", True),
])
def test_out_of_range_sampler_fields_name_themselves(field, value):
    with pytest.raises(InvalidParameter, match=field):
        SamplingParams(**{field: value})


def test_unset_fields_take_the_models_defaults_and_set_ones_win():
    qwen = CATALOGUE["qwen2.5-coder-1.5b"].sampler
    assert (qwen.top_p, qwen.top_k, qwen.repetition_penalty) == (0.8, 20, 1.05)
    p = SamplingParams(top_k=5).resolved(qwen)
    assert (p.top_k, p.top_p, p.min_p, p.repetition_penalty) == (5, 0.8, 0.0, 1.05)
    neutral = SamplingParams().resolved()
    assert neutral.sampler() == {"temperature": 0.8, **SamplerDefaults().to_dict()}


def test_http_sends_only_the_fields_that_are_set():
    body = sampling_fields(SamplingParams(top_k=20, min_p=0.05, repetition_penalty=1.1), chat=True)
    assert body["top_k"] == 20 and body["min_p"] == 0.05 and body["repetition_penalty"] == 1.1
    assert "top_p" not in body and "presence_penalty" not in body  # the server's own defaults apply


def test_overrides_apply_to_every_call():
    calls = []

    class Inner:
        model = "m"

        async def generate(self, messages, params, prefix=""):
            calls.append(params)
            return []

    import asyncio

    wrapped = WithOverrides(Inner(), Overrides.of({"top_k": 1, "stop": ("END",), "unknown": 3}))
    asyncio.run(wrapped.generate((), SamplingParams(stop=("x",))))
    assert calls[0].top_k == 1 and calls[0].stop == ("x", "END")
    with pytest.raises(InvalidParameter, match="min_p"):
        Overrides(min_p=2.0)


def test_a_sweep_records_the_whole_chain(tmp_path):
    from ponder.backends.scripted import ScriptedBackend
    from ponder.experiments.sweep import SweepConfig, settings

    class Local(ScriptedBackend):
        sampler_defaults = CATALOGUE["qwen2.5-coder-1.5b"].sampler

    config = SweepConfig("gsm8k", "scripted", ("self_consistency",), (1, 2), sampler={"top_k": 0})
    chain = settings(config, Local(lambda c, i: "4"), "math")["sampling"]
    assert chain == {"max_tokens": 512, "temperature": 0.7, "top_p": 0.8, "top_k": 0, "min_p": 0.0,
                     "repetition_penalty": 1.05, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    with pytest.raises(InvalidParameter, match="sampler"):
        SweepConfig("gsm8k", "scripted", ("self_consistency",), (1,), sampler={"top_q": 3})
