"""OpenAI: Chat Completions (sync) and Files + Batches, through the official `openai` SDK.

`body()` is the one request builder: `send` passes it to `chat.completions.create` as it is, and `submit_batch` puts
it in each input-file line. The shapes (messages, outcomes, errors) are in `openai_wire.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx2
import openai
from openai.types import Batch as OpenAIBatch

from freight.domain import (
    CUSTOM_ID_PATTERN,
    Batch,
    BatchState,
    Errored,
    ErrorKind,
    FreightError,
    Request,
    Result,
    Succeeded,
)
from freight.providers import openai_endpoints
from freight.providers.common import (
    Line,
    check_ended,
    correlate,
    decode_lines,
    line_key,
    refuse_for_batch,
    with_overflow,
)
from freight.providers.openai_webhooks import verify_batch_event
from freight.providers.openai_wire import (
    BATCH_STATE,
    ENDPOINT,
    batch_of,
    messages,
    missing_outcome,
    outcome_of_body,
    outcome_of_completion,
    outcome_of_line,
    overflow_counts,
    tool,
    translate,
)
from freight.providers.protocol import Limits, Provider, ProviderError, RequestRefused, TokenCount
from freight.providers.retry import RetryPolicy, call_with_retry, stream_with_retry

__all__ = ["OpenAIProvider", "translate", "outcome_of_line", "outcome_of_completion"]

# --- the adapter ------------------------------------------------------------------------------------------------

_MiB = 1024 * 1024


class OpenAIProvider:
    name = "openai"
    limits = Limits(
        max_requests_per_batch=50_000,
        max_bytes_per_batch=200 * _MiB,
        # OpenAI takes any string unique in the file; freight's own rule (the strictest provider's) is the one used.
        custom_id_pattern=CUSTOM_ID_PATTERN,
        window_hours=24.0,
        context_window={
            "gpt-4o": 128_000,
            "gpt-4o-mini": 128_000,
            "gpt-4.1": 1_047_576,
            "gpt-4.1-mini": 1_047_576,
            "gpt-4.1-nano": 1_047_576,
            # Embedding models: the input limit of one text (an input over it is split by the runner).
            "text-embedding-3-small": openai_endpoints.EMBEDDING_MAX_TOKENS,
            "text-embedding-3-large": openai_endpoints.EMBEDDING_MAX_TOKENS,
            "text-embedding-ada-002": openai_endpoints.EMBEDDING_MAX_TOKENS,
        },
        max_output_tokens={
            "gpt-4o": 16_384,
            "gpt-4o-mini": 16_384,
            "gpt-4.1": 32_768,
            "gpt-4.1-mini": 32_768,
            "gpt-4.1-nano": 32_768,
        },
        default_context_window=128_000,
        default_max_output_tokens=16_384,
        batch_supports_tools=False,
        one_model_per_batch=True,
    )

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 600.0,
        http_client: httpx2.Client | None = None,
    ) -> None:
        key = api_key or os.environ.get(self.key_env)
        if not key:
            raise FreightError(f"no {self.label} API key: set {self.key_env} (or pass api_key=...)")
        self.base_url = base_url
        self.retry = retry or RetryPolicy()
        self._client = self._make_client(key, base_url, timeout, http_client)

    # What a subclass for an OpenAI-compatible service (Azure) changes: its client, its endpoint, its name in errors.
    key_env = "OPENAI_API_KEY"
    # Verifies OpenAI's batch webhooks (`freight run --webhook-listen`); see providers/__init__.webhook_verifier.
    verify_webhook = staticmethod(verify_batch_event)
    label = "OpenAI"
    endpoint: str = ENDPOINT

    def _make_client(
        self, key: str, base_url: str | None, timeout: float, http_client: httpx2.Client | None
    ) -> openai.OpenAI:
        # max_retries=0: retries belong to freight.providers.retry, so there is one policy, not two stacked.
        return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http_client)

    def _translate(self, exc: BaseException) -> ProviderError | None:
        return translate(exc)

    def _batch(self, b: OpenAIBatch) -> Batch:
        return batch_of(b)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # The one request builder: `send` passes it to chat.completions.create, `submit_batch` puts it in each line.
    def body(self, request: Request) -> dict[str, Any]:
        if request.api == "responses":
            return openai_endpoints.responses_body(request)
        if request.api == "embeddings":
            return openai_endpoints.embeddings_body(request)
        if request.api == "completions":
            return openai_endpoints.completions_body(request)
        if request.api == "moderations":
            return openai_endpoints.moderations_body(request)
        b: dict[str, Any] = {
            "model": request.model,
            "messages": messages(request),
            "max_completion_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            b["temperature"] = request.temperature
        if request.stop_sequences:
            b["stop"] = list(request.stop_sequences)
        if request.tools:
            b["tools"] = [tool(t) for t in request.tools]
        if request.output_schema is not None:
            b["response_format"] = {
                "type": "json_schema",
                # Not `strict`: strict mode rejects many ordinary schemas; the runner validates the reply instead.
                "json_schema": {"name": "freight_output", "schema": request.output_schema},
            }
        return b

    def url(self, api: str) -> str:
        """The batch endpoint (and each line's `url`) of an API: /v1/embeddings here, /embeddings on Azure."""
        return self.endpoint.removesuffix(openai_endpoints.PATHS["chat"]) + openai_endpoints.PATHS[api]

    def batch_line(self, request: Request) -> dict[str, Any]:
        return {
            "custom_id": request.custom_id,
            "method": "POST",
            "url": self.url(request.api),
            "body": self.body(request),
        }

    def _encode_line(self, request: Request) -> bytes:
        return json.dumps(self.batch_line(request), separators=(",", ":")).encode() + b"\n"

    def request_bytes(self, request: Request) -> int:
        return len(self._encode_line(request))

    def count_tokens(self, request: Request) -> TokenCount:
        """By the Responses API's input-token counter (`responses.input_tokens.count`): Chat Completions has none, and
        the same messages, instructions and output format read the same to the model through either API."""
        kw: dict[str, Any] = {
            "model": request.model,
            "input": [{"role": m.role, "content": m.text()} for m in request.messages],
        }
        if request.system is not None:
            kw["instructions"] = request.system
        if request.output_schema is not None:
            kw["text"] = {"format": {"type": "json_schema", "name": "freight_output", "schema": request.output_schema}}
        counted = self._call(lambda: self._client.responses.input_tokens.count(**kw))
        return TokenCount(input_tokens=counted.input_tokens, how=f"{self.name} responses.input_tokens.count")

    def _call(self, fn: Any, *, idempotent: bool = True) -> Any:
        return call_with_retry(fn, self._translate, self.retry, idempotent=idempotent)

    def send(self, request: Request) -> Succeeded | Errored:
        body = self.body(request)
        apis: dict[str, Callable[..., Any]] = {
            "chat": self._client.chat.completions.create,
            "responses": self._client.responses.create,
            "embeddings": self._client.embeddings.create,
            "completions": self._client.completions.create,
            "moderations": self._client.moderations.create,
        }
        create = apis[request.api]
        try:
            reply = self._call(lambda: create(**body))
        except ProviderError as err:
            if err.kind in (ErrorKind.INVALID_REQUEST, ErrorKind.CONTEXT_OVERFLOW):
                return with_overflow(Errored(kind=err.kind, raw_type=err.raw_type, message=str(err)), overflow_counts)
            raise
        return outcome_of_body(reply.model_dump(), request.wants_json)

    def submit_batch(self, requests: Sequence[Request], ref: str | None = None) -> Batch:
        refuse_for_batch(requests, self.limits)
        api = requests[0].api
        for r in requests:
            if r.api != api:
                raise RequestRefused(
                    r.custom_id, f"its API {r.api!r} differs from the batch's {api!r}; a batch serves one"
                )
        data = b"".join(self._encode_line(r) for r in requests)
        # Uploading twice only leaves a spare file behind, so the upload retries even after a timeout.
        uploaded = self._call(
            lambda: self._client.files.create(file=("freight-batch.jsonl", data, "application/jsonl"), purpose="batch")
        )
        created: OpenAIBatch = self._call(
            lambda: self._client.batches.create(
                input_file_id=uploaded.id,
                endpoint=self.url(api),  # type: ignore[arg-type]
                completion_window="24h",
                metadata={"freight_ref": ref} if ref else None,
            ),
            idempotent=False,
        )
        return self._batch(created)

    def find_batches(self, ref: str, n_requests: int, since: datetime) -> list[Batch]:
        """The batch whose metadata carries `ref`, among those created since `since` (10 minutes of slack)."""
        floor = (since - timedelta(minutes=10)).timestamp()
        page = self._call(lambda: self._client.batches.list(limit=100))
        for b in page:
            if b.created_at < floor:
                break
            if (b.metadata or {}).get("freight_ref") == ref:
                return [self._batch(b)]
        return []

    def get_batch(self, batch_id: str) -> Batch:
        return self._batch(self._retrieve(batch_id))

    def _retrieve(self, batch_id: str) -> OpenAIBatch:
        batch: OpenAIBatch = self._call(lambda: self._client.batches.retrieve(batch_id))
        return batch

    def cancel_batch(self, batch_id: str) -> Batch:
        return self._batch(self._call(lambda: self._client.batches.cancel(batch_id)))

    def iter_results(self, batch_id: str) -> Iterator[Result]:
        batch = self._retrieve(batch_id)
        check_ended(self._batch(batch))
        file_ids = [f for f in (batch.output_file_id, batch.error_file_id) if f]

        def open_lines() -> Iterator[Line]:
            for file_id in file_ids:
                with self._client.files.with_streaming_response.content(file_id) as response:
                    yield from decode_lines(response.iter_lines())

        lines = stream_with_retry(open_lines, key=line_key, translate=self._translate, policy=self.retry)
        return self._and_the_missing(batch, correlate(lines, outcome_of_line, overflow_counts))

    def _and_the_missing(self, batch: OpenAIBatch, results: Iterator[Result]) -> Iterator[Result]:
        """Every request of the input file gets exactly one result, including those the service never read.

        A batch cancelled or failed while `validating` has no results files at all, so the custom_ids come from the
        input file; without this the runner would wait forever for requests that no file will ever mention.
        """
        seen: set[str] = set()
        for result in results:
            seen.add(result.custom_id)
            yield result
        total = batch.request_counts.total if batch.request_counts else 0
        if total and len(seen) >= total:
            return
        state = BATCH_STATE.get(batch.status, BatchState.IN_PROGRESS)
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        by_line = {e.line: e for e in errors if e.line is not None}
        for number, custom_id in self._input_ids(batch.input_file_id):
            if custom_id in seen:
                continue
            seen.add(custom_id)
            yield Result(custom_id=custom_id, outcome=missing_outcome(state, by_line.get(number)))

    def _input_ids(self, file_id: str) -> Iterator[tuple[int, str]]:
        def open_lines() -> Iterator[tuple[int, str]]:
            with self._client.files.with_streaming_response.content(file_id) as response:
                for number, text in enumerate(response.iter_lines(), start=1):
                    try:
                        custom_id = json.loads(text).get("custom_id") if text.strip() else None
                    except (ValueError, AttributeError):
                        custom_id = None
                    if isinstance(custom_id, str):
                        yield number, custom_id

        return stream_with_retry(open_lines, key=lambda item: item[1], translate=self._translate, policy=self.retry)


def _implements_the_protocol(adapter: OpenAIProvider) -> Provider:
    return adapter  # mypy --strict checks here that the adapter has every method of `Provider`, typed alike
