"""open_backend: specs to backends, and the errors a bad spec gets."""

import asyncio
import sys
from pathlib import Path

import pytest

from ponder.backends.factory import open_backend
from ponder.backends.scripted import ScriptedBackend
from ponder.errors import CorruptModel, MissingExtra, ModelNotFound, UnknownName
from ponder.types import SamplingParams, user

TINY = Path("~/.cache/ponder/models/smollm2-135m.gguf").expanduser()


def test_scripted_echoes_by_default_and_takes_a_script():
    echo = open_backend("scripted")
    assert isinstance(echo, ScriptedBackend)
    gens = asyncio.run(echo.generate(user("two plus two"), SamplingParams(n=2)))
    assert [g.text for g in gens] == ["two plus two"] * 2
    fixed = open_backend("scripted", script=["4"], model="fake")
    assert fixed.model == "fake"
    assert asyncio.run(fixed.generate(user("q"), SamplingParams()))[0].text == "4"


def test_url_opens_the_http_backend_with_the_model_after_the_hash():
    from ponder.backends.openai import OpenAIBackend

    b = open_backend("http://localhost:8000/v1#qwen-small")
    assert isinstance(b, OpenAIBackend)
    assert b.base_url == "http://localhost:8000/v1" and b.model == "qwen-small"
    b2 = open_backend("https://api.example.com/v1", model="gpt-x", max_concurrency=2)
    assert b2.model == "gpt-x" and b2.base_url == "https://api.example.com/v1"


def test_missing_llama_cpp_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(MissingExtra, match=r"ponder\[local\]"):
        open_backend(str(TINY))


def test_bad_local_specs_get_clear_errors(tmp_path):
    pytest.importorskip("llama_cpp")
    with pytest.raises(UnknownName, match="valid models"):
        open_backend("no-such-model")
    with pytest.raises(ModelNotFound):
        open_backend(str(tmp_path / "missing.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(CorruptModel):
        open_backend(str(junk))


@pytest.mark.slow
def test_a_gguf_path_opens_the_local_engine():
    pytest.importorskip("llama_cpp")
    if not TINY.is_file():
        pytest.skip("tiny model not pulled")
    from ponder.backends.llamacpp import LlamaCppBackend

    b = open_backend(str(TINY), n_ctx=512, n_seq_max=2)
    try:
        assert isinstance(b, LlamaCppBackend)
        assert b.model == "smollm2-135m" and b.n_ctx == 512
        assert b.info.n_params > 100_000_000 and b.info.n_layers > 0
    finally:
        b.close()
