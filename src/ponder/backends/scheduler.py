"""The local engine's scheduler: one thread that owns the llama.cpp context and batches every sequence.

Each step builds ONE llama_batch holding the next token of every active sequence of every request, plus
prefill chunks of newly admitted requests (continuous batching). A request's prompt (all but its last token)
is prefilled once into a *root* sequence, reusing the longest cached token prefix; each of its n samples is
then forked with llama_memory_seq_cp and starts by decoding the last prompt token, so samples can start in
waves when slots or cells are short. Finished sequences are copied out to a small prefix cache in host memory
(prefix_cache.py: parked in KV cells they would slow every step) and copied back when a request shares them.

Exclusive mode (deterministic sweeps) admits one request at a time, on an empty KV cache with no prefix cache:
llama.cpp's numbers depend on which tokens share a batch, and a request alone has the same batches whatever else
is queued, in whatever order, in whichever process.

What it ignores: chat templates, tokenization and asyncio. Callers hand it token ids and a Sink; results go
back through the Sink's callbacks, called from this thread.
"""

from __future__ import annotations

import ctypes
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import llama_cpp as L
import numpy as np

from ponder.backends.decoding import TextAssembler, common_prefix_len, token_logprob
from ponder.backends.prefix_cache import HostPrefixCache
from ponder.backends.steptrace import StepLog, StepRecord
from ponder.errors import BackendError, ContextOverflow
from ponder.types import Generation, SamplingParams, TokenLogprob, Usage

PENALTY_LAST_N = 64
"""Penalties look back over this many generated tokens (llama.cpp's default window)."""


