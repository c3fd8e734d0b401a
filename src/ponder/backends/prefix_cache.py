"""Finished sequences' KV kept in host memory, so that a later request that shares their prefix skips its prefill.

Why host memory and not the KV cache: in llama.cpp's unified KV cache every decoded token's attention runs over
every cell in use, so a prefix parked in KV cells slows every step of every running sequence (about 0.75 us a
cell a token on the 0.5B here) until it is evicted. Copied out with llama_state_seq_get_data it costs nothing
while it waits; a hit copies it back (llama_state_seq_set_data, a memory copy, not a prefill) and trims it to
the tokens the request shares.

An LRU of `entries` prefixes. A prefix that a newer one extends is dropped (the newer serves both). A restore that
finds no contiguous run of free cells fails and counts as a miss: the request prefills instead.

This module owns the entries and the copies; it ignores scheduling (scheduler.py decides what to save and when).
"""

from __future__ import annotations

import ctypes
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import llama_cpp as L

from ponder.backends.decoding import common_prefix_len


@dataclass(frozen=True)
class CachedPrefix:
    tokens: tuple[int, ...]
    state: Any
    """The sequence's KV as llama_state_seq_get_data wrote it (a ctypes byte array)."""


class HostPrefixCache:
    def __init__(self, ctx: Any, mem: Any, entries: int) -> None:
        self.ctx, self.mem, self.entries = ctx, mem, entries
        self._lru: OrderedDict[int, CachedPrefix] = OrderedDict()  # least recently used first
        self._ids = itertools.count()
        self.copy_seconds = 0.0
        """Time spent copying KV out (save) and back (restore), on the engine thread."""

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def state_bytes(self) -> int:
        return sum(len(e.state) for e in self._lru.values())

    def save(self, seq: int, tokens: list[int]) -> None:
        """Copy sequence `seq`'s KV (holding `tokens` from position 0) out; the caller then frees the sequence."""
        if self.entries <= 0 or not tokens:
            return
        for key, entry in list(self._lru.items()):
            if len(entry.tokens) <= len(tokens) and common_prefix_len(entry.tokens, tokens) == len(entry.tokens):
                del self._lru[key]  # the new prefix extends it
        started = time.perf_counter()
        size = L.llama_state_seq_get_size(self.ctx, seq)
        state = (ctypes.c_uint8 * size)()
        copied = L.llama_state_seq_get_data(self.ctx, state, size, seq)
        self.copy_seconds += time.perf_counter() - started
        if copied != size:
            return  # nothing to keep: a later request prefills
        self._lru[next(self._ids)] = CachedPrefix(tuple(tokens), state)
        while len(self._lru) > self.entries:
            self._lru.popitem(last=False)

    def best(self, head: list[int]) -> tuple[int | None, int]:
        """The entry sharing the longest prefix with `head`, and how many tokens it shares."""
        best: tuple[int | None, int] = (None, 0)
        for key, entry in self._lru.items():
            n = common_prefix_len(entry.tokens, head)
            if n > best[1]:
                best = (key, n)
        return best

    def restore(self, key: int, seq: int, match: int) -> bool:
        """Copy entry `key` into the empty sequence `seq`, trimmed to its first `match` tokens; False if llama.cpp
        found no room for it (then `seq` is left empty)."""
        entry = self._lru.get(key)
        if entry is None:
            return False
        started = time.perf_counter()
        restored = L.llama_state_seq_set_data(self.ctx, entry.state, len(entry.state), seq)
        self.copy_seconds += time.perf_counter() - started
        if restored == 0:
            L.llama_memory_seq_rm(self.mem, seq, -1, -1)
            return False
        L.llama_memory_seq_rm(self.mem, seq, match, -1)
        self._lru.move_to_end(key)
        return True

    def clear(self) -> None:
        self._lru.clear()
