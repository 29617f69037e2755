"""Decoding with llama.cpp's C API (through llama-cpp-python's bindings): one model, contexts that each decode one or
several sequences together, and a sampler built fresh for every request.

Why not `Llama.create_completion`: it keeps state between calls (the previous prompt's KV cache is reused as a
prefix, the sampler's seed is the instance's), decodes one sequence per context, and runs the grammar over the whole
vocabulary (49,152 tokens for SmolLM2) at every step. Here:

- **Fresh state per request.** Every request gets its own sequence (its KV cells are cleared when it ends), its own
  sampler chain seeded with the request's seed, its own grammar state. Nothing a context served before changes what
  it answers next.
- **Several sequences per context** (`slots`): one `llama_decode` call carries the next token of every sequence that
  is generating. The weights are read once per step for all of them. A sequence's prompt is decoded *alone*, in its
  own calls (blocks of PREFIX_BLOCK from position 0), never packed beside other sequences' tokens: llama.cpp splits a
  mixed call into micro-batches shaped by the company, and its CPU kernels round a 1-row and a 64-row product
  differently, so a prompt decoded beside others got other cells and, later, another reply. Decoded alone, and with
  one token per sequence in every generating step (each row computed by itself) and each sequence its own KV cells
  (the cache is not unified), a request gets the bytes it gets alone, whatever else the context decodes.
- **A prompt's leading blocks are decoded once** (`Prefixes`): the cells after each 64-token block are kept, and a
  prompt that starts with the same blocks starts from them (the same bytes: every prompt takes the same blocks).
- **A greedy reply cut at max_tokens carries on** (`Continuations`): asked again with a higher max_tokens, the
  request resumes from the cut reply's KV cells instead of decoding its first max_tokens again.
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


@dataclass
class _Cut:
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
        self._cuts: dict[tuple[object, ...], _Cut] = {}
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
            self._cuts[key] = _Cut(list(job.tokens), bytes(job.text), state)
            while sum(len(c.state) for c in self._cuts.values()) > self.limit:
                del self._cuts[next(iter(self._cuts))]  # the oldest

    def get(self, job: Job) -> _Cut | None:
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
        self,
        model: Model,
        jobs: queue.Queue[Job | None],
        slots: int,
        threads: int,
        n_ctx_seq: int,
        n_batch: int,
        peers: list[Context] | None = None,
        continuations: Continuations | None = None,
        prefixes: Prefixes | None = None,
    ) -> None:
        lib = _lib()
        self.lib, self.model, self.jobs, self.slots = lib, model, jobs, slots
        self.continuations = continuations
        self.prefixes = prefixes
        # The contexts sharing `jobs` (this one included): a context takes a new request only while no peer with a
        # free slot has less left to decode (`_least_loaded`), so requests spread over the cores by their length.
        self.peers: list[Context] = peers if peers is not None else []
        self.peers.append(self)
        self.running = 0
        self.load = 0  # tokens left to decode (`_measure`)
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
            self._measure(active)
            while free and not stopping and (not active or self._least_loaded()):
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
                    self._measure(active)
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

    def _measure(self, active: list[_Active]) -> None:
        self.running = len(active)
        # The tokens still to decode, at most: what is left of each prompt and of each reply's max_tokens.
        self.load = sum(len(a.job.prompt) - a.fed + a.job.max_tokens - len(a.job.tokens) for a in active)

    def _least_loaded(self) -> bool:
        """No peer with a free slot has less left to decode: requests spread over the cores by their length, so a
        long one does not leave one core finishing alone while the other is idle."""
        return all(self.load <= p.load for p in self.peers if p is not self and p.running < p.slots)

    def _start(self, job: Job, seq: int) -> _Active | None:
        try:
            sampling = _Sampling(self.model, job)
        except Exception as exc:  # a grammar llama.cpp refuses: this request fails, the context carries on
            job.result.set_exception(exc)
            return None
        active = _Active(job=job, seq=seq, sampling=sampling)
        cut = self.continuations.get(job) if self.continuations is not None else None
        if cut is not None and len(job.prompt) + len(cut.tokens) < self.n_ctx_seq:
            self._resume(active, cut)
        elif self.prefixes is not None:
            found = self.prefixes.longest(job.prompt)
            if found is not None and self._restore(seq, found[1]):
                active.fed = active.pos = found[0]
                self.prefixes.reused += found[0]
        return active

    def _restore(self, seq: int, state: bytes) -> bool:
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if self.lib.llama_state_seq_set_data(self.ctx, buf, len(state), seq):
            return True
        self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
        return False

    def _resume(self, a: _Active, cut: _Cut) -> None:
        """Carry on from a cut reply: its cells back in this sequence, its tokens taken, its last token next."""
        if not self._restore(a.seq, cut.state):
            return  # not restorable here: decoded from the start instead
        for token in cut.tokens:
            a.sampling.accept(token)
        a.job.tokens = list(cut.tokens)
        a.job.text = bytearray(cut.text)
        a.fed = len(a.job.prompt)
        a.pos = len(a.job.prompt) + len(cut.tokens) - 1
        a.next_token = cut.tokens[-1]
        self.continuations.resumed += 1  # type: ignore[union-attr]

    def _step(self, active: list[_Active]) -> list[_Active]:
        """One llama_decode: the next chunk of one sequence's prompt, alone, when a sequence is reading its prompt;
        else the next token of every generating sequence. A prompt is never decoded beside other sequences' tokens:
        it goes through the same chunks whatever else the context is doing, so its cells are the same as decoded
        alone (see the module docstring)."""
        lib, batch = self.lib, self.batch
        n = 0
        outputs: list[tuple[_Active, int]] = []
        reading = [a for a in active if a.next_token is None]
        if reading:
            a = reading[0]
            take = a.job.prompt[a.fed : a.fed + Prefixes.chunk(len(a.job.prompt) - a.fed)]
            last = a.fed + len(take) == len(a.job.prompt)
            for i, token in enumerate(take):
                self._put(n, token, a.pos, a.seq, last and i == len(take) - 1)
                a.pos += 1
                n += 1
            a.fed += len(take)
            if last:
                outputs.append((a, n - 1))
        else:
            for a in active:
                self._put(n, a.next_token, a.pos, a.seq, True)  # type: ignore[arg-type]
                outputs.append((a, n))
                a.pos += 1
                n += 1
        batch.n_tokens = n
        code = lib.llama_decode(self.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")
        if reading and not outputs and self.prefixes is not None:  # a leading block decoded: keep its cells
            a = reading[0]
            self.prefixes.put(a.job.prompt[: a.fed], self._state(a.seq))
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
        job = a.job
        kept = self.continuations is not None and Continuations.key(job) is not None
        if kept and job.finish == "length" and len(job.tokens) >= job.max_tokens > 0:
            self.continuations.put(job, self._state(a.seq))  # type: ignore[union-attr]
        self.lib.llama_memory_seq_rm(self.memory, a.seq, -1, -1)
        a.sampling.close()
        if not a.job.result.done():
            a.job.result.set_result(a.job)
        return a.seq

    def _state(self, seq: int) -> bytes:
        lib = self.lib
        size = lib.llama_state_seq_get_size(self.ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        n = lib.llama_state_seq_get_data(self.ctx, buf, size, seq)
        return bytes(buf[:n])

    def _close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
