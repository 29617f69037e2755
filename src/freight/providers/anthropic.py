"""Anthropic: Messages (sync) and Message Batches, through the official `anthropic` SDK.

The domain's `Request` is already in Anthropic's shape (content blocks, system, stop_sequences, tools), so the one
request builder, `params()`, is mostly a copy; what it adds is the structured-output request (`output_config.format`,
the SDK's own parameter for a JSON schema).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import anthropic
import httpx2
from anthropic.types import Message
from anthropic.types.messages import MessageBatch

from freight.domain import (
    CUSTOM_ID_PATTERN,
    Batch,
    BatchState,
    Canceled,
    Errored,
    ErrorKind,
    Expired,
    FreightError,
    Request,
    RequestCounts,
    Result,
    StopReason,
    Succeeded,
    Usage,
)
from freight.providers.common import (
    Line,
    check_ended,
    correlate,
    decode_lines,
    line_key,
    parse_json,
    refuse_for_batch,
    retry_after,
    with_overflow,
)
from freight.providers.protocol import Limits, Provider, ProviderError, TokenCount
from freight.providers.retry import RetryPolicy, call_with_retry, stream_with_retry

# --- errors -----------------------------------------------------------------------------------------------------

_KIND_BY_TYPE: dict[str, ErrorKind] = {
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "request_too_large": ErrorKind.INVALID_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "billing_error": ErrorKind.AUTH,  # an account problem: no retry fixes it until a human does
    "not_found_error": ErrorKind.NOT_FOUND,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "api_error": ErrorKind.SERVER_ERROR,
    "timeout_error": ErrorKind.TIMEOUT,
}

_KIND_BY_STATUS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTH,
    402: ErrorKind.AUTH,
    403: ErrorKind.AUTH,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    409: ErrorKind.SERVER_ERROR,  # a lock conflict on the provider's side; the SDK itself treats it as transient
    412: ErrorKind.INVALID_REQUEST,
    413: ErrorKind.INVALID_REQUEST,
    422: ErrorKind.INVALID_REQUEST,
    429: ErrorKind.RATE_LIMITED,
    431: ErrorKind.INVALID_REQUEST,
    499: ErrorKind.TIMEOUT,  # the connection was closed before the reply: the request itself may be fine
    501: ErrorKind.INVALID_REQUEST,  # not implemented: asking again will not implement it
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
    529: ErrorKind.OVERLOADED,
}

# `error.details.error_code`, the SDK's stable cause code, where the status alone would mislead: a 429 that is a spend
# limit is not cured by waiting, and an organization on hold is an account problem, not a bad request.
_KIND_BY_CODE: dict[str, ErrorKind] = {
    "contract_spend_limit_reached": ErrorKind.AUTH,
    "enforced_spend_limit_reached": ErrorKind.AUTH,
    "linked_organization_spend_limit_reached": ErrorKind.AUTH,
    "linked_organization_billing_unavailable": ErrorKind.AUTH,
    "organization_on_hold": ErrorKind.AUTH,
}

# Anthropic gives context overflow no code of its own: it is a 400 invalid_request_error whose message starts with
# this. This is the one place freight reads an Anthropic error message to decide a kind.
_CONTEXT_OVERFLOW_PREFIX = "prompt is too long"
_OVERFLOW_COUNTS = re.compile(r"(\d+)\s*tokens?\s*>\s*(\d+)")


def overflow_counts(message: str) -> tuple[int, int] | None:
    """(prompt tokens, window) from "prompt is too long: N tokens > M maximum", when it says."""
    m = _OVERFLOW_COUNTS.search(message)
    return (int(m.group(1)), int(m.group(2))) if m else None


def error_kind(status: int | None, error_type: str | None, message: str, code: str | None = None) -> ErrorKind:
    """Classify an Anthropic error by its code, HTTP status (None inside a batch result) and `error.type`."""
    if error_type == "invalid_request_error" and message.lower().startswith(_CONTEXT_OVERFLOW_PREFIX):
        return ErrorKind.CONTEXT_OVERFLOW
    if code and code in _KIND_BY_CODE:
        return _KIND_BY_CODE[code]
    if status is not None and status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    if error_type and error_type in _KIND_BY_TYPE:
        return _KIND_BY_TYPE[error_type]
    if status is not None and status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.UNKNOWN


def translate(exc: BaseException) -> ProviderError | None:
    """Every `anthropic` SDK exception → a `ProviderError` with its kind; None for anything that is not the SDK's."""
    if isinstance(exc, anthropic.APIStatusError):
        error_type = exc.type or ""
        message = exc.api_message or str(exc.message)
        kind = error_kind(exc.status_code, error_type, message, exc.error_code)
        return ProviderError(
            kind,
            f"anthropic: HTTP {exc.status_code} {error_type or 'error'}: {message}",
            raw_type=exc.error_code or error_type,
            status=exc.status_code,
            retry_after=retry_after(exc.response.headers),
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, "anthropic: the request timed out", raw_type="timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(
            ErrorKind.TIMEOUT, f"anthropic: connection failed ({exc.message}); check base_url", raw_type="connection"
        )
    if isinstance(exc, httpx2.TransportError):
        # Raised bare (not wrapped by the SDK) when a streamed body, such as a results file, breaks off midway.
        return ProviderError(
            ErrorKind.TIMEOUT, f"anthropic: the connection dropped ({type(exc).__name__})", raw_type="connection"
        )
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderError(
            ErrorKind.UNKNOWN, f"anthropic: unexpected response: {exc.message}", raw_type="response_validation"
        )
    if isinstance(exc, anthropic.CredentialsError):
        return ProviderError(ErrorKind.AUTH, f"anthropic: {exc}", raw_type="credentials")
    if isinstance(exc, anthropic.AnthropicError):
        return ProviderError(ErrorKind.UNKNOWN, f"anthropic: {exc}", raw_type=type(exc).__name__)
    return None


