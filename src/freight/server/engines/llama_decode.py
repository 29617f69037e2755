"""Decoding with llama.cpp's C API (through llama-cpp-python's bindings): one model, contexts that each decode one or
several sequences together, and a sampler built fresh for every request.

Why not `Llama.create_completion`: it keeps state between calls (the previous prompt's KV cache is reused as a
prefix, the sampler's seed is the instance's), decodes one sequence per context, and runs the grammar over the whole
vocabulary (49,152 tokens for SmolLM2) at every step. Here:

- **Fresh state per request.** Every request gets its own sequence (its KV cells are cleared when it ends), its own
  sampler chain seeded with the request's seed, its own grammar state. Nothing a context served before changes what
  it answers next.
- **Several sequences per context** (`slots`): one `llama_decode` call carries one token of every sequence that is
  generating, plus prompt tokens of sequences being admitted (continuous batching). The weights are read once per
  step for all of them, which is what makes a small model fast on a CPU whose caches cannot hold it. The KV cache is
  not unified: each sequence has its own cells, laid out the same whatever the other sequences are doing.
  The engine's default is one sequence per context: batched replies were measured not bit-identical to the same
  request decoded alone, and no faster on 2 busy cores (docs/engines.md).
- **The grammar checks the sampled token first** (as llama.cpp's own sampler does): the token drawn without the
  grammar is kept when the grammar allows it; only otherwise is the grammar applied to the whole vocabulary and the
  token drawn again. Same distribution, a fraction of the work.

A context is driven by one thread (llama.cpp contexts are not thread-safe); every context of an engine pulls from one
queue of jobs, so a free slot anywhere takes the next request.
"""

from __future__ import annotations

import ctypes
import math
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# llama-cpp-python's defaults for create_completion, which the engine has always used when a temperature is set.
TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05
_PIECE_BUFFER = 256


def _lib() -> Any:
    import llama_cpp

    return llama_cpp


_quiet_callback: Any = None


def _quiet(lib: Any) -> None:
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
        _quiet(lib)
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
            buf = ctypes.create_string_buffer(_PIECE_BUFFER)
            n = _lib().llama_token_to_piece(self.vocab, token, buf, _PIECE_BUFFER, 0, False)
            found = self._pieces[token] = buf.raw[: max(n, 0)]
        return found

    def is_eog(self, token: int) -> bool:
        found = self._eog.get(token)
        if found is None:
            found = self._eog[token] = bool(_lib().llama_vocab_is_eog(self.vocab, token))
        return found


class _Sampling:
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

    def close(self) -> None:
        for chain in (self.free, self.bound):
            if chain is not None:
                self.lib.llama_sampler_free(chain)
        # The grammar sampler belongs to the bound chain and went with it.
        self.free = self.bound = self.grammar = None


@dataclass
class _Active:
    job: Job
    seq: int
    sampling: _Sampling
    fed: int = 0  # prompt tokens already decoded
    pos: int = 0  # next position in the sequence
    next_token: int | None = None  # sampled, not yet decoded


class Context:
    """One llama.cpp context decoding up to `slots` sequences together, on `threads` threads, fed from `jobs`."""

    def __init__(
        self, model: Model, jobs: queue.Queue[Job | None], slots: int, threads: int, n_ctx_seq: int, n_batch: int
    ) -> None:
        lib = _lib()
        self.lib, self.model, self.jobs, self.slots = lib, model, jobs, slots
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx_seq * slots
        params.n_seq_max = slots
        params.n_batch = params.n_ubatch = n_batch
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # each sequence its own cells: the same layout whatever the others do
        params.no_perf = True
        ctx = lib.llama_init_from_model(model.ptr, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {slots} x {n_ctx_seq} tokens")
        self.ctx = ctx
        self.n_ctx_seq: int = lib.llama_n_ctx_seq(ctx)
        self.n_batch = n_batch
        self.memory = lib.llama_get_memory(ctx)
        self.batch = lib.llama_batch_init(n_batch, 0, 1)
        self._thread = threading.Thread(target=self._loop, name="freight-llama", daemon=True)
        self._thread.start()

    # --- the loop -------------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        active: list[_Active] = []
        free = list(range(self.slots))
        stopping = False
        while True:
            while free and not stopping:
                try:
                    job = self.jobs.get(block=not active)
                except queue.Empty:
                    break
                if job is None:  # the engine is closing: finish what is running, take nothing new
                    stopping = True
                    break
                seq = free.pop(0)
                started = self._start(job, seq)
                if started is None:
                    free.insert(0, seq)
                else:
                    active.append(started)
            if not active:
                if stopping:
                    self._close()
                    return
                continue
            try:
                finished = self._step(active)
            except Exception as exc:  # a failed llama_decode fails the requests in it, not the engine
                finished = list(active)
                for a in active:
                    if not a.job.result.done():
                        a.job.result.set_exception(exc)
            for a in finished:
                active.remove(a)
                free.append(self._end(a))
            free.sort()

    def _start(self, job: Job, seq: int) -> _Active | None:
        try:
            sampling = _Sampling(self.model, job)
        except Exception as exc:  # a grammar llama.cpp refuses: this request fails, the context carries on
            job.result.set_exception(exc)
            return None
        return _Active(job=job, seq=seq, sampling=sampling)

    def _step(self, active: list[_Active]) -> list[_Active]:
        """One llama_decode over every active sequence: the next token of each generating one, and as many prompt
        tokens of the ones still reading their prompt as the batch has room for. Then sample where logits came out."""
        lib, batch = self.lib, self.batch
        n = 0
        outputs: list[tuple[_Active, int]] = []
        generating = [a for a in active if a.next_token is not None]
        reading = [a for a in active if a.next_token is None]
        for a in generating:
            self._put(n, a.next_token, a.pos, a.seq, True)  # type: ignore[arg-type]
            outputs.append((a, n))
            a.pos += 1
            n += 1
        for a in reading:
            room = self.n_batch - n
            if room <= 0:
                break
            take = a.job.prompt[a.fed : a.fed + room]
            last = a.fed + len(take) == len(a.job.prompt)
            for i, token in enumerate(take):
                self._put(n, token, a.pos, a.seq, last and i == len(take) - 1)
                a.pos += 1
                n += 1
            a.fed += len(take)
            if last:
                outputs.append((a, n - 1))
        batch.n_tokens = n
        code = lib.llama_decode(self.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")
        finished = []
        for a, index in outputs:
            token = a.sampling.sample(self.ctx, index)
            if self._advance(a, token):
                finished.append(a)
        return finished

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def _advance(self, a: _Active, token: int) -> bool:
        """Take the sampled token; True when the sequence is finished."""
        job = a.job
        if self.model.is_eog(token):
            job.finish = "stop"
            return True
        job.tokens.append(token)
        job.text += self.model.piece(token)
        if job.stops:
            tail = bytes(job.text[-(max(len(s.encode()) for s in job.stops) + _PIECE_BUFFER) :])
            if any(s in tail.decode("utf-8", errors="ignore") for s in job.stops):
                job.finish = "stop_sequence"
                return True
        if len(job.tokens) >= job.max_tokens or a.pos + 1 >= self.n_ctx_seq:
            job.finish = "length"
            return True
        a.next_token = token
        return False

    def _end(self, a: _Active) -> int:
        self.lib.llama_memory_seq_rm(self.memory, a.seq, -1, -1)
        a.sampling.close()
        if not a.job.result.done():
            a.job.result.set_result(a.job)
        return a.seq

    def _close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
