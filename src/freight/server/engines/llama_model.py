"""llama.cpp's C API for the local engine (through llama-cpp-python's bindings): the loaded model, one request to
decode (`Job`), and the sampler built fresh for every request (`Sampling`). The contexts that decode are in
engines/llama_decode.py; the KV cells kept between requests in engines/llama_cells.py.
"""

from __future__ import annotations

import ctypes
import math
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# llama-cpp-python's defaults for create_completion, which the engine has always used when a temperature is set.
TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05
PIECE_BUFFER = 256  # bytes: the longest piece of text one token is


def _lib() -> Any:
    import llama_cpp

    return llama_cpp


_quiet_callback: Any = None


def quiet(lib: Any) -> None:
    """llama.cpp logs every load and context to stderr; the server's own log says what matters."""
    global _quiet_callback
    if _quiet_callback is None:
        _quiet_callback = lib.llama_log_callback(lambda level, text, user_data: None)
        lib.llama_log_set(_quiet_callback, ctypes.c_void_p(0))


@dataclass
class Job:
    """One request to decode, and what came of it. The engine fills the first part; the context the rest."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    seed: int
    grammar: str | None = None
    stops: list[str] = field(default_factory=list)
    # Filled in while decoding.
    tokens: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    finish: str = ""  # "stop" (end of turn), "length" (max_tokens or the context), "stop_sequence"
    result: Future[Job] = field(default_factory=Future)


class Model:
    """A GGUF model loaded once per process; contexts share its (memory-mapped) weights."""

    def __init__(self, path: Path) -> None:
        lib = _lib()
        quiet(lib)
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        # No extra buffer types (AMX tiles, repacked weights): a CPU may report AMX that its kernel or hypervisor
        # does not let a process use, and llama.cpp built for that CPU then dies of SIGSEGV at the first matrix
        # product (seen on a 2-core Xeon VM). The plain CPU kernels (AVX2/AVX-512) are what a model this small needs.
        params.use_extra_bufts = False
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ValueError(f"llama.cpp could not load {path}: is it a GGUF model file?")
        self.ptr = model
        self.vocab = lib.llama_model_get_vocab(model)
        self.n_vocab: int = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train: int = lib.llama_model_n_ctx_train(model)
        template = lib.llama_model_chat_template(model, None)
        self.chat_template: str | None = template.decode("utf-8") if template else None
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(_lib().llama_vocab_get_text(self.vocab, token)).decode("utf-8", errors="replace")

    def bos(self) -> int:
        return int(_lib().llama_vocab_bos(self.vocab))

    def eos(self) -> int:
        return int(_lib().llama_vocab_eos(self.vocab))

    def tokenize(self, text: str) -> list[int]:
        """The prompt as the model reads it; special tokens written in the text (the chat template's) are parsed."""
        lib = _lib()
        data = text.encode("utf-8")
        room = len(data) + 8
        buf = (lib.llama_token * room)()
        n = lib.llama_tokenize(self.vocab, data, len(data), buf, room, False, True)
        if n < 0:  # more tokens than bytes cannot happen, but the API says to retry with -n
            room = -n
            buf = (lib.llama_token * room)()
            n = lib.llama_tokenize(self.vocab, data, len(data), buf, room, False, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        found = self._pieces.get(token)
        if found is None:
            buf = ctypes.create_string_buffer(PIECE_BUFFER)
            n = _lib().llama_token_to_piece(self.vocab, token, buf, PIECE_BUFFER, 0, False)
            found = self._pieces[token] = buf.raw[: max(n, 0)]
        return found

    def is_eog(self, token: int) -> bool:
        found = self._eog.get(token)
        if found is None:
            found = self._eog[token] = bool(_lib().llama_vocab_is_eog(self.vocab, token))
        return found


class Sampling:
    """A request's samplers: a chain (greedy, or top-k/top-p/min-p/temperature/seeded draw) without the grammar, and
    the same chain behind the grammar for the draws the grammar refuses."""

    def __init__(self, model: Model, job: Job) -> None:
        lib = _lib()
        self.lib = lib
        self.grammar: Any = None
        self.free = self._chain(job, None)
        self.bound: Any = None
        if job.grammar is not None:
            self.grammar = lib.llama_sampler_init_grammar(model.vocab, job.grammar.encode(), b"root")
            if not self.grammar:
                self.close()
                raise ValueError("llama.cpp could not parse the grammar made from the JSON Schema")
            self.bound = self._chain(job, self.grammar)  # owns the grammar sampler from here on
        self._one = (lib.llama_token_data * 1)()
        self._one_array = lib.llama_token_data_array(self._one, 1, -1, False)

    def _chain(self, job: Job, grammar: Any) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        steps = [grammar] if grammar is not None else []
        if job.temperature <= 0:
            steps.append(lib.llama_sampler_init_greedy())
        else:
            steps += [
                lib.llama_sampler_init_top_k(TOP_K),
                lib.llama_sampler_init_top_p(TOP_P, 1),
                lib.llama_sampler_init_min_p(MIN_P, 1),
                lib.llama_sampler_init_temp(job.temperature),
                lib.llama_sampler_init_dist(job.seed & 0xFFFFFFFF),
            ]
        for step in steps:
            lib.llama_sampler_chain_add(chain, step)
        return chain

    def _allowed(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        self.lib.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        return not math.isinf(self._one[0].logit)

    def sample(self, ctx: Any, index: int) -> int:
        lib = self.lib
        token = int(lib.llama_sampler_sample(self.free, ctx, index))
        if self.grammar is None:
            return token
        if self._allowed(token):
            lib.llama_sampler_accept(self.grammar, token)
            return token
        # The grammar over the whole vocabulary, then the same draw on what it leaves (accepted by the chain).
        return int(lib.llama_sampler_sample(self.bound, ctx, index))

    def accept(self, token: int) -> None:
        """Take a token as if it had been sampled (a resumed reply's): the grammar moves past it."""
        if self.grammar is not None:
            self.lib.llama_sampler_accept(self.grammar, token)

    def close(self) -> None:
        for chain in (self.free, self.bound):
            if chain is not None:
                self.lib.llama_sampler_free(chain)
        # The grammar sampler belongs to the bound chain and went with it.
        self.free = self.bound = self.grammar = None
