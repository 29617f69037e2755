"""The local engine: a GGUF model run by llama.cpp inside the server process, on CPU, offline.

The model is loaded once per process; requests are decoded by llama.cpp contexts (engines/llama_decode.py) that all
take work from one queue. Two layouts, measured by bench/engine.py (docs/engines.md has the figures): `per-core`
(default): one single-threaded context per core; `shared`: one context using every core's thread. Each context
decodes up to `slots` requests together (8 by default) in slots of SLOT_WINDOW tokens; a request that needs more is
decoded in one single-sequence context with the model's whole window, made when the first such request comes.

What a request gets: its system prompt and messages through the model's own chat template; max_tokens (stop reason
max_tokens); stop sequences (stop reason stop_sequence, the sequence cut from the text like the providers do);
temperature (default 0.2, llama-cpp-python's chat default: a 135M model at 1.0 rambles); a JSON Schema enforced by a
compact grammar (engines/grammar.py); the model's real context window with the prompt counted by its own tokenizer;
real token counts.

The same reply every time: the sampling seed of a request is derived from the engine's seed and the request's content
(so the same request sent twice, sync or in a batch, any custom_id, gets the same reply, and `--seed` changes every
reply), and every request starts from a fresh state - its own sequence, sampler and grammar - on the same thread
layout, whatever the engine served before or alongside it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
from pathlib import Path
from typing import Any, Literal

from freight.domain import Errored, ErrorKind, FreightError, Request, StopReason, Succeeded, Usage
from freight.server.engines import modelfiles, reencode
from freight.server.engines.grammar import gbnf_for

DEFAULT_TEMPERATURE = 0.0
INSTALL_HINT = (
    "the local engine needs llama-cpp-python: run `pip install 'freight[local]'` (it compiles llama.cpp: a few "
    'minutes; CMAKE_ARGS="-DLLAVA_BUILD=OFF" shortens it), or choose another engine (--engine scripted|forward)'
)
# For a GGUF file without a chat template: ChatML, the format most small instruct models are tuned on.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_JSON_FIELDS = ("model", "messages", "max_tokens", "system", "temperature", "stop_sequences", "output_schema")


def import_llama_cpp() -> Any:
    """llama_cpp, imported only when the local engine is chosen; a clear instruction when it is missing."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise FreightError(INSTALL_HINT) from exc
    return llama_cpp


def request_seed(engine_seed: int, request: Request) -> int:
    content = request.model_dump_json(include=set(_JSON_FIELDS))
    return int.from_bytes(hashlib.sha256(f"{engine_seed}:{content}".encode()).digest()[:4], "big")


Layout = Literal["per-core", "shared"]
# Sequences each context decodes together: the weights are read once per step for all of them (docs/engines.md has
# the figures). Replies are the same as decoded alone: a prompt is always decoded by itself (llama_decode.py).
DEFAULT_SLOTS = 8
# The tokens (prompt + max_tokens) one slot of a batched context holds. Each slot's KV cells are allocated up front
# (about 23 KB a token for SmolLM2), so slots hold a short window and a request that needs more goes to one
# single-sequence context with the model's whole window, made when the first such request comes. Which context
# answers depends on the request alone, so the same request always takes the same path.
SLOT_WINDOW = 2048