# --- responses --------------------------------------------------------------------------------------------------

_STOP: dict[str, StopReason] = {
    "end_turn": StopReason.END,
    "pause_turn": StopReason.END,
    "max_tokens": StopReason.MAX_TOKENS,
    # The model ran out of room in its context window mid-reply: as truncated as hitting max_tokens.
    "model_context_window_exceeded": StopReason.MAX_TOKENS,
    "stop_sequence": StopReason.STOP_SEQUENCE,
    "tool_use": StopReason.TOOL_USE,
}


def outcome_of_message(message: dict[str, Any], wants_json: bool) -> Succeeded | Errored:
    """A `message` object (sync reply, or inside a succeeded batch result) as a domain outcome."""
    text = "".join(str(b.get("text", "")) for b in message.get("content") or [] if b.get("type") == "text")
    u = message.get("usage") or {}
    usage = Usage(
        input_tokens=u.get("input_tokens") or 0,
        output_tokens=u.get("output_tokens") or 0,
        cache_write_tokens=u.get("cache_creation_input_tokens") or 0,
        cache_read_tokens=u.get("cache_read_input_tokens") or 0,
    )
    stop = message.get("stop_reason") or "end_turn"
    if stop == "refusal":
        # The model declined: there is no answer to validate, and sending it again unchanged will not help.
        return Errored(kind=ErrorKind.INVALID_REQUEST, raw_type="refusal", message=text, usage=usage)
    return Succeeded(
        text=text,
        parsed=parse_json(text) if wants_json else None,
        stop_reason=_STOP.get(stop, StopReason.END),
        usage=usage,
    )


def outcome_of_result(line: dict[str, Any]) -> Succeeded | Errored | Canceled | Expired:
    """One line of a Message Batch's results (`{"custom_id", "result": {...}}`) as a domain outcome."""
    result = line.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        # A results line does not say whether JSON was asked for; a reply that parses gets `parsed`, and the runner
        # validates it only where the request had a schema.
        return outcome_of_message(result.get("message") or {}, wants_json=True)
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or {}
        error_type = str(error.get("type") or "")
        message = str(error.get("message") or "")
        return Errored(kind=error_kind(None, error_type, message), raw_type=error_type, message=message)
    if kind == "canceled":
        return Canceled()
    if kind == "expired":
        return Expired()
    return Errored(kind=ErrorKind.UNKNOWN, raw_type=str(kind), message=f"unknown result type {kind!r}")


_BATCH_STATE = {"in_progress": BatchState.IN_PROGRESS, "canceling": BatchState.CANCELING, "ended": BatchState.ENDED}


def batch_of(b: MessageBatch) -> Batch:
    state = _BATCH_STATE.get(b.processing_status, BatchState.IN_PROGRESS)
    if state is BatchState.ENDED and b.cancel_initiated_at is not None:
        state = BatchState.CANCELED  # Anthropic reports a canceled batch as `ended`; its results are still there
    c = b.request_counts
    return Batch(
        provider="anthropic",
        provider_batch_id=b.id,
        state=state,
        counts=RequestCounts(
            processing=c.processing, succeeded=c.succeeded, errored=c.errored, canceled=c.canceled, expired=c.expired
        ),
        created_at=b.created_at,
        expires_at=b.expires_at,
        ended_at=b.ended_at,
    )


# --- the adapter ------------------------------------------------------------------------------------------------

_MiB = 1024 * 1024


