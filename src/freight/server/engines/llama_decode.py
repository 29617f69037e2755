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
import queue
import threading
from dataclasses import dataclass

from freight.server.engines.llama_cells import Continuations, Cut, Prefixes
from freight.server.engines.llama_model import PIECE_BUFFER, Job, Model, Sampling, _lib


@dataclass
class _Active:
    job: Job
    seq: int
    sampling: Sampling
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
            sampling = Sampling(self.model, job)
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

    def _resume(self, a: _Active, cut: Cut) -> None:
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
            tail = bytes(job.text[-(max(len(s.encode()) for s in job.stops) + PIECE_BUFFER) :])
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
