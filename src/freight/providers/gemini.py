"""Gemini (Developer API): `generateContent` (sync) and batch mode, through the official `google-genai` SDK.

`contents()` and `config()` (in `gemini_wire.py`) are the one request builder: `send` passes them to
`models.generate_content`, an inline batch passes them per request, and a file batch writes their JSON form. A batch
goes inline while its body stays under `inline_max_bytes` (the API takes 20 MB inline), else as an uploaded JSONL
file (up to 2 GB); results come back the same way. Gemini keeps no metadata on a batch but its `display_name`: freight
puts the caller's `ref` there.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx2
from google import genai
from google.genai import types

from freight.domain import (
    CUSTOM_ID_PATTERN,
    Batch,
    Errored,
    ErrorKind,
    FreightError,
    Request,
    RequestCounts,
    Result,
    Succeeded,
)
from freight.providers.common import check_ended, correlate, decode_lines, line_key, refuse_for_batch, with_overflow
from freight.providers.gemini_wire import (
    EMBEDDING_MAX_TOKENS,
    batch_of,
    config,
    contents,
    counts_of,
    embed_config,
    embed_request,
    outcome_of_embeddings,
    outcome_of_item,
    outcome_of_line,
    outcome_of_response,
    overflow_counts,
    state_of,
    translate,
    wire_request,
)
from freight.providers.protocol import Limits, Provider, ProviderError, TokenCount
from freight.providers.retry import RetryPolicy, call_with_retry, stream_with_retry

__all__ = ["GeminiProvider", "translate"]

_MiB = 1024 * 1024
INLINE_MAX_BYTES = 19 * _MiB  # under the API's 20 MB inline limit, with room for the envelope


class GeminiProvider:
    name = "gemini"
    key_env = "GEMINI_API_KEY"  # GOOGLE_API_KEY is read too, as the SDK does
    limits = Limits(
        # Gemini counts bytes, not requests: 2 GB per input file. The request cap here only bounds one job's work.
        max_requests_per_batch=100_000,
        max_bytes_per_batch=2 * 1024 * _MiB,
        # Gemini's `key` is any string; freight's strictest rule (Anthropic's) is the one used.
        custom_id_pattern=CUSTOM_ID_PATTERN,
        window_hours=48.0,
        context_window={
            "gemini-2.5-pro": 1_048_576,
            "gemini-2.5-flash": 1_048_576,
            "gemini-2.5-flash-lite": 1_048_576,
            "gemini-2.0-flash": 1_048_576,
            "gemini-2.0-flash-lite": 1_048_576,
            "gemini-embedding-001": EMBEDDING_MAX_TOKENS,  # one input's limit: a longer document is split
        },
        max_output_tokens={"gemini-2.5-pro": 65_536, "gemini-2.5-flash": 65_536, "gemini-2.5-flash-lite": 65_536},
        default_context_window=1_048_576,
        default_max_output_tokens=8_192,
        batch_supports_tools=False,
        one_model_per_batch=True,  # a batch job names one model
    )

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 600.0,
        http_client: httpx2.Client | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ) -> None:
        key = api_key or os.environ.get(self.key_env) or os.environ.get("GOOGLE_API_KEY")
        if not key:
            raise FreightError(f"no Gemini API key: set {self.key_env} (or pass api_key=...)")
        self.base_url = base_url
        self.retry = retry or RetryPolicy()
        self.inline_max_bytes = inline_max_bytes
        # No retry_options: the SDK then tries once, and retries belong to freight.providers.retry alone.
        options = types.HttpOptions(base_url=base_url, timeout=int(timeout * 1000), httpx_client=http_client)
        self._client = genai.Client(api_key=key, http_options=options)

    def __repr__(self) -> str:
        return f"GeminiProvider(base_url={self.base_url!r})"

    def _call(self, fn: Any, *, idempotent: bool = True) -> Any:
        return call_with_retry(fn, translate, self.retry, idempotent=idempotent)

    def _line(self, request: Request) -> bytes:
        body = embed_request(request) if request.api == "embeddings" else wire_request(request)
        line = {"key": request.custom_id, "request": body}
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"

    def request_bytes(self, request: Request) -> int:
        return len(self._line(request))

    def send(self, request: Request) -> Succeeded | Errored:
        if request.api == "embeddings":
            return self._embed(request)
        body, cfg = contents(request), types.GenerateContentConfig(**config(request))
        try:
            response = self._call(
                lambda: self._client.models.generate_content(model=request.model, contents=body, config=cfg)
            )
        except ProviderError as err:
            if err.kind in (ErrorKind.INVALID_REQUEST, ErrorKind.CONTEXT_OVERFLOW):
                return with_overflow(Errored(kind=err.kind, raw_type=err.raw_type, message=str(err)), overflow_counts)
            raise
        return outcome_of_response(response, request.wants_json)

    def count_tokens(self, request: Request) -> TokenCount:
        """By `models.count_tokens`. The Gemini Developer API's counter takes no system instruction (the SDK refuses
        one), so the system prompt is counted as a leading user turn: the same text, within a few template tokens."""
        body = contents(request)
        if request.system is not None:
            body = [{"role": "user", "parts": [{"text": request.system}]}, *body]
        counted = self._call(lambda: self._client.models.count_tokens(model=request.model, contents=body))
        return TokenCount(input_tokens=counted.total_tokens or 0, how="gemini models.count_tokens")

    def _embed(self, request: Request) -> Succeeded | Errored:
        cfg = embed_config(request)
        try:
            response = self._call(
                lambda: self._client.models.embed_content(
                    model=request.model, contents=[m.text() for m in request.messages], config=cfg
                )
            )
        except ProviderError as err:
            if err.kind in (ErrorKind.INVALID_REQUEST, ErrorKind.CONTEXT_OVERFLOW):
                return with_overflow(Errored(kind=err.kind, raw_type=err.raw_type, message=str(err)), overflow_counts)
            raise
        return outcome_of_embeddings(response)

    def submit_batch(self, requests: Sequence[Request], ref: str | None = None) -> Batch:
        refuse_for_batch(requests, self.limits)
        lines = [self._line(r) for r in requests]
        job_config = types.CreateBatchJobConfig(display_name=ref or "freight")
        model = requests[0].model
        if requests[0].api == "embeddings":
            # Always a file: inline embedding requests carry no key, and a key is how results are correlated.
            file_name = self._upload(b"".join(lines), ref)
            job = self._call(lambda: self._create_embeddings(model, file_name, ref), idempotent=False)
            return batch_of(job, RequestCounts(processing=len(requests)), self.limits.window_hours)
        if sum(len(x) for x in lines) <= self.inline_max_bytes:
            src: Any = [
                {"contents": contents(r), "config": config(r), "metadata": {"key": r.custom_id}} for r in requests
            ]
        else:
            data = b"".join(lines)
            # Uploading twice only leaves a spare file behind, so the upload retries even after a timeout.
            uploaded = self._call(
                lambda: self._client.files.upload(
                    file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": ref or "freight"}
                )
            )
            src = uploaded.name
        job = self._call(lambda: self._client.batches.create(model=model, src=src, config=job_config), idempotent=False)
        return batch_of(job, RequestCounts(processing=len(requests)), self.limits.window_hours)

    def _upload(self, data: bytes, ref: str | None) -> str:
        uploaded = self._call(
            lambda: self._client.files.upload(
                file=io.BytesIO(data), config={"mime_type": "jsonl", "display_name": ref or "freight"}
            )
        )
        return str(uploaded.name)

    def _create_embeddings(self, model: str, file_name: str, ref: str | None) -> types.BatchJob:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK marks create_embeddings experimental on every call
            job: types.BatchJob = self._client.batches.create_embeddings(
                model=model, src={"file_name": file_name}, config={"display_name": ref or "freight"}
            )
        return job

    def find_batches(self, ref: str, n_requests: int, since: datetime) -> list[Batch]:
        """The batch whose display_name is `ref`, among those created since `since` (10 minutes of slack)."""
        floor = since - timedelta(minutes=10)
        pager = self._call(lambda: self._client.batches.list(config={"page_size": 100}))
        for job in pager:
            if job.create_time is not None and job.create_time < floor:
                break
            if job.display_name == ref:
                return [self._batch(job)]
        return []

    @staticmethod
    def _name(batch_id: str) -> str:
        return batch_id if batch_id.startswith("batches/") else f"batches/{batch_id}"

    def _get(self, batch_id: str) -> types.BatchJob:
        job: types.BatchJob = self._call(lambda: self._client.batches.get(name=self._name(batch_id)))
        return job

    def _batch(self, job: types.BatchJob) -> Batch:
        """The SDK (3.3) drops Gemini's batchStats, so counts are known only once a batch has ended with inline
        results, which come with the batch itself. A results file is not downloaded just to count it: those stay 0."""
        counts = RequestCounts()
        if state_of(job).terminal and job.dest is not None and job.dest.inlined_responses is not None:
            counts = counts_of([r.outcome for r in self._results(job)])
        return batch_of(job, counts, self.limits.window_hours)

    def get_batch(self, batch_id: str) -> Batch:
        return self._batch(self._get(batch_id))

    def cancel_batch(self, batch_id: str) -> Batch:
        self._call(lambda: self._client.batches.cancel(name=self._name(batch_id)))
        return self.get_batch(batch_id)

    def iter_results(self, batch_id: str) -> Iterator[Result]:
        job = self._get(batch_id)
        check_ended(batch_of(job, RequestCounts(), self.limits.window_hours))
        return self._results(job)

    def _results(self, job: types.BatchJob) -> Iterator[Result]:
        """Results inline or from the responses file. A failed job has none: the runner counts its requests as
        never answered."""
        dest = job.dest
        if dest is not None and dest.inlined_responses is not None:
            return iter(
                Result(
                    custom_id=(item.metadata or {}).get("key", ""),
                    outcome=with_overflow(outcome_of_item(item), overflow_counts),
                )
                for item in dest.inlined_responses
            )
        if dest is None or not dest.file_name:
            return iter(())
        file_name = dest.file_name

        def open_lines() -> Iterator[tuple[str, dict[str, Any] | None]]:
            data: bytes = self._client.files.download(file=file_name)
            yield from decode_lines(data.split(b"\n"), id_field="key")

        lines = stream_with_retry(open_lines, key=line_key, translate=translate, policy=self.retry)
        return correlate(lines, outcome_of_line, overflow_counts)


def _implements_the_protocol(adapter: GeminiProvider) -> Provider:
    return adapter  # mypy --strict checks here that the adapter has every method of `Provider`, typed alike