class LocalEngine:
    name = "local"

    def __init__(
        self,
        seed: int = 0,
        model_path: str | Path | None = None,
        model_sha256: str | None = None,
        workers: int | None = None,
        pool: Layout = "per-core",
        n_ctx: int = 0,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        lib = import_llama_cpp()
        from freight.server.engines.llama_cells import Continuations, Prefixes
        from freight.server.engines.llama_decode import Context
        from freight.server.engines.llama_model import Job, Model

        self.seed = seed
        self.model = modelfiles.resolve(model_path, model_sha256)
        self.model_name = self.model.name
        self._llm = Model(reencode.loadable(self.model, modelfiles.cache_folder(), lib))
        cores = os.cpu_count() or 1
        # per-core: one single-threaded context per core. shared: one context with every core's thread.
        contexts = max(1, min(workers or cores, cores)) if pool == "per-core" else 1
        threads = 1 if pool == "per-core" else cores
        per_context = max(1, slots)
        self.pool_kind = pool
        self.workers = contexts * per_context  # requests decoded at once
        self._n_ctx: int = n_ctx or self._llm.n_ctx_train
        window = min(self._n_ctx, SLOT_WINDOW) if per_context > 1 else self._n_ctx
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._Job = Job
        self._Context = Context
        self._threads = threads if pool == "shared" else 1
        # Created one after the other: llama.cpp's backend initialization is process-global and not meant to race.
        peers: list[Any] = []
        self._continuations = Continuations()
        self._prefixes = Prefixes()
        self._contexts = [
            Context(self._llm, self._jobs, slots=per_context, threads=threads, n_ctx_seq=window, n_batch=512,
                    peers=peers, continuations=self._continuations, prefixes=self._prefixes)
            for _ in range(contexts)
        ]  # fmt: skip
        self._slot_window: int = self._contexts[0].n_ctx_seq
        if self._slot_window >= self._n_ctx:
            self._n_ctx = self._slot_window
        self._long_jobs: queue.Queue[Job | None] = queue.Queue()
        self._long: Any = None  # the single-sequence context with the whole window, made at the first long request
        self._long_lock = threading.Lock()
        self._formatter = self._chat_formatter()
        self._embedder: Any = None  # engines/llama_embed.Embedder, made at the first embeddings request
        self._embedder_lock = threading.Lock()

    def _queue_for(self, prompt_tokens: int, max_tokens: int) -> queue.Queue[Any]:
        """The slots' queue when the request fits a slot's window, else the long context's (made on first use)."""
        if prompt_tokens + max_tokens <= self._slot_window:
            return self._jobs
        with self._long_lock:
            if self._long is None:
                self._long = self._Context(
                    self._llm,
                    self._long_jobs,
                    slots=1,
                    threads=self._threads,
                    n_ctx_seq=self._n_ctx,
                    n_batch=512,
                    continuations=self._continuations,
                    prefixes=self._prefixes,
                )
        return self._long_jobs

    def _chat_formatter(self) -> Any:
        import llama_cpp

        return llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=self._llm.chat_template or _CHATML,
            eos_token=self._llm.token_text(self._llm.eos()),
            bos_token=self._llm.token_text(self._llm.bos()),
        )

    def context_window(self, model: str) -> int:
        # Any model name is answered by the loaded model, so its window is the one that applies.
        return self._n_ctx

    def prompt_tokens(self, request: Request) -> list[int]:
        """The request as the model reads it: rendered by its chat template, counted by its tokenizer."""
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role, "content": m.text()} for m in request.messages]
        prompt = self._formatter(messages=messages).prompt
        # The template writes the special tokens itself (added_special), as llama-cpp-python's chat handler does.
        return self._llm.tokenize(prompt)

    def count_tokens(self, request: Request) -> int:
        """What the counting endpoints answer: the prompt as the model reads it, by its own tokenizer."""
        return len(self.prompt_tokens(request))

    def complete(self, request: Request) -> Succeeded | Errored:
        tokens = self.prompt_tokens(request)
        # llama.cpp needs room for at least one generated token.
        maximum = self._n_ctx - 1
        if len(tokens) > maximum:
            return Errored(
                kind=ErrorKind.CONTEXT_OVERFLOW,
                message=f"prompt is too long: {len(tokens)} tokens > {maximum} maximum",
            )
        stops = [s for s in request.stop_sequences if s]
        try:
            grammar = None if request.output_schema is None else gbnf_for(json.dumps(request.output_schema))
        except (ValueError, AssertionError, KeyError, TypeError) as exc:  # a schema the converter cannot express
            return Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="llama_cpp", message=f"JSON Schema: {exc}")
        job = self._Job(
            prompt=tokens,
            max_tokens=request.max_tokens,
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            seed=request_seed(self.seed, request),
            grammar=grammar,
            stops=stops,
        )
        self._queue_for(len(tokens), request.max_tokens).put(job)
        try:
            done = job.result.result()
        except ValueError as exc:  # a grammar llama.cpp refuses
            return Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="llama_cpp", message=str(exc))
        except RuntimeError as exc:  # llama_decode failed (out of memory)
            return Errored(kind=ErrorKind.SERVER_ERROR, raw_type="llama_cpp", message=str(exc))
        return _outcome(request, done, len(tokens), stops)

    def embed(self, inputs: list[str], dimensions: int | None) -> Succeeded | Errored:
        """The model's own embeddings of `inputs` (engines/llama_embed.py): `parsed` the list of vectors.
        `dimensions` below the model's size keeps the first numbers, renormalized (as text-embedding-3 shortens)."""
        embedder = self._embeddings_context()
        if dimensions is not None and dimensions > embedder.dims:
            return Errored(
                kind=ErrorKind.INVALID_REQUEST,
                message=f"dimensions: the local model's embeddings have {embedder.dims} numbers; ask for at most that",
            )
        tokenized = [embedder.tokens(t) for t in inputs]
        for tokens in tokenized:
            if len(tokens) > embedder.max_tokens:
                return Errored(
                    kind=ErrorKind.CONTEXT_OVERFLOW,
                    message=f"prompt is too long: {len(tokens)} tokens > {embedder.max_tokens} maximum",
                )
        try:
            vectors = [embedder.embed(tokens) if tokens else [0.0] * embedder.dims for tokens in tokenized]
        except RuntimeError as exc:  # llama_decode failed (out of memory)
            return Errored(kind=ErrorKind.SERVER_ERROR, raw_type="llama_cpp", message=str(exc))
        if dimensions is not None and dimensions < embedder.dims:
            vectors = [_unit(v[:dimensions]) for v in vectors]
        return Succeeded(text="", parsed=vectors, usage=Usage(input_tokens=sum(len(t) for t in tokenized)))

    def _embeddings_context(self) -> Any:
        with self._embedder_lock:
            if self._embedder is None:
                from freight.server.engines.llama_embed import Embedder

                self._embedder = Embedder(self._llm, threads=self._threads)
            return self._embedder

    def close(self) -> None:
        """Let the contexts finish what they run and free them (the server calls it at shutdown, if it does)."""
        for _ in self._contexts:
            self._jobs.put(None)
        contexts = list(self._contexts)
        if self._long is not None:
            self._long_jobs.put(None)
            contexts.append(self._long)
        for context in contexts:
            context.join(timeout=30)
        if self._embedder is not None:
            self._embedder.close()


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def _outcome(request: Request, job: Any, prompt_tokens: int, stops: list[str]) -> Succeeded:
    text = bytes(job.text).decode("utf-8", errors="replace")
    stop_reason = {"length": StopReason.MAX_TOKENS}.get(job.finish, StopReason.END)
    cuts = [text.index(s) for s in stops if s in text]
    if cuts:
        text, stop_reason = text[: min(cuts)], StopReason.STOP_SEQUENCE
    parsed: Any = None
    if request.output_schema is not None and stop_reason is StopReason.END:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
    return Succeeded(
        text=text,
        parsed=parsed,
        stop_reason=stop_reason,
        usage=Usage(input_tokens=prompt_tokens, output_tokens=len(job.tokens)),
    )
