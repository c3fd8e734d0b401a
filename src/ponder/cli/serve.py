"""`ponder serve`: run the OpenAI-compatible server (ponder.server) on a local model or in front of another server.

    ponder serve --model qwen2.5-coder-1.5b              a catalogue model or a .gguf path, run on llama.cpp
    ponder serve --upstream http://host:8000/v1 --upstream-model NAME   proxy any OpenAI-compatible server
    ponder serve --model qwen2.5-coder-0.5b --ray --replicas 2     K replicas on Ray actors, least-loaded first

The backend comes from ponder.backends.factory.open_backend, as in `ponder ask`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ponder.cli import app
from ponder.compute import KVCacheType
from ponder.errors import InvalidParameter, PonderError

err_console = Console(stderr=True)
_EFFORT = re.compile(r"^(?P<level>[a-z]+)=(?P<strategy>[a-z][a-z0-9_]*?)(?:-(?P<k>\d+))?$")


def parse_efforts(items: list[str], defaults: Any = None) -> dict[str, Any]:
    """`LEVEL=STRATEGY[-K]` items -> Effort overrides on top of `defaults` (the math/code table by default)."""
    from ponder.server.config import DEFAULT_EFFORTS, Effort

    efforts = dict(DEFAULT_EFFORTS if defaults is None else defaults)
    for item in items:
        m = _EFFORT.match(item.strip())
        if m is None:
            raise InvalidParameter("--effort", item,
                                   "use LEVEL=STRATEGY or LEVEL=STRATEGY-K, e.g. high=self_consistency-8")
        efforts[m["level"]] = Effort(m["strategy"], {}, int(m["k"]) if m["k"] else None)
    return efforts


def open_server_backend(model: str, upstream: str | None, upstream_model: str | None, upstream_key_env: str,
                        threads: int | None, n_ctx: int | None, ray: Any = None, kv_cache_type: Any = None) -> Any:
    """The backend to serve: the upstream server if given, else the local model; on Ray replicas if `ray`."""
    from ponder.backends.factory import open_backend

    if kv_cache_type is not None and (upstream or ray is not None):
        raise InvalidParameter("kv-cache-type", kv_cache_type.value, "it applies to the local engine served in this "
                               "process: drop it with --upstream or --ray")
    if ray is not None:  # K actors, each opening its own replica of the same spec
        from ponder.distributed.launch import open_ray_backend

        if upstream:
            return open_ray_backend(upstream, ray, model=upstream_model or model, api_key_env=upstream_key_env)
        return open_ray_backend(model, ray, threads, n_ctx=n_ctx)
    if upstream:
        return open_backend(upstream, model=upstream_model or model, api_key_env=upstream_key_env)
    options = {k: v for k, v in (("n_threads", threads), ("n_ctx", n_ctx), ("kv_cache_type", kv_cache_type))
               if v is not None}
    return open_backend(model, **options)


@app.command()
def serve(
    model: str = typer.Option("qwen2.5-coder-1.5b", "--model", "-m", help="A catalogue model name or a GGUF path."),
    upstream: str | None = typer.Option(None, "--upstream", help="Proxy this OpenAI-compatible server (…/v1)."),
    upstream_model: str | None = typer.Option(None, "--upstream-model", help="The model to ask the upstream for."),
    upstream_key_env: str = typer.Option("OPENAI_API_KEY", "--upstream-key-env",
                                         help="Environment variable with the upstream's API key."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    api_key_env: str | None = typer.Option(None, "--api-key-env",
                                           help="Require 'Authorization: Bearer $VAR' from clients."),
    pass_through_key: bool = typer.Option(False, "--pass-through-key",
                                          help="Send each client's bearer key on to the upstream; a client "
                                          "that sends none gets 401."),
    pass_through_fallback: bool = typer.Option(False, "--pass-through-fallback", help="With --pass-through-key: "
                                               "serve keyless clients with the upstream key of --upstream-key-env."),
    max_concurrency: int = typer.Option(64, "--max-concurrency", help="Requests in flight; more get 429."),
    max_n: int = typer.Option(16, "--max-n", help="Most choices (n) per request."),
    max_samples: int = typer.Option(64, "--max-samples", help="Ceiling of every count a request sets (n, n_max, "
                                    "beam_width, expansions, rounds, K)."),
    max_request_tokens: int = typer.Option(65536, "--max-request-tokens", help="Generated tokens one request may "
                                           "spend in all; also the ceiling of any *_tokens field."),
    max_sandbox_seconds: float = typer.Option(10.0, "--max-sandbox-seconds", help="Ceiling of a program's sandbox "
                                              "time (timeout_s)."),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", help="Larger bodies get 413."),
    effort: list[str] = typer.Option([], "--effort", help="reasoning_effort mapping, LEVEL=STRATEGY[-K]."),
    strict_model: bool = typer.Option(False, "--strict-model", help="404 for a model name this server lacks."),
    policy: Path | None = typer.Option(None, "--policy", help="A compute-optimal policy.json from `ponder report`: "
                                       "applied per request for reasoning_effort \"auto\"."),
    verifier: list[str] = typer.Option([], "--verifier", help="Load a verifier with a file: learned:scorer.json "
                                       "(`ponder verifier train`) or step_value:steps.json (--level step); clients "
                                       "ask for it by name (\"learned\", \"step_value\")."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for a local model."),
    n_ctx: int | None = typer.Option(None, "--n-ctx", help="Context window for a local model."),
    kv_cache_type: KVCacheType | None = typer.Option(None, "--kv-cache-type", help="A local model's KV cache: f16 "
                                                     "(default), q8_0 or q4_0."),
    ray: bool = typer.Option(False, "--ray", help="Serve through --replicas Ray actors, each with its own backend "
                             "(a local Ray instance unless --ray-address is given)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Join this Ray cluster; implies --ray."),
    replicas: int = typer.Option(2, "--replicas", help="With --ray: backend replicas; requests go to the least "
                                 "loaded (--threads threads each for a local model)."),
) -> None:
    """Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics) with
    test-time compute chosen by reasoning_effort, a STRATEGY[-K]:MODEL name, or a `ponder` body field."""
    try:
        import uvicorn

        from ponder.server import ServerConfig, create_app
    except ImportError:
        err_console.print("[bold red]error:[/] the server needs its extra: pip install 'ponder[server]'")
        raise typer.Exit(1) from None
    backend = None
    try:
        if not 0 < port < 65536:
            raise InvalidParameter("port", port, "use a TCP port from 1 to 65535")
        from ponder.server.config import DEFAULT_OPEN_EFFORTS

        efforts = parse_efforts(effort)
        open_efforts = parse_efforts(effort, DEFAULT_OPEN_EFFORTS)  # the operator's levels apply to every prompt
        if policy is not None:
            efforts = {**efforts, "auto": policy_effort(policy, model if upstream is None else upstream_model)}
        if pass_through_fallback and not pass_through_key:
            raise InvalidParameter("pass-through-fallback", True, "it only applies with --pass-through-key")
        config = ServerConfig(api_key_env=api_key_env, pass_through_key=pass_through_key,
                              pass_through_fallback=pass_through_fallback,
                              max_concurrency=max_concurrency, max_n=max_n,
                              max_body_bytes=max_body_bytes, efforts=efforts, open_efforts=open_efforts,
                              strict_model=strict_model,
                              max_samples=max_samples, max_request_tokens=max_request_tokens,
                              max_sandbox_seconds=max_sandbox_seconds)
        ray_options = None
        if ray or ray_address:
            from ponder.distributed.launch import RayOptions

            if replicas < 1:
                raise InvalidParameter("replicas", replicas, "use a whole number >= 1")
            ray_options = RayOptions(address=ray_address, replicas=replicas)
        backend = open_server_backend(model, upstream, upstream_model, upstream_key_env, threads, n_ctx, ray_options,
                                      kv_cache_type)
        config = dataclasses.replace(config, verifiers=operator_verifiers(verifier, backend))
        api = create_app(backend, config=config)
        uvicorn.run(api, host=host, port=port, log_level="info")
    except PonderError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2 if isinstance(exc, InvalidParameter) else 1) from None
    finally:
        _close(backend)


def operator_verifiers(specs: list[str], backend: Any) -> dict[str, str]:
    """NAME:FILE specs by NAME, each checked now (the file loads, and was made for this model), not per request."""
    from ponder.registry import VERIFIERS
    from ponder.verifiers.base import build_verifier

    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition(":")
        if not sep or not path or name not in VERIFIERS:
            raise InvalidParameter("verifier", spec, "use NAME:FILE, e.g. learned:scorer.json or "
                                   "step_value:steps.json")
        resolved = f"{name}:{Path(path).expanduser().resolve()}"
        build_verifier(resolved, backend)  # loads the file and checks it against this model, once, at start
        out[name] = resolved
    return out


def policy_effort(path: Path, model: str | None) -> Any:
    """reasoning_effort "auto": the compute_optimal strategy on this policy file, refused for another model."""
    from ponder.server.config import Effort
    from ponder.strategies.compute_optimal import load_policy

    doc = load_policy(path)
    if model and doc.get("model") and doc["model"] != model and Path(model).stem != doc["model"]:
        raise InvalidParameter("policy", str(path), f"it was learned on {doc['model']!r}, and this server serves "
                               f"{model!r}: learn one on this model with ponder sweep + ponder report")
    return Effort("compute_optimal", {"policy": str(path)})


def _close(backend: Any) -> None:
    close = getattr(backend, "close", None)
    if callable(close) and not inspect.iscoroutinefunction(close):
        with contextlib.suppress(Exception):
            close()
