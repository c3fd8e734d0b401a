"""`open_backend(spec)`: turn what a user typed into a Backend.

A spec is one of: "scripted" (the test double), an http(s):// URL of an OpenAI-compatible server (the model
name goes after "#", or in `model=`), a catalogue model name, or a path to a .gguf file (both run locally on
llama.cpp). Heavy modules are imported only for the kind asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ponder.backends.base import Backend
from ponder.extras import require


def _is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _open_scripted(spec: str, **opts: Any) -> Backend:
    from ponder.backends.scripted import ScriptedBackend

    # With no script, echo the last user message: enough to try the CLI or server without a model.
    script = opts.pop("script", lambda call, i: call.last_user)
    return ScriptedBackend(script, **opts)


def _open_http(spec: str, **opts: Any) -> Backend:
    from ponder.backends.openai import OpenAIBackend

    base_url, _, model = spec.partition("#")
    model = opts.pop("model", None) or model or "default"
    return OpenAIBackend(base_url=base_url, model=model, **opts)


def _open_local(spec: str, **opts: Any) -> Backend:
    require("llama_cpp", "local")
    from ponder.backends.llamacpp import LlamaCppBackend
    from ponder.models import CATALOGUE, resolve

    path = resolve(spec)
    opts.setdefault("name", spec if spec in CATALOGUE else None)
    if spec in CATALOGUE:
        opts.setdefault("sampler_defaults", CATALOGUE[spec].sampler)
    return LlamaCppBackend(path, **opts)


# Checked in order; the last one takes everything else.
_OPENERS: tuple[tuple[Callable[[str], bool], Callable[..., Backend]], ...] = (
    (lambda s: s == "scripted", _open_scripted),
    (_is_url, _open_http),
    (lambda s: True, _open_local),
)


LOCAL_ONLY = ("kv_cache_type", "trace")
"""Options only ponder's own engine has."""


def is_local(spec: str) -> bool:
    """Does `spec` name a model ponder runs itself (a catalogue name or a .gguf path)?"""
    spec = str(spec).strip()
    return spec != "scripted" and not _is_url(spec)


def open_backend(spec: str, **opts: Any) -> Backend:
    """The backend for `spec` ("scripted", "http(s)://host/v1#model", a catalogue name, or a .gguf path).

    `opts` go to the backend's constructor (n_ctx=..., n_threads=... for local models; max_concurrency=...
    for HTTP). Raises MissingExtra when llama-cpp-python is needed but absent, UnknownName for an unknown
    model name, ModelNotFound / CorruptModel for a bad path.
    """
    spec = str(spec).strip()
    given = [k for k in LOCAL_ONLY if opts.get(k) not in (None, False, "f16")]
    if given and not is_local(spec):
        from ponder.errors import InvalidParameter

        value = opts[given[0]]
        raise InvalidParameter(given[0], getattr(value, "value", value), "it applies to a local model (a catalogue "
                               f"name or a .gguf path), not {spec!r}")
    if not is_local(spec):  # their defaults ask for nothing another backend lacks
        opts = {k: v for k, v in opts.items() if k not in LOCAL_ONLY}
    for matches, opener in _OPENERS:
        if matches(spec):
            return opener(spec, **opts)
    raise AssertionError("unreachable: the last opener takes every spec")
