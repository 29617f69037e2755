"""The local engine: a GGUF model run by llama.cpp inside the server process, on CPU, offline.

The model is loaded once per process. A llama.cpp context is not thread-safe, so the engine keeps a small pool of
`Llama` instances (the weights are memory-mapped, so instances share them; each has its own KV cache) and each request
borrows one. `pool="per-worker"` (default) loads one instance per worker with the cores split between them;
`pool="shared"` loads one instance using every core behind a lock. docs/engines.md has the measurement behind the
default.

What a request gets: its system prompt and messages through the model's own chat template; max_tokens (stop reason
max_tokens); stop sequences (stop reason stop_sequence, the sequence cut from the text like the providers do);
temperature (default 0.2, llama-cpp-python's chat default: a 135M model at 1.0 rambles); a JSON Schema enforced by a
grammar; the model's real context window with the prompt counted by its own tokenizer; real token counts.

The sampling seed of a request is derived from the engine's seed and the request's content, so the same request sent
twice (sync or in a batch, any custom_id) gets the same reply, and `--seed` changes every reply.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from freight.domain import Errored, ErrorKind, FreightError, Request, StopReason, Succeeded, Usage
from freight.server.engines import modelfiles

if TYPE_CHECKING:
    from llama_cpp import Llama

DEFAULT_TEMPERATURE = 0.2
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


@lru_cache(maxsize=64)
def _grammar(schema_json: str) -> Any:
    # Converting a schema to a GBNF grammar takes a few milliseconds; a job sends the same schema thousands of times.
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema_json, verbose=False)


def request_seed(engine_seed: int, request: Request) -> int:
    content = request.model_dump_json(include=set(_JSON_FIELDS))
    return int.from_bytes(hashlib.sha256(f"{engine_seed}:{content}".encode()).digest()[:4], "big")


class _StopWatch:
    """A llama.cpp stopping criterion that ends generation once a stop sequence appears in the generated text.

    llama-cpp-python reports a stop sequence and the end-of-turn token both as finish_reason "stop"; the providers tell
    them apart (stop_sequence vs end_turn), so the engine finds stop sequences itself and cuts the text afterwards.
    Only the tail of the output is decoded at each step: a stop sequence of n characters spans at most n tokens.
    """

    def __init__(self, llm: Llama, prompt_len: int, stops: list[str]) -> None:
        self.llm = llm
        self.prompt_len = prompt_len
        self.stops = stops
        self.tail = max(len(s) for s in stops) + 2

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        generated = list(input_ids[self.prompt_len :])
        if not generated:
            return False
        text = self.llm.detokenize(generated[-self.tail :]).decode("utf-8", errors="ignore")
        return any(s in text for s in self.stops)


class LocalEngine:
    name = "local"

    def __init__(
        self,
        seed: int = 0,
        model_path: str | Path | None = None,
        model_sha256: str | None = None,
        workers: int | None = None,
        pool: Literal["per-worker", "shared"] = "per-worker",
        n_ctx: int = 0,
    ) -> None:
        llama_cpp = import_llama_cpp()
        self.seed = seed
        self.model = modelfiles.resolve(model_path, model_sha256)
        self.model_name = self.model.name
        cores = os.cpu_count() or 1
        count = 1 if pool == "shared" else max(1, min(workers or cores, cores))
        threads = max(1, cores // count)
        self.workers = count
        self.pool_kind = pool
        self._free: queue.Queue[Llama] = queue.Queue()
        # Loading is sequential: llama.cpp's backend initialization is process-global and not meant to race.
        for _ in range(count):
            llm = llama_cpp.Llama(
                model_path=str(self.model.path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed,
                verbose=False,
            )
            self._free.put(llm)
        first = self._free.queue[0]
        self._n_ctx: int = first.n_ctx()
        self._formatter = self._chat_formatter(first, llama_cpp)

    @staticmethod
    def _chat_formatter(llm: Llama, llama_cpp: Any) -> Any:
        def token_text(token_id: int) -> str:
            return str(llm._model.token_get_text(token_id)) if token_id != -1 else ""

        return llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=llm.metadata.get("tokenizer.chat_template") or _CHATML,
            eos_token=token_text(llm.token_eos()),
            bos_token=token_text(llm.token_bos()),
        )

    def context_window(self, model: str) -> int:
        # Any model name is answered by the loaded model, so its window is the one that applies.
        return self._n_ctx

    @contextmanager
    def _borrow(self) -> Iterator[Llama]:
        llm = self._free.get()
        try:
            yield llm
        finally:
            self._free.put(llm)

    def prompt_tokens(self, llm: Llama, request: Request) -> list[int]:
        """The request as the model reads it: rendered by its chat template, counted by its tokenizer."""
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": m.role, "content": m.text()} for m in request.messages]
        prompt = self._formatter(messages=messages).prompt
        # The template writes the special tokens itself (added_special), as llama-cpp-python's chat handler does.
        return list(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def complete(self, request: Request) -> Succeeded | Errored:
        with self._borrow() as llm:
            tokens = self.prompt_tokens(llm, request)
            # llama.cpp needs room for at least one generated token.
            maximum = self._n_ctx - 1
            if len(tokens) > maximum:
                return Errored(
                    kind=ErrorKind.CONTEXT_OVERFLOW,
                    message=f"prompt is too long: {len(tokens)} tokens > {maximum} maximum",
                )
            try:
                return self._generate(llm, request, tokens)
            except ValueError as exc:  # a schema the grammar converter cannot express, a bad parameter
                return Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="llama_cpp", message=str(exc))
            except RuntimeError as exc:  # llama_decode failed (out of KV cache, out of memory)
                return Errored(kind=ErrorKind.SERVER_ERROR, raw_type="llama_cpp", message=str(exc))

    def _generate(self, llm: Llama, request: Request, tokens: list[int]) -> Succeeded:
        from llama_cpp import StoppingCriteriaList

        stops = [s for s in request.stop_sequences if s]
        grammar = None
        if request.output_schema is not None:
            # Not sort_keys: the grammar writes properties in schema order, and that order guides a small model.
            grammar = _grammar(json.dumps(request.output_schema))
        result: Any = llm.create_completion(
            prompt=tokens,
            max_tokens=request.max_tokens,
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            seed=request_seed(self.seed, request),
            grammar=grammar,
            stopping_criteria=StoppingCriteriaList([_StopWatch(llm, len(tokens), stops)]) if stops else None,
        )
        choice = result["choices"][0]
        text: str = choice["text"]
        stop_reason = StopReason.MAX_TOKENS if choice["finish_reason"] == "length" else StopReason.END
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
            usage=Usage(input_tokens=len(tokens), output_tokens=int(result["usage"]["completion_tokens"])),
        )
