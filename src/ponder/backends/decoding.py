"""Pure helpers of the local engine: incremental text assembly, stop strings, context fitting, log-probabilities.

Nothing here touches llama.cpp, so all of it is tested fast. The engine feeds token *bytes* in (a token can end
in the middle of a UTF-8 character) and reads text out; stop strings may span token boundaries.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

import numpy as np

from ponder.errors import ContextOverflow
from ponder.types import TokenLogprob


class TextAssembler:
    """Turns a stream of token bytes into text, cutting it before the first stop string.

    `text` is everything decoded so far (up to the stop string, once one is seen). `pop_delta()` returns the
    text that is safe to stream: it holds back a tail that could still grow into a stop string, and the
    bytes of an unfinished UTF-8 character.
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.stopped = False
        """True once a stop string appeared; `text` then ends just before it."""
        self._emitted = 0

    def feed(self, piece: bytes) -> bool:
        """Add one token's bytes; return True when a stop string has now appeared."""
        if self.stopped:
            return True
        before = len(self.text)
        self.text += self._decoder.decode(piece, final=False)
        self._cut_at_stop(before)
        return self.stopped

    def finish(self) -> str:
        """Flush an unfinished UTF-8 character (as U+FFFD) and return the final text."""
        if not self.stopped:
            before = len(self.text)
            self.text += self._decoder.decode(b"", final=True)
            self._cut_at_stop(before)
        return self.text

    def pop_delta(self, final: bool = False) -> str:
        """The text not yet handed out that can no longer change (all of it when `final`)."""
        end = len(self.text) if (final or self.stopped) else len(self.text) - held_back(self.text, self._stop)
        delta = self.text[self._emitted:end]
        self._emitted = max(self._emitted, end)
        return delta

    def _cut_at_stop(self, before: int) -> None:
        hits = []
        for s in self._stop:
            # Only the new text and a stop-length overlap with the old can hold a new match.
            i = self.text.find(s, max(0, before - len(s) + 1))
            if i >= 0:
                hits.append(i)
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True


def held_back(text: str, stop: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def check_fits(prompt_tokens: int, max_tokens: int, n_ctx_seq: int, n_ctx: int) -> None:
    """Raise ContextOverflow unless one generation of this request can ever fit.

    A sequence needs prompt + max_tokens positions (at most n_ctx_seq). With llama.cpp's unified KV cache the
    n samples of a request share the prompt's cells and can run in waves, so one sample's worth must fit the
    whole cache (n_ctx cells).
    """
    need = prompt_tokens + max_tokens
    limit = min(n_ctx_seq, n_ctx)
    if need > limit:
        raise ContextOverflow(
            f"the request needs {need} tokens of context ({prompt_tokens} prompt + {max_tokens} max_tokens) "
            f"but the engine's context holds {limit}: shorten the prompt, lower max_tokens, or raise n_ctx"
        )


def token_logprob(
    logits: np.ndarray, token: int, top: int, piece: Callable[[int], str]
) -> TokenLogprob:
    """The log-probability of `token` under the raw logits row (log-softmax), and the `top` likeliest tokens."""
    row = logits  # float32 [n_vocab]; the sum is accumulated in float64 (a float64 copy cost ~1 ms a token)
    m = float(row.max())
    lse = m + float(np.log(np.exp(row - np.float32(m)).sum(dtype=np.float64)))
    alternatives: dict[str, float] = {}
    if top > 0:
        ids = np.argpartition(-row, top)[:top]
        for i in ids[np.argsort(-row[ids])]:
            alternatives.setdefault(piece(int(i)), float(row[i]) - lse)
    return TokenLogprob(piece(token), float(row[token]) - lse, alternatives)
