"""Embeddings from the local engine's model through llama.cpp's C API: a context of its own with `embeddings` on and
mean pooling, one input decoded at a time.

Why not `Llama(embedding=True).embed`: in llama-cpp-python 0.3.36 it crashed the process (SIGSEGV) on the SmolLM2
GGUF. The likely cause was the CPU's extra buffer types (a CPU reporting AMX it cannot use); the model is loaded
without them (engines/llama_model.Model), and this context shares that model, its weights mapped once.

Each input is decoded whole in one micro-batch (mean pooling wants every token of the sequence together), from an
empty memory, so an input's vector never depends on what the context embedded before. The vector is the mean of the
last hidden states over the input's tokens, unit-normalized - the recipe of sentence-embedding models; a chat model
this small was not trained for it, but the vectors are real (similar texts land closer than unrelated ones).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from freight.server.engines.llama_model import Model, _lib

# Input tokens per text. llama.cpp decodes a pooled input in one micro-batch, whose buffers grow with it: 2,048 keeps
# the context small (the chat contexts take the model's full window); a longer input is a context_length_exceeded.
EMBED_MAX_TOKENS = 2048


class Embedder:
    """One embeddings context over a loaded model; thread-safe (a lock: llama.cpp contexts are not)."""

    def __init__(self, model: Model, threads: int, max_tokens: int = EMBED_MAX_TOKENS) -> None:
        lib = _lib()
        self.lib, self.model = lib, model
        self.max_tokens = min(max_tokens, model.n_ctx_train)
        params = lib.llama_context_default_params()
        params.n_ctx = self.max_tokens
        params.n_batch = params.n_ubatch = self.max_tokens
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads
        params.embeddings = True
        params.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
        params.no_perf = True
        ctx = lib.llama_init_from_model(model.ptr, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create an embeddings context of {self.max_tokens} tokens")
        self.ctx: Any = ctx
        self.dims: int = lib.llama_model_n_embd(model.ptr)
        self.memory = lib.llama_get_memory(ctx)
        self.batch = lib.llama_batch_init(self.max_tokens, 0, 1)
        self._lock = threading.Lock()

    def tokens(self, text: str) -> list[int]:
        """The input as the model reads it (with its BOS token when the model wants one)."""
        tokens = self.model.tokenize(text)
        if self.lib.llama_vocab_get_add_bos(self.model.vocab) and (not tokens or tokens[0] != self.model.bos()):
            tokens.insert(0, self.model.bos())
        return tokens

    def embed(self, tokens: list[int]) -> list[float]:
        """The unit-length mean-pooled embedding of one input (at most `max_tokens` tokens, at least one)."""
        if not 0 < len(tokens) <= self.max_tokens:
            raise ValueError(f"an input to embed takes 1 to {self.max_tokens} tokens, not {len(tokens)}")
        lib, b = self.lib, self.batch
        with self._lock:
            for i, token in enumerate(tokens):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, i, 1, True
                b.seq_id[i][0] = 0
            b.n_tokens = len(tokens)
            lib.llama_memory_clear(self.memory, True)
            code = lib.llama_decode(self.ctx, b)
            if code != 0:
                raise RuntimeError(f"llama_decode failed with code {code}")
            pooled = lib.llama_get_embeddings_seq(self.ctx, 0)
            if not pooled:
                raise RuntimeError("llama.cpp returned no pooled embedding")
            raw = [float(pooled[i]) for i in range(self.dims)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        return [x / norm for x in raw]

    def close(self) -> None:
        with self._lock:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