def sampler_chain(p: SamplingParams, seed: int, n_vocab: int) -> Any:
    """llama.cpp's sampler chain for `p` (resolved: no None fields), in llama.cpp's own order: penalties,
    top-k, top-p, min-p, temperature, then a seeded draw (or greedy at temperature 0). Penalties see only the
    generated tokens: llama_sampler_sample accepts each sampled token into the chain."""
    stages = []
    if p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0:
        stages.append(L.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, p.repetition_penalty,
                                                     p.frequency_penalty, p.presence_penalty))
    if p.temperature == 0:
        stages.append(L.llama_sampler_init_greedy())
    else:
        if p.top_k and p.top_k > 0:
            stages.append(L.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            stages.append(L.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            stages.append(L.llama_sampler_init_min_p(p.min_p, 1))
        stages += [L.llama_sampler_init_temp(p.temperature), L.llama_sampler_init_dist(seed)]
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    for stage in stages:  # the chain owns and frees its stages
        L.llama_sampler_chain_add(chain, stage)
    return chain


@dataclass(frozen=True)
class PrefixSource:
    """Where a new request's root can copy its prompt's KV cells from."""

    slot: int | None
    """The running root holding them; None: none does."""
    match: int
    """How many leading prompt tokens it shares."""
    entry: int | None = None
    """Or the host prefix cache's entry holding them (slot is then None); neither: prefill from scratch."""
    busy: bool = False
    """It is a root still prefilling: wait for it rather than prefill the same tokens twice."""


class Sink(Protocol):
    """Where a job's results go (called from the scheduler thread)."""

    def delta(self, text: str) -> None: ...
    def done(self, generations: list[Generation]) -> None: ...
    def fail(self, error: BaseException) -> None: ...


@dataclass(eq=False)
class Sample:
    """One running generation: a sequence slot, its sampler, and its text so far."""

    job: Job
    index: int
    slot: int
    sampler: Any
    pos: int
    next_token: int
    kv_tokens: list[int]
    """Token ids whose KV this slot holds (for the prefix cache)."""
    text: TextAssembler
    generated: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    batch_index: int = -1


@dataclass(eq=False)
class Job:
    """One request: a prompt, its sampling params and where results go."""

    prompt: list[int]
    params: SamplingParams
    sink: Sink
    stream: bool = False
    root: int | None = None
    prefilled: int = 0
    cached: int = 0
    """Prompt tokens whose KV came from elsewhere (a running root or the host prefix cache), not prefilled."""
    borrowed: int = 0
    """Of those, the cells shared with a running root (seq_cp shares cells: counted once, by that root)."""
    forked: int = 0
    reserved: int = 0
    samples: list[Sample] = field(default_factory=list)
    results: dict[int, Generation] = field(default_factory=dict)

    @property
    def head(self) -> list[int]:
        """The tokens prefilled into the root: all of the prompt but its last token."""
        return self.prompt[:-1]

    @property
    def per_sample(self) -> int:
        return self.params.max_tokens + 1


class Scheduler:
    """Owns one llama_context; admits jobs, batches their steps, samples, and reports back."""

    def __init__(self, model: Any, ctx: Any, *, n_seq_max: int, n_batch: int, cache_entries: int = 8,
                 exclusive: bool = False, trace: StepLog | None = None) -> None:
        self.model, self.ctx = model, ctx
        self.trace = trace
        """Where every step is recorded (steptrace.py), or None: no timing at all."""
        self._overhead = 0.0  # scheduler seconds since the last traced step (admitting, forking)
        self._admit_copies = 0.0  # host prefix cache copies within that time (traced apart from it)
        self._deferred: list[tuple[Job, list[Generation]]] = []
        """Traced only: requests finished by this step, answered once the step is recorded (a caller that takes
        the steps when its request returns then sees every step that served it)."""
        self.exclusive = exclusive
        """One request at a time, each on an empty engine (no prefix cache): bit-exact reruns, less throughput."""
        if exclusive:
            cache_entries = 0
        self.vocab = L.llama_model_get_vocab(model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.mem = L.llama_get_memory(ctx)
        self.n_ctx = L.llama_n_ctx(ctx)
        self.n_seq_max, self.n_batch, self.cache_entries = n_seq_max, n_batch, cache_entries
        self.batch = L.llama_batch_init(n_batch, 0, 1)
        self.free_slots = list(range(n_seq_max))
        self.cache = HostPrefixCache(ctx, self.mem, cache_entries)
        self.waiting: list[Job] = []
        self.jobs: list[Job] = []  # admitted: prefilling, forking or running
        self.stats = {"prefilled_tokens": 0, "decoded_tokens": 0, "steps": 0, "cache_hits": 0}
        self._inbox: queue.SimpleQueue[tuple[str, Job | None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ponder-llamacpp", daemon=True)
        self._closed = False
        self._thread.start()

    # ---- called from any thread -------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if self._closed:
            raise BackendError("the llama.cpp engine is closed: open a new backend")
        self._inbox.put(("submit", job))

    def cancel(self, job: Job) -> None:
        self._inbox.put(("cancel", job))

    def clear_cache(self) -> None:
        """Forget every cached prefix (benchmarks use this to start each run cold)."""
        self._inbox.put(("clear", None))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(("close", None))
            self._thread.join()
            L.llama_batch_free(self.batch)

    # ---- the loop ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        worked = True
        while True:
            # Block when there is nothing to do; nap briefly when jobs wait on each other (never spin).
            wait = None if not (self.waiting or self.jobs) else (0.0 if worked else 0.02)
            if not self._drain(wait):
                break
            try:
                if self.trace is None:
                    self._admit()
                else:
                    start, copied = time.perf_counter(), self.cache.copy_seconds
                    self._admit()
                    copies = self.cache.copy_seconds - copied
                    self._overhead += time.perf_counter() - start - copies
                    self._admit_copies += copies
                worked = self._step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail what is in flight, keep serving
                for job in list(self.jobs):
                    self._fail(job, exc if isinstance(exc, BackendError) else BackendError(f"engine error: {exc}"))
        for job in self.waiting + self.jobs:
            job.sink.fail(BackendError("the llama.cpp engine was closed while this request was running"))

    def _drain(self, wait: float | None) -> bool:
        """Take messages from callers, waiting up to `wait` seconds (None: forever); False when asked to close."""
        try:
            msg = self._inbox.get_nowait() if wait == 0 else self._inbox.get(timeout=wait)
            while True:
                kind, job = msg
                if kind == "close":
                    return False
                if kind == "submit":
                    self.waiting.append(job)  # type: ignore[arg-type]
                elif kind == "cancel":
                    self._drop(job)  # type: ignore[arg-type]
                elif kind == "clear":
                    self.cache.clear()
                msg = self._inbox.get_nowait()
        except queue.Empty:
            return True

    # ---- admission ------------------------------------------------------------------------------------------
    def _reserved(self) -> int:
        """Cells spoken for: a conservative count (shared cells are counted once per holder)."""
        return sum(j.reserved for j in self.jobs)

    def _has_room(self, cells: int, slots: int) -> bool:
        return self._reserved() + cells <= self.n_ctx and len(self.free_slots) >= slots

    def _admit(self) -> None:
        for job in [j for j in self.jobs if j.root is not None and j.prefilled == len(j.head)]:
            self._fork(job)
        while self.waiting:
            if self.exclusive:
                if self.jobs:
                    break
                self._reset()
            job = self.waiting[0]
            src = self._best_source(job)
            if src.busy:
                break  # a root still prefilling will share this prompt: wait for it instead of prefilling twice
            need_slots = 1 if job.params.n == 1 else 2  # a root that can always fork one sample (no deadlock)
            cells = len(job.head) + job.per_sample
            if not self._has_room(cells, need_slots):
                if not self.jobs:
                    self.waiting.pop(0)
                    job.sink.fail(ContextOverflow("the request cannot fit in the context: raise n_ctx"))
                    continue
                break
            self.waiting.pop(0)
            try:
                self._start_root(job, src)
            except Exception as exc:  # fail this request alone; never leave it unanswered
                self._fail(job, BackendError(f"could not start the request: {exc}"))

    def _reset(self) -> None:
        """The idle engine's state made canonical: KV cells from the first, slots handed out from 0."""
        L.llama_memory_clear(self.mem, False)  # metadata only: no cell is in use, so no data needs zeroing
        self.free_slots = sorted(range(self.n_seq_max), reverse=True)

    def _best_source(self, job: Job) -> PrefixSource:
        """The host cache entry or running root sharing the longest prefix with job.head (busy if a root still
        prefilling wins)."""
        entry, match = self.cache.best(job.head)
        best = PrefixSource(None, match, entry=entry)
        for other in self.jobs:
            if other.root is not None and other.forked < other.params.n:
                n = common_prefix_len(other.head, job.head)
                if n > best.match:
                    best = PrefixSource(other.root, n, busy=other.prefilled < len(other.head))
        return best

    def _start_root(self, job: Job, src: PrefixSource) -> None:
        self.jobs.append(job)  # first, so that _drop can undo whatever follows
        job.root = self.free_slots.pop()
        job.reserved = len(job.head) + job.per_sample
        shared = False
        if src.slot is not None and src.match > 0:
            L.llama_memory_seq_cp(self.mem, src.slot, job.root, 0, src.match)
            shared, job.borrowed = True, src.match
        elif src.entry is not None and src.match > 0:
            shared = self.cache.restore(src.entry, job.root, src.match)
        if shared:
            job.prefilled = job.cached = src.match
            self.stats["cache_hits"] += 1
        if job.prefilled == len(job.head):
            self._fork(job)

    def _fork(self, job: Job) -> None:
        """Start as many of the job's samples as free slots and cells allow."""
        while job.forked < job.params.n:
            first = job.forked == 0  # its cells were reserved with the root
            last = job.forked == job.params.n - 1
            if not first and not self._has_room(job.per_sample, 0):
                return
            if self.free_slots:
                slot = self.free_slots.pop()
                if job.head:
                    L.llama_memory_seq_cp(self.mem, job.root, slot, 0, len(job.head))
            elif last:
                slot, job.root = job.root, None  # the last sample takes over the root's KV
            else:
                return
            if not first:
                job.reserved += job.per_sample
            job.samples.append(self._new_sample(job, slot))
            job.forked += 1
        if job.root is not None:
            self._retire(job.root, list(job.head))
            job.root = None

    def _new_sample(self, job: Job, slot: int) -> Sample:
        p = job.params
        seed = p.sample_seed(job.forked)
        chain = sampler_chain(p, random.getrandbits(32) if seed is None else seed & 0xFFFFFFFF, self.n_vocab)
        head = job.head
        return Sample(job, job.forked, slot, chain, len(head), job.prompt[-1], list(head), TextAssembler(p.stop))

    def _retire(self, slot: int, tokens: list[int]) -> None:
        """Copy a finished sequence's KV to the host prefix cache, and free its slot and cells."""
        self.cache.save(slot, tokens)
        L.llama_memory_seq_rm(self.mem, slot, -1, -1)
        self.free_slots.append(slot)

    # ---- one decode step ----------------------------------------------------------------------------------------
    def _step(self) -> bool:
        """Decode one batch and sample from it; False when there was nothing to decode."""
        started = time.perf_counter() if self.trace is not None else 0.0
        b = self.batch
        n = 0
        running = [s for j in self.jobs for s in j.samples]
        for s in running:  # [n_running] decode tokens, each with logits
            self._put(n, s.next_token, s.pos, s.slot, True)
            s.batch_index = n
            n += 1
        chunks = []
        for job in self.jobs:  # prefill chunks fill the rest of the batch
            left = len(job.head) - job.prefilled
            if job.root is None or left == 0 or n >= self.n_batch:
                continue
            take = min(left, self.n_batch - n)
            for k in range(job.prefilled, job.prefilled + take):
                self._put(n, job.head[k], k, job.root, False)
                n += 1
            chunks.append((job, take))
        if n == 0:
            return False
        b.n_tokens = n
        decode_start = time.perf_counter() if self.trace is not None else 0.0
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            raise BackendError(f"llama_decode failed with code {rc}: lower n_seq_max or raise n_ctx")
        decode_end = time.perf_counter() if self.trace is not None else 0.0
        self.stats["steps"] += 1
        self.stats["decoded_tokens"] += len(running)
        if self.trace is not None:  # what the step attended to, read before the positions move on
            prefill_context = sum(job.prefilled * take + take * (take - 1) // 2 for job, take in chunks)
            prefill_kv = sum(job.prefilled + take for job, take in chunks)
            contexts = [s.pos for s in running]
            cells = self._cells_in_use() + n  # what this step attended over, with the cells it wrote
        for job, take in chunks:
            job.prefilled += take
            self.stats["prefilled_tokens"] += take
        if self.trace is None:
            for s in running:
                self._advance(s)
            return True
        try:
            copied = self.cache.copy_seconds
            for s in running:
                self._advance(s)
            end = time.perf_counter()
            finish_copies = self.cache.copy_seconds - copied  # finished sequences copied out to the host cache
            self.trace.append(StepRecord(
                start=started, width=len(running), prefill_tokens=sum(t for _, t in chunks),
                context_sum=sum(contexts), context_max=max(contexts, default=0),
                prefill_context_sum=prefill_context, prefill_kv_tokens=prefill_kv, kv_cells=cells,
                decode_s=decode_end - decode_start,
                sample_s=end - decode_end - finish_copies, other_s=decode_start - started + self._overhead,
                cache_s=finish_copies + self._admit_copies))
            self._overhead = self._admit_copies = 0.0
        finally:
            deferred, self._deferred = self._deferred, []
            for job, results in deferred:
                job.sink.done(results)
        return True

    def _cells_in_use(self) -> int:
        """KV cells holding tokens, estimated: a prefix shared by forked samples (or with another running root)
        once."""
        heads = sum(max(0, j.prefilled - j.borrowed) for j in self.jobs)
        return heads + sum(s.generated for j in self.jobs for s in j.samples)

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def _advance(self, s: Sample) -> None:
        """Sample this sequence's next token from its row of logits, and finish it if it is done."""
        s.kv_tokens.append(s.next_token)
        s.pos += 1
        token = L.llama_sampler_sample(s.sampler, self.ctx, s.batch_index)
        s.generated += 1
        p = s.job.params
        if p.logprobs:
            row = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, s.batch_index), shape=(self.n_vocab,))
            s.logprobs.append(token_logprob(row, token, p.top_logprobs, self.piece_text))
        if L.llama_vocab_is_eog(self.vocab, token):
            return self._finish(s, "stop")
        stopped = s.text.feed(self.piece(token))
        if s.job.stream:
            delta = s.text.pop_delta()
            if delta:
                s.job.sink.delta(delta)
        if stopped:
            return self._finish(s, "stop")
        if s.generated >= p.max_tokens:
            return self._finish(s, "length")
        s.next_token = token

    def _finish(self, s: Sample, reason: str) -> None:
        job = s.job
        text = s.text.finish()
        if job.stream:
            delta = s.text.pop_delta(final=True)
            if delta:
                job.sink.delta(delta)
        L.llama_sampler_free(s.sampler)
        job.samples.remove(s)
        job.reserved -= job.per_sample
        self._retire(s.slot, s.kv_tokens)
        # The prompt is charged once, to the first sample (types.Generation); its siblings reuse that prefill.
        # (Charging them P prompt + P cached would inflate per-call prompt lengths in ponder.compute.)
        first = s.index == 0
        usage = Usage(prompt_tokens=len(job.prompt) if first else 0, completion_tokens=s.generated,
                      cached_tokens=job.cached if first else 0)
        logprobs = tuple(s.logprobs) if job.params.logprobs else None
        job.results[s.index] = Generation(text, reason, s.generated, logprobs, usage)  # type: ignore[arg-type]
        if len(job.results) == job.params.n:
            self.jobs.remove(job)
            results = [job.results[i] for i in range(job.params.n)]
            if self.trace is None:
                job.sink.done(results)
            else:
                self._deferred.append((job, results))

    # ---- cancellation and failure ---------------------------------------------------------------------------
    def _drop(self, job: Job) -> None:
        """Free everything a job holds (cancelled or failed)."""
        if job in self.waiting:
            self.waiting.remove(job)
        if job not in self.jobs:
            return
        self.jobs.remove(job)
        for s in job.samples:
            L.llama_sampler_free(s.sampler)
            L.llama_memory_seq_rm(self.mem, s.slot, -1, -1)
            self.free_slots.append(s.slot)
        job.samples.clear()
        if job.root is not None:
            L.llama_memory_seq_rm(self.mem, job.root, -1, -1)
            self.free_slots.append(job.root)
            job.root = None
        job.reserved = 0

    def _fail(self, job: Job, error: BaseException) -> None:
        self._drop(job)
        job.sink.fail(error)

    # ---- tokens to text -------------------------------------------------------------------------------------
    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def piece_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="replace")
