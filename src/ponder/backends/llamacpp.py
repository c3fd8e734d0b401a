"""The local engine: a GGUF model served by llama.cpp's low-level API, with continuous batching.

This module owns loading (clear errors for missing or corrupt files), the model's shapes (ModelInfo), the chat
template and tokenization, and the asyncio face (`generate`, `stream`, cancellation). The batching, prefix
cache and sampling live in scheduler.py, which runs on its own thread and owns the llama_context. llama.cpp's log
lines go to the `ponder.llamacpp` logger (llamalog.py), not to the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from ponder.backends.decoding import check_fits
from ponder.backends.ggml_env import use_tiled_matmul
from ponder.compute import KVCacheType
from ponder.errors import BackendError, CorruptModel, InvalidParameter, ModelNotFound
from ponder.extras import require
from ponder.types import Generation, Message, ModelInfo, SamplerDefaults, SamplingParams

_END = object()


class KVCacheWarning(UserWarning):
    """A KV cache type that is known to break some models' answers."""


Q4_0_KEYS_WARNING = (
    "a q4_0 KV cache rounds every key to 4 bits, and models whose keys carry large outliers (Qwen2.5 among them) "
    "break under it: on the default qwen2.5-coder-1.5b greedy GSM8K accuracy fell from 56% (f16) to 0% "
    "(benchmarks/results/profile.json, kv_cache_accuracy). Check your model with `benchmarks/profile.py "
    "--kv-accuracy --models NAME`, or use q8_0, which kept the accuracy there.")


