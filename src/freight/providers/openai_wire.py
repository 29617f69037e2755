"""OpenAI's shapes: the Chat Completions body built from a domain `Request`, and errors, completions, results lines
and batches turned back into domain types. Pure functions; the calls themselves are in `openai.py`.

The domain's messages are in Anthropic's shape (a separate system prompt, content blocks, tool_use / tool_result);
`messages()` and `tool()` translate them into Chat Completions messages and function tools.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Final

import httpx2
import openai
from openai.types import Batch as OpenAIBatch
from openai.types import BatchError

from freight.domain import (
    Batch,
    BatchState,
    Canceled,
    Errored,
    ErrorKind,
    Expired,
    Message,
    Request,
    RequestCounts,
    StopReason,
    Succeeded,
    Usage,
)
from freight.providers import openai_endpoints
from freight.providers.common import parse_json, retry_after
from freight.providers.protocol import ProviderError

ENDPOINT: Final = "/v1/chat/completions"

# --- errors -----------------------------------------------------------------------------------------------------

# Codes decide before status: they name the cause (context overflow and an exhausted quota are both a 4xx whose
# status alone says too little).
_KIND_BY_CODE: dict[str, ErrorKind] = {
    "context_length_exceeded": ErrorKind.CONTEXT_OVERFLOW,
    # A 429 that no waiting fixes: the account is out of credit.
    "insufficient_quota": ErrorKind.AUTH,
    "invalid_api_key": ErrorKind.AUTH,
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,
    "model_not_found": ErrorKind.NOT_FOUND,
    "server_error": ErrorKind.SERVER_ERROR,
}

_KIND_BY_STATUS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTH,
    403: ErrorKind.AUTH,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    409: ErrorKind.SERVER_ERROR,  # a lock conflict on OpenAI's side; the SDK itself treats it as transient
    413: ErrorKind.INVALID_REQUEST,
    422: ErrorKind.INVALID_REQUEST,
    429: ErrorKind.RATE_LIMITED,
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
    529: ErrorKind.OVERLOADED,
}

# For error objects that come without an HTTP status (inside a batch's error file without a response).
_KIND_BY_TYPE: dict[str, ErrorKind] = {
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "not_found_error": ErrorKind.NOT_FOUND,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "server_error": ErrorKind.SERVER_ERROR,
    "overloaded_error": ErrorKind.OVERLOADED,
    "timeout_error": ErrorKind.TIMEOUT,
}


_OVERFLOW_COUNTS = re.compile(r"maximum context length is (\d+) tokens.*?resulted in (\d+) tokens", re.S)


def overflow_counts(message: str) -> tuple[int, int] | None:
    """(prompt tokens, window) from "maximum context length is M tokens. However, your messages resulted in N
    tokens", when it says."""
    m = _OVERFLOW_COUNTS.search(message)
    return (int(m.group(2)), int(m.group(1))) if m else None


def error_kind(status: int | None, error_type: str | None, code: str | None) -> ErrorKind:
    """Classify an OpenAI error by `error.code`, then HTTP status, then `error.type` — never by its message."""
    if code and code in _KIND_BY_CODE:
        return _KIND_BY_CODE[code]
    if status is not None and status in _KIND_BY_STATUS:
        return _KIND_BY_STATUS[status]
    if status is not None and status >= 500:
        return ErrorKind.SERVER_ERROR
    if error_type and error_type in _KIND_BY_TYPE:
        return _KIND_BY_TYPE[error_type]
    return ErrorKind.UNKNOWN


def _api_message(body: object, fallback: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return fallback


def translate(exc: BaseException) -> ProviderError | None:
    """Every `openai` SDK exception → a `ProviderError` with its kind; None for anything that is not the SDK's."""
    if isinstance(exc, openai.APIStatusError):
        raw = exc.code or exc.type or ""
        message = _api_message(exc.body, exc.message)
        return ProviderError(
            error_kind(exc.status_code, exc.type, exc.code),
            f"openai: HTTP {exc.status_code} {raw or 'error'}: {message}",
            raw_type=raw,
            status=exc.status_code,
            retry_after=retry_after(exc.response.headers),
        )
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(ErrorKind.TIMEOUT, "openai: the request timed out", raw_type="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            ErrorKind.TIMEOUT, f"openai: connection failed ({exc.message}); check base_url", raw_type="connection"
        )
    if isinstance(exc, httpx2.TransportError):
        # Raised bare (not wrapped by the SDK) when a streamed body, such as a results file, breaks off midway.
        return ProviderError(
            ErrorKind.TIMEOUT, f"openai: the connection dropped ({type(exc).__name__})", raw_type="connection"
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError(
            ErrorKind.UNKNOWN, f"openai: unexpected response: {exc.message}", raw_type="response_validation"
        )
    if isinstance(exc, openai.OpenAIError):
        return ProviderError(ErrorKind.UNKNOWN, f"openai: {exc}", raw_type=type(exc).__name__)
    return None


# --- requests ---------------------------------------------------------------------------------------------------


def messages(request: Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system is not None:
        out.append({"role": "system", "content": request.system})
    for m in request.messages:
        out.extend(_message(m))
    return out


def _message(m: Message) -> list[dict[str, Any]]:
    if isinstance(m.content, str):
        return [{"role": m.role, "content": m.content}]
    text = m.text()
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))},
        }
        for b in m.content
        if b.get("type") == "tool_use"
    ]
    # An Anthropic user turn carrying tool_result blocks becomes one `tool` message per result.
    results = [
        {"role": "tool", "tool_call_id": b["tool_use_id"], "content": _tool_result_text(b.get("content"))}
        for b in m.content
        if b.get("type") == "tool_result"
    ]
    out: list[dict[str, Any]] = list(results)
    if calls:
        out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
    elif text or not results:
        out.append({"role": m.role, "content": text})
    return out


