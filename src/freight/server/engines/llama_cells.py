"""KV cells the local engine keeps between requests, so work done once is not done again: the cells after a prompt's
leading blocks (`Prefixes`), and a greedy reply cut at max_tokens (`Continuations`). Both give the bytes a fresh decode
would (engines/llama_decode.py says why).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from freight.server.engines.llama_model import Job


@dataclass
class Cut:
    """A greedy reply cut off at max_tokens, kept so the same request with a higher max_tokens carries on from it."""

    tokens: list[int]
    text: bytes
    state: bytes  # the sequence's KV cells (llama_state_seq_get_data): the prompt and every token but the last


class Continuations:
    """Greedy replies cut at max_tokens, by request (prompt, grammar, stops), at most `limit` bytes of KV kept.

    A reply cut at max_tokens is usually asked again with max_tokens doubled (freight's `raise_max_tokens`); decoded
    greedily, the longer reply starts with the very tokens of the cut one. Restoring the cut reply's KV cells and
    carrying on from its last token gives the bytes a fresh decode would (the cells are the same bytes, and every
    step after is one token per sequence, as in a fresh decode), without computing the first max_tokens again.
    Sampled replies (temperature > 0) are not kept: their seed depends on max_tokens, so the retry draws anew.
    """

    def __init__(self, limit: int = 256 << 20) -> None:
        self.limit = limit
        self._cuts: dict[tuple[object, ...], Cut] = {}
        self._lock = threading.Lock()
        self.resumed = 0  # requests that carried on from a kept reply

    @staticmethod
    def key(job: Job) -> tuple[object, ...] | None:
        return None if job.temperature > 0 else (tuple(job.prompt), job.grammar, tuple(job.stops))

    def put(self, job: Job, state: bytes) -> None:
        key = self.key(job)
        if key is None or len(state) > self.limit:
            return
        with self._lock:
            self._cuts.pop(key, None)
            self._cuts[key] = Cut(list(job.tokens), bytes(job.text), state)
            while sum(len(c.state) for c in self._cuts.values()) > self.limit:
                del self._cuts[next(iter(self._cuts))]  # the oldest

    def get(self, job: Job) -> Cut | None:
        key = self.key(job)
        if key is None:
            return None
        with self._lock:
            cut = self._cuts.get(key)
        return cut if cut is not None and len(cut.tokens) < job.max_tokens else None


PREFIX_BLOCK = 64  # tokens: prompts are decoded in blocks this long, and the cells after each block are kept


class Prefixes:
    """The KV cells of prompts' leading blocks, by their tokens, at most `limit` bytes (the least recently used go).

    Every prompt is decoded in blocks of PREFIX_BLOCK tokens from position 0, the last block taking the 64-127 tokens
    left, so two prompts that start alike (one prompt template, one system prompt) decode their common leading blocks
    the same way: the cells after a block are the same bytes whichever request computed them, and a request whose
    leading blocks were decoded before starts from them. 64 is the smallest batch llama.cpp's faster CPU kernel
    takes: smaller blocks would cost more than they save.
    """

    def __init__(self, limit: int = 128 << 20) -> None:
        self.limit = limit
        self._states: dict[tuple[int, ...], bytes] = {}
        self._lock = threading.Lock()
        self.reused = 0  # prompt tokens not decoded because their block was kept

    @staticmethod
    def chunk(prompt_left: int) -> int:
        """The next block of a prompt with `prompt_left` tokens still to decode."""
        return PREFIX_BLOCK if prompt_left >= 2 * PREFIX_BLOCK else prompt_left

    def put(self, tokens: list[int], state: bytes) -> None:
        key = tuple(tokens)
        with self._lock:
            if key in self._states or len(state) > self.limit:
                return
            self._states[key] = state
            total = sum(len(v) for v in self._states.values())
            while total > self.limit:
                oldest = next(iter(self._states))
                total -= len(self._states.pop(oldest))

    def longest(self, prompt: list[int]) -> tuple[int, bytes] | None:
        """The longest kept block boundary of `prompt` (one its own decoding passes through), with its cells."""
        end = len(prompt) - PREFIX_BLOCK  # the last block takes what is left: boundaries stop before it
        with self._lock:
            for boundary in range(end - end % PREFIX_BLOCK, 0, -PREFIX_BLOCK):
                state = self._states.pop(tuple(prompt[:boundary]), None)
                if state is not None:
                    self._states[tuple(prompt[:boundary])] = state  # most recently used
                    return boundary, state
        return None