class _AsyncSink:
    """Hands a job's results to an asyncio loop from the scheduler thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: asyncio.Queue[Any] | None = None) -> None:
        self.loop, self.stream = loop, stream
        self.future: asyncio.Future[list[Generation]] = loop.create_future()

    def _call(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody is waiting
            self.loop.call_soon_threadsafe(fn, *args)

    def _resolve(self, value: Any, error: BaseException | None) -> None:
        if not self.future.done():
            if error is None:
                self.future.set_result(value)
            else:
                self.future.set_exception(error)
        if self.stream is not None:
            self.stream.put_nowait(error if error is not None else _END)

    def delta(self, text: str) -> None:
        if self.stream is not None:
            self._call(self.stream.put_nowait, text)

    def done(self, generations: list[Generation]) -> None:
        self._call(self._resolve, generations, None)

    def fail(self, error: BaseException) -> None:
        self._call(self._resolve, None, error)


class LlamaCppBackend:
    """A GGUF model on this machine. Many concurrent requests share one batched llama.cpp context."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 8192,
        n_threads: int = 2,
        n_seq_max: int = 16,
        n_batch: int = 512,
        cache_entries: int = 8,
        name: str | None = None,
        verbose: bool = False,
        sampler_defaults: SamplerDefaults | None = None,
        deterministic: bool = False,
        kv_cache_type: KVCacheType | str = KVCacheType.F16,
        trace: bool = False,
        tiled_matmul: bool = False,
    ) -> None:
        L = require("llama_cpp", "local")
        from ponder.backends.scheduler import Scheduler
        from ponder.backends.steptrace import StepLog

        try:
            kv = KVCacheType(kv_cache_type)
        except ValueError:
            raise InvalidParameter("kv_cache_type", kv_cache_type,
                                   f"use one of {', '.join(t.value for t in KVCacheType)}") from None
        if deterministic and kv != KVCacheType.F16:  # llama.cpp quantises V only with flash attention, which
            raise InvalidParameter("kv_cache_type", kv.value, "deterministic mode turns flash attention off, and "
                                   "llama.cpp needs it for a quantised KV cache: use f16, or drop --deterministic")
        if kv == KVCacheType.Q4_0:
            warnings.warn(Q4_0_KEYS_WARNING, KVCacheWarning, stacklevel=2)
        self.kv_cache_type = kv
        """How the KV cache stores its values; compute.py's KV bytes follow it (kv_cache_type.bytes_per_value)."""
        for pname, value in (("n_ctx", n_ctx), ("n_threads", n_threads), ("n_batch", n_batch)):
            if not isinstance(value, int) or value < 1:
                raise InvalidParameter(pname, value, "use a positive whole number")
        if not isinstance(n_seq_max, int) or not 2 <= n_seq_max <= L.llama_max_parallel_sequences():
            raise InvalidParameter("n_seq_max", n_seq_max, f"use 2 to {L.llama_max_parallel_sequences()}")
        self.path = Path(model_path).expanduser()
        self.model = name or self.path.name.removesuffix(".gguf")
        self.sampler_defaults = sampler_defaults or SamplerDefaults()
        """What a request's unset sampler fields become (the catalogue's recommendation for a named model)."""
        self.tiled_matmul = use_tiled_matmul(tiled_matmul)
        """Whether llama.cpp's tiled K-quant matmul runs in this process (ggml_env.py: off unless asked for or
        exported as GGML_CPU_TILED_MM; on this machine it slowed the 1.5B's decode, benchmarks/results/tiled.json)."""
        self._L = L
        self._model, self._ctx = self._load(L, n_ctx, n_threads, n_seq_max, n_batch, verbose, deterministic, kv)
        self._vocab = L.llama_model_get_vocab(self._model)
        self.info = self._read_info()
        self._formatter = self._chat_formatter()
        self.deterministic = deterministic
        """Each request decoded alone on an empty engine (no prefix cache, no flash attention): a request's samples
        are then the same bit for bit whatever else is in flight, in any process, at any thread count (deterministic
        sweeps); throughput drops."""
        self.steps = StepLog() if trace else None
        """Every engine step (steptrace.py) when opened with trace=True, for `ponder profile`; else None."""
        self._scheduler = Scheduler(self._model, self._ctx, n_seq_max=n_seq_max, n_batch=n_batch,
                                    cache_entries=cache_entries, exclusive=deterministic, trace=self.steps)
        self.n_ctx = L.llama_n_ctx(self._ctx)
        self.n_ctx_seq = L.llama_n_ctx_seq(self._ctx)

    # ---- loading --------------------------------------------------------------------------------------------
    def _load(self, L: Any, n_ctx: int, n_threads: int, n_seq_max: int, n_batch: int, verbose: bool,
              deterministic: bool, kv: KVCacheType) -> Any:
        if not self.path.is_file():
            raise ModelNotFound(f"no model file at {self.path}: check the path, or pull it with `ponder models pull`")
        from ponder.backends.llamalog import route_llama_logs, show_llama_logs

        route_llama_logs()
        if verbose:
            show_llama_logs()
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        model = L.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise CorruptModel(
                f"{self.path} is not a loadable GGUF model (truncated or corrupt?): delete it and pull it again"
            )
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # samples share their prompt's cells; every sequence may use all of n_ctx
        if deterministic:  # CPU flash attention's numbers changed with the thread count (1 vs 2); plain attention's not
            cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if kv != KVCacheType.F16:
            ggml = {KVCacheType.Q8_0: L.GGML_TYPE_Q8_0, KVCacheType.Q4_0: L.GGML_TYPE_Q4_0}[kv]
            cparams.type_k = cparams.type_v = ggml
            cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            L.llama_model_free(model)
            raise CorruptModel(f"llama.cpp could not create a context for {self.path} with n_ctx={n_ctx}: "
                               "lower n_ctx or n_seq_max")
        return model, ctx

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def _read_info(self) -> ModelInfo:
        L, m = self._L, self._model
        n_params = int(L.llama_model_n_params(m))
        n_embd, n_head = L.llama_model_n_embd(m), L.llama_model_n_head(m)
        arch = self._meta("general.architecture") or ""
        head_dim = int(self._meta(f"{arch}.attention.key_length") or (n_embd // max(n_head, 1)))
        return ModelInfo(
            name=self.model,
            n_params=n_params,
            n_layers=L.llama_model_n_layer(m),
            d_model=n_embd,
            n_heads=n_head,
            n_kv_heads=L.llama_model_n_head_kv(m),
            head_dim=head_dim,
            n_ctx_train=L.llama_model_n_ctx_train(m),
            bytes_per_param=self.path.stat().st_size / max(n_params, 1),
        )

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._L.llama_model_chat_template(self._model, None)
        if not template:
            return None
        self._bos = self._token_text(self._L.llama_vocab_bos(self._vocab))
        eos = self._token_text(self._L.llama_vocab_eos(self._vocab))
        return Jinja2ChatFormatter(template.decode("utf-8"), eos_token=eos, bos_token=self._bos)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (self._L.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8", errors="replace")

    # ---- prompts --------------------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], prefix: str = "") -> str:
        """The prompt text: the GGUF's chat template with a generation prompt, then the assistant prefix."""
        if self._formatter is None:  # no template: plain role-tagged text
            body = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant: "
        else:
            body = self._formatter(messages=[m.to_dict() for m in messages]).prompt
        return body + prefix

    def tokenize(self, text: str) -> list[int]:
        if self._ctx is None:
            raise BackendError(f"the engine for {self.model} is closed: open a new backend")
        data = text.encode("utf-8")
        add_special = not (self._formatter is not None and self._bos and text.startswith(self._bos))
        cap = len(data) + 16
        buf = (self._L.llama_token * cap)()
        n = self._L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, True)
        if n < 0:
            cap = -n
            buf = (self._L.llama_token * cap)()
            n = self._L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, True)
        return list(buf[:n])

    def _job(self, messages: Sequence[Message], params: SamplingParams, prefix: str, stream: bool) -> Any:
        from ponder.backends.scheduler import Job

        # Tokenized on the caller's loop, not in a thread: requests gathered together are then submitted in order
        # and admitted in the same step, so their batch shapes (and so their numbers) repeat from run to run.
        prompt = self.tokenize(self.render(messages, prefix))
        if not prompt:
            raise InvalidParameter("messages", messages, "give a non-empty prompt")
        check_fits(len(prompt), params.max_tokens, self.n_ctx_seq, self.n_ctx)
        params = params.resolved(self.sampler_defaults)
        sink = _AsyncSink(asyncio.get_running_loop(), asyncio.Queue() if stream else None)
        return Job(prompt, params, sink, stream=stream)

    # ---- the Backend protocol -------------------------------------------------------------------------------
    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, prefix: str = ""
    ) -> list[Generation]:
        """Return params.n generations; they share one prefill. Cancelling frees their sequences at once."""
        job = self._job(messages, params, prefix, stream=False)
        self._scheduler.submit(job)
        try:
            return await asyncio.shield(job.sink.future)
        except asyncio.CancelledError:
            self._scheduler.cancel(job)
            raise

    async def stream(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "") -> AsyncIterator[str]:
        """Text deltas of one generation (n=1), as they are decoded; stop strings are never emitted."""
        if params.n != 1:
            raise InvalidParameter("n", params.n, "stream one generation at a time: use n=1")
        job = self._job(messages, params, prefix, stream=True)
        self._scheduler.submit(job)
        try:
            while True:
                item = await job.sink.stream.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not job.sink.future.done():
                self._scheduler.cancel(job)

    async def stream_generate(self, messages: Sequence[Message], params: SamplingParams, prefix: str = "",
                              on_delta: Callable[[str], None] | None = None) -> list[Generation]:
        """`generate` for one generation (n=1) that also hands each decoded piece of text to `on_delta` as it comes.
        The Generation returned is exact (usage, finish_reason): the server streams thinking with it."""
        if params.n != 1:
            raise InvalidParameter("n", params.n, "stream one generation at a time: use n=1")
        job = self._job(messages, params, prefix, stream=True)
        self._scheduler.submit(job)
        try:
            while (item := await job.sink.stream.get()) is not _END and not isinstance(item, BaseException):
                if on_delta is not None:
                    on_delta(item)
            return await job.sink.future
        finally:
            if not job.sink.future.done():
                self._scheduler.cancel(job)

    @property
    def stats(self) -> dict[str, float]:
        """Engine counters: prefilled_tokens, decoded_tokens, steps, cache_hits, and cache_copy_seconds (time
        copying KV to and from the host prefix cache), read without locking."""
        return {**self._scheduler.stats, "cache_copy_seconds": self._scheduler.cache.copy_seconds}

    def clear_cache(self) -> None:
        """Forget cached prefixes."""
        self._scheduler.clear_cache()

    def close(self) -> None:
        """Stop the scheduler (failing what is in flight) and free the model."""
        if self._ctx is not None:
            self._scheduler.close()
            self._L.llama_free(self._ctx)
            self._L.llama_model_free(self._model)
            self._ctx = self._model = None

    def __enter__(self) -> LlamaCppBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