class AnthropicProvider:
    name = "anthropic"
    key_env = "ANTHROPIC_API_KEY"
    limits = Limits(
        max_requests_per_batch=100_000,
        # 256 MB, less room for the `{"requests": [...]}` envelope and the SDK's own JSON spacing.
        max_bytes_per_batch=256 * _MiB - _MiB,
        custom_id_pattern=CUSTOM_ID_PATTERN,
        window_hours=24.0,
        context_window={
            "claude-opus-4-1": 200_000,
            "claude-opus-4-0": 200_000,
            "claude-sonnet-4-5": 200_000,
            "claude-sonnet-4-0": 200_000,
            "claude-haiku-4-5": 200_000,
            "claude-3-5-haiku-latest": 200_000,
        },
        max_output_tokens={
            "claude-opus-4-1": 32_000,
            "claude-opus-4-0": 32_000,
            "claude-sonnet-4-5": 64_000,
            "claude-sonnet-4-0": 64_000,
            "claude-haiku-4-5": 64_000,
            "claude-3-5-haiku-latest": 8_192,
        },
        default_context_window=200_000,
        default_max_output_tokens=8_192,
        batch_supports_tools=False,
        one_model_per_batch=False,
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
            raise FreightError(f"no Anthropic API key: set {self.key_env} (or pass api_key=...)")
        self.base_url = base_url
        self.retry = retry or RetryPolicy()
        # max_retries=0: retries belong to freight.providers.retry, so there is one policy, not two stacked.
        self._client = anthropic.Anthropic(
            api_key=key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http_client
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(base_url={self.base_url!r})"

    # The one request builder: `send` passes these to messages.create, `submit_batch` nests them under `params`.
    def params(self, request: Request) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [m.model_dump() for m in request.messages],
        }
        if request.system is not None:
            p["system"] = request.system
        # No `temperature`: the Messages API of anthropic SDK 2.10 has no sampling parameters (the SDK wins over the
        # spec; tests/providers/test_adapters.py fails when the SDK grows one back, so this can be revisited).
        if request.stop_sequences:
            p["stop_sequences"] = list(request.stop_sequences)
        if request.tools:
            p["tools"] = list(request.tools)
        if request.output_schema is not None:
            p["output_config"] = {"format": {"type": "json_schema", "schema": request.output_schema}}
        return p

    def batch_entry(self, request: Request) -> dict[str, Any]:
        return {"custom_id": request.custom_id, "params": self.params(request)}

    def request_bytes(self, request: Request) -> int:
        # +1 for the comma between entries in the request body.
        return len(json.dumps(self.batch_entry(request), separators=(",", ":")).encode()) + 1

    def count_tokens(self, request: Request) -> TokenCount:
        # The same builder as send and submit_batch, less what the counter does not take (it counts input only).
        p = {k: v for k, v in self.params(request).items() if k not in ("max_tokens", "stop_sequences")}
        counted = self._call(lambda: self._client.messages.count_tokens(**p))
        return TokenCount(input_tokens=counted.input_tokens, how="anthropic messages.count_tokens")

    def _call(self, fn: Any, *, idempotent: bool = True) -> Any:
        return call_with_retry(fn, translate, self.retry, idempotent=idempotent)

    def send(self, request: Request) -> Succeeded | Errored:
        params = self.params(request)
        try:
            message: Message = self._call(lambda: self._client.messages.create(**params))
        except ProviderError as err:
            if err.kind in (ErrorKind.INVALID_REQUEST, ErrorKind.CONTEXT_OVERFLOW):
                return with_overflow(Errored(kind=err.kind, raw_type=err.raw_type, message=str(err)), overflow_counts)
            raise
        return outcome_of_message(message.model_dump(), request.wants_json)

    def submit_batch(self, requests: Sequence[Request], ref: str | None = None) -> Batch:
        # Message Batches carry no metadata: `ref` cannot travel, find_batch matches by size and time instead.
        refuse_for_batch(requests, self.limits)
        entries = [self.batch_entry(r) for r in requests]
        created: MessageBatch = self._call(
            lambda: self._client.messages.batches.create(requests=entries),  # type: ignore[arg-type]
            idempotent=False,
        )
        return batch_of(created)

    def find_batches(self, ref: str, n_requests: int, since: datetime) -> list[Batch]:
        """Every batch of exactly `n_requests` created since `since` (with 10 minutes of slack for clock skew)."""
        floor = since - timedelta(minutes=10)
        found: list[Batch] = []
        page = self._call(lambda: self._client.messages.batches.list(limit=100))
        for b in page:
            if b.created_at < floor:
                break
            batch = batch_of(b)
            if batch.counts.total == n_requests:
                found.append(batch)
        return found

    def get_batch(self, batch_id: str) -> Batch:
        return batch_of(self._call(lambda: self._client.messages.batches.retrieve(batch_id)))

    def cancel_batch(self, batch_id: str) -> Batch:
        return batch_of(self._call(lambda: self._client.messages.batches.cancel(batch_id)))

    def iter_results(self, batch_id: str) -> Iterator[Result]:
        check_ended(self.get_batch(batch_id))

        def open_lines() -> Iterator[Line]:
            # The SDK's own decoder stops at the first line that is not JSON; reading the raw lines of its response
            # lets one broken line cost one request, not the rest of the file.
            decoder = self._client.messages.batches.results(batch_id)
            try:
                yield from decode_lines(decoder.http_response.iter_lines())
            finally:
                decoder.close()

        lines = stream_with_retry(open_lines, key=line_key, translate=translate, policy=self.retry)
        return correlate(lines, outcome_of_result, overflow_counts)


def _implements_the_protocol(adapter: AnthropicProvider) -> Provider:
    return adapter  # mypy --strict checks here that the adapter has every method of `Provider`, typed alike
