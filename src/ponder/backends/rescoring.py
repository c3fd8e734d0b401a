"""Teacher-forced re-scoring of texts a model already wrote: each token's log-probability and entropy under the
raw model (no sampler), and optionally the final hidden state at the last token.

This is how features reach samples that were drawn without them (an older store, an HTTP backend that returned
no log-probabilities): one prefill per problem's prompt, then one pass over each completion, no decoding. It
owns a second llama_context on the engine's model; the engine's chat template and tokenizer give the prompt,
so the tokens scored are the ones the engine saw (up to re-tokenizing the completion text). It ignores sampling,
batching across problems and asyncio: it is a batch job, run by `ponder verifier featurize`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ponder.errors import BackendError, ContextOverflow
from ponder.types import Message

_ROWS = 32
"""Rows of logits reduced at once (each is the whole vocabulary: 32 x 152k floats is about 40 MB in float64)."""


@dataclass(frozen=True)
class Rescored:
    """What the model thinks of one completion, token by token."""

    logprobs: tuple[float, ...]
    entropies: tuple[float, ...]
    hidden: tuple[float, ...] = ()
    """The final hidden state at the completion's last token (empty unless asked for)."""


def _log_softmax_stats(rows: np.ndarray, targets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Chosen-token log-probabilities and entropies (nats) of logits `rows` [n, vocab]."""
    rows = rows.astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    shifted = rows - top
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    logp = shifted - log_z
    entropy = -(np.exp(logp) * logp).sum(axis=1)
    return logp[np.arange(len(targets)), np.asarray(targets)], entropy


class Rescorer:
    """Scores completions on `engine`'s model (a LlamaCppBackend); use as a context manager, or close()."""

    def __init__(self, engine: Any, *, hidden: bool = False, n_ctx: int = 4096, n_batch: int = 512,
                 n_threads: int = 2) -> None:
        self.engine, self.hidden = engine, hidden
        self._L = L = engine._L
        cparams = L.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_ctx, n_batch, n_batch, 1
        cparams.n_threads = cparams.n_threads_batch = n_threads
        if hidden:
            cparams.embeddings = True
            cparams.pooling_type = L.LLAMA_POOLING_TYPE_NONE  # one hidden state per token: we read the last
        self._ctx = L.llama_init_from_model(engine._model, cparams)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not create a scoring context with n_ctx={n_ctx}: lower n_ctx")
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(engine._model))
        self.n_embd = L.llama_model_n_embd(engine._model)
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(n_batch, 0, 1)
        self._prompt: tuple[int, ...] = ()
        self._last_row: np.ndarray | None = None
        self.seconds = 0.0
        """Wall-clock seconds spent scoring (what featurizing cost)."""
        self.tokens = 0
        """Tokens run through the model (prompts once per distinct prompt, completions each)."""

    def score(self, messages: Sequence[Message], completion: str) -> Rescored:
        """The completion's token log-probabilities and entropies given the chat `messages` (and its hidden state)."""
        start = time.monotonic()
        try:
            return self._score(messages, completion)
        finally:
            self.seconds += time.monotonic() - start

    def _score(self, messages: Sequence[Message], completion: str) -> Rescored:
        head = self.engine.render(messages)
        prompt = self.engine.tokenize(head)
        full = self.engine.tokenize(head + completion)
        if full[:len(prompt)] != prompt:  # the completion merged into the prompt's last token: score it whole
            prompt = prompt[:-1]
        if len(full) >= self.n_ctx:
            raise ContextOverflow(f"{len(full)} tokens do not fit the scoring context of {self.n_ctx}: raise n_ctx")
        self._set_prompt(tuple(prompt))
        targets = full[len(prompt):]
        if not targets:
            return Rescored((), ())
        assert self._last_row is not None
        logp, entropy = _log_softmax_stats(self._last_row[None, :], targets[:1])  # the prompt's last row
        more_logp, more_entropy, _, hidden = self._run(targets, len(prompt), predicts=targets[1:])
        return Rescored((float(logp[0]), *more_logp), (float(entropy[0]), *more_entropy), hidden)

    def _set_prompt(self, prompt: tuple[int, ...]) -> None:
        """Keep `prompt` in the KV cache (prefilled once for all completions of one problem)."""
        L = self._L
        if prompt == self._prompt:
            L.llama_memory_seq_rm(self._mem, 0, len(prompt), -1)
            return
        L.llama_memory_clear(self._mem, True)
        self._prompt, self._last_row = (), None
        _, _, last, _ = self._run(list(prompt), 0, predicts=None)
        self._prompt, self._last_row = prompt, last

    def _run(self, tokens: Sequence[int], pos: int, predicts: Sequence[int] | None
             ) -> tuple[list[float], list[float], np.ndarray | None, tuple[float, ...]]:
        """Decode `tokens` from position `pos` in chunks. With `predicts` (the token each row predicts: row i of
        tokens predicts predicts[i]), their log-probabilities and entropies, reduced block by block so that no
        more than _ROWS rows of logits are ever held; with None, only the last row (a prompt's)."""
        L, b = self._L, self._batch
        logp: list[float] = []
        entropy: list[float] = []
        last: np.ndarray | None = None
        hidden: tuple[float, ...] = ()
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            b.n_tokens = len(chunk)
            wanted = [start + i < len(predicts) if predicts is not None else start + i == len(tokens) - 1
                      for i in range(len(chunk))]
            for i, token in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i] = token, pos + start + i, 1
                b.seq_id[i][0] = 0
                # the last token is an output too when its hidden state is read (llama.cpp keeps outputs only)
                b.logits[i] = wanted[i] or (self.hidden and predicts is not None and start + i == len(tokens) - 1)
            if L.llama_decode(self._ctx, b) != 0:
                raise BackendError("llama_decode failed while re-scoring: lower n_batch or n_ctx")
            rows = [i for i in range(len(chunk)) if wanted[i]]
            if predicts is None:
                last = self._logits(rows[-1]).copy() if rows else last
            for at in range(0, len(rows) if predicts is not None else 0, _ROWS):
                block = rows[at:at + _ROWS]
                lp, ent = _log_softmax_stats(np.stack([self._logits(i) for i in block]),
                                             [predicts[start + i] for i in block])  # type: ignore[index]
                logp += lp.tolist()
                entropy += ent.tolist()
            self.tokens += len(chunk)
            if self.hidden and predicts is not None and start + len(chunk) == len(tokens):
                emb = L.llama_get_embeddings_ith(self._ctx, len(chunk) - 1)
                hidden = tuple(float(x) for x in np.ctypeslib.as_array(emb, shape=(self.n_embd,)))
        return logp, entropy, last, hidden

    def _logits(self, i: int) -> np.ndarray:
        return np.ctypeslib.as_array(self._L.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,))

    def close(self) -> None:
        if self._ctx is not None:
            self._L.llama_batch_free(self._batch)
            self._L.llama_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> Rescorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