def _tool_result_text(content: object) -> str:
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def tool(t: dict[str, Any]) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t["name"], "parameters": t.get("input_schema", {"type": "object"})}
    if t.get("description"):
        fn["description"] = t["description"]
    return {"type": "function", "function": fn}


# --- responses --------------------------------------------------------------------------------------------------

_STOP: dict[str, StopReason] = {
    "stop": StopReason.END,
    "length": StopReason.MAX_TOKENS,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
}


def outcome_of_completion(completion: dict[str, Any], wants_json: bool) -> Succeeded | Errored:
    """A `chat.completion` object (sync reply, or a batch output line's body) as a domain outcome."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    text = str(message.get("content") or "")
    u = completion.get("usage") or {}
    cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    # OpenAI counts cached tokens inside prompt_tokens; freight's input_tokens are the uncached ones (as Anthropic's).
    usage = Usage(
        input_tokens=max(0, int(u.get("prompt_tokens") or 0) - cached),
        output_tokens=int(u.get("completion_tokens") or 0),
        cache_read_tokens=cached,
    )
    finish = str(choice.get("finish_reason") or "stop")
    if message.get("refusal") or finish == "content_filter":
        # Declined or filtered: no answer to validate, and sending it again unchanged will not help.
        raw = "refusal" if message.get("refusal") else "content_filter"
        return Errored(
            kind=ErrorKind.INVALID_REQUEST, raw_type=raw, message=str(message.get("refusal") or text), usage=usage
        )
    return Succeeded(
        text=text,
        parsed=parse_json(text) if wants_json else None,
        stop_reason=_STOP.get(finish, StopReason.END),
        usage=usage,
    )


def outcome_of_body(body: dict[str, Any], wants_json: bool) -> Succeeded | Errored:
    """A successful reply of any endpoint freight sends to, told apart by its `object`."""
    if body.get("object") == "response":
        return openai_endpoints.outcome_of_response(body, wants_json)
    if body.get("object") == "list":
        return openai_endpoints.outcome_of_embeddings(body)
    if body.get("object") == "text_completion":
        return openai_endpoints.outcome_of_text_completion(body)
    if "results" in body and "choices" not in body:  # a moderation carries no `object`
        return openai_endpoints.outcome_of_moderation(body)
    return outcome_of_completion(body, wants_json)


def outcome_of_line(line: dict[str, Any]) -> Succeeded | Errored | Canceled | Expired:
    """One line of a batch's output or error file as a domain outcome."""
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, dict):
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        if status == 200:
            # A results line does not say whether JSON was asked for; a reply that parses gets `parsed`, and the
            # runner validates it only where the request had a schema.
            return outcome_of_body(body, wants_json=True)
        err = body.get("error") or {}
        code = err.get("code")
        raw = str(code or err.get("type") or "")
        return Errored(
            kind=error_kind(status, err.get("type"), code), raw_type=raw, message=str(err.get("message", ""))
        )
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        if code == "batch_expired":
            return Expired()
        if code == "batch_cancelled":
            return Canceled()
        return Errored(kind=error_kind(None, None, code), raw_type=code, message=str(error.get("message", "")))
    return Errored(
        kind=ErrorKind.UNKNOWN, raw_type="no_response", message="results line with neither response nor error"
    )


BATCH_STATE = {
    "validating": BatchState.SUBMITTED,
    "in_progress": BatchState.IN_PROGRESS,
    "finalizing": BatchState.FINALIZING,
    "completed": BatchState.ENDED,
    "failed": BatchState.FAILED,
    "expired": BatchState.EXPIRED,
    "cancelling": BatchState.CANCELING,
    "cancelled": BatchState.CANCELED,
}


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def batch_of(b: OpenAIBatch) -> Batch:
    c = b.request_counts
    total, completed, failed = (c.total, c.completed, c.failed) if c else (0, 0, 0)
    state = BATCH_STATE.get(b.status, BatchState.IN_PROGRESS)
    rest = max(0, total - completed - failed)
    # OpenAI counts only completed and failed. Once the batch is over, the rest can only be requests that never ran:
    # canceled in a cancelled batch, expired otherwise (the `batch_expired` lines of its error file).
    counts = RequestCounts(processing=rest, succeeded=completed, errored=failed)
    if state.terminal:
        extra = {"canceled": rest} if state is BatchState.CANCELED else {"expired": rest}
        counts = RequestCounts(succeeded=completed, errored=failed, **extra)
    return Batch(
        provider="openai",
        provider_batch_id=b.id,
        state=state,
        counts=counts,
        created_at=_ts(b.created_at),
        expires_at=_ts(b.expires_at),
        ended_at=_ts(b.completed_at or b.failed_at or b.expired_at or b.cancelled_at),
    )


def missing_outcome(state: BatchState, error: BatchError | None) -> Canceled | Expired | Errored:
    if state in (BatchState.CANCELED, BatchState.CANCELING):
        return Canceled()
    if state is BatchState.EXPIRED:
        return Expired()
    if state is BatchState.FAILED and error is not None:
        code = error.code or ""
        return Errored(
            kind=error_kind(None, None, code) if code in _KIND_BY_CODE else ErrorKind.INVALID_REQUEST,
            raw_type=code,
            message=error.message or "",
        )
    if state is BatchState.FAILED:
        return Errored(
            kind=ErrorKind.UNKNOWN,
            raw_type="batch_failed",
            message="the batch failed validation because of other lines; this request can be sent again",
        )
    return Errored(
        kind=ErrorKind.UNKNOWN,
        raw_type="no_result",
        message="the batch ended without a result for this request; send it again",
    )
