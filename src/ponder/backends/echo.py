"""Servers that echo an assistant prefill: finding the echo of a prefix at the start of a reply, and removing it.

Asked to continue a trailing assistant message, llama.cpp's `llama-server` answers with the prefill *and* its
continuation in `content`; vLLM, SGLang and Ollama send the continuation only. A backend promises the
continuation only (`Generation.text`), so an echo is cut off here. The echo need not be byte-exact: detokenizing
the prefill can drop or add a leading space (SentencePiece), and a chat template may trim the prefill's trailing
whitespace, so whitespace is matched loosely while every other character must agree, in order.

`echo_end` finds the echo in a whole reply; `EchoFilter` does the same for a reply that arrives in pieces
(streaming), holding back text only while it could still be the echo. Whether a server echoes at all is learnt
by the backend (`OpenAIBackend.echoes_prefix`), not guessed per reply: a model may well begin its continuation
with the prefix's own words.
"""

from __future__ import annotations

PENDING = -1
"""echo_end's answer when the text so far could still grow into the echo."""


def echo_end(text: str, prefix: str, final: bool = True) -> int | None:
    """Where an echo of `prefix` at the start of `text` ends, None if `text` does not start with one.

    Whitespace may differ (a run may be missing, longer or another kind); every other character must match.
    The echo takes in as much of `text`'s whitespace after it as `prefix` ends with (a template that trimmed
    "Step 1\\n\\n" to "Step 1" still has the model produce the blank line, which the caller adds back with the
    prefix). With final=False, PENDING says `text` is still a possible beginning of the echo.
    """
    if text.startswith(prefix):
        return len(prefix)
    i = 0
    for ch in prefix:
        if ch.isspace():
            continue
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return PENDING if not final else None
        if text[i] != ch:
            return None
        i += 1
    tail, end = len(prefix) - len(prefix.rstrip()), i
    while end < len(text) and end - i < tail and text[end].isspace():
        end += 1
    if not final and end == len(text) and end - i < tail:
        return PENDING
    return end


def strip_echo(text: str, prefix: str) -> tuple[str, bool]:
    """(`text` without a leading echo of `prefix`, whether there was one)."""
    end = echo_end(text, prefix)
    return (text, False) if end is None else (text[end:], True)


class EchoFilter:
    """Removes a leading echo of `prefix` from a text fed in pieces; `echoed` is None until that is known."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.echoed: bool | None = None
        self._held = ""

    def feed(self, piece: str) -> str:
        """The part of `piece` to pass on now (text that may be the echo is held back)."""
        if self.echoed is not None:
            return piece
        self._held += piece
        end = echo_end(self._held, self.prefix, final=False)
        return "" if end == PENDING else self._decide(end)

    def finish(self) -> str:
        """The text still held back once the reply has ended."""
        return "" if self.echoed is not None else self._decide(echo_end(self._held, self.prefix))

    def _decide(self, end: int | None) -> str:
        held, self._held = self._held, ""
        self.echoed = end is not None
        return held if end is None else held[end:]
