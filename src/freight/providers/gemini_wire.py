"""Gemini's shapes: contents and config built from a domain `Request`, and errors, responses, batch results and batch
jobs turned back into domain types. Pure functions; the calls themselves are in `gemini.py`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import httpx2
from google.genai import errors, types

from freight.domain import (
    Batch,
    BatchState,
    Canceled,
    Errored,
    ErrorKind,
    Expired,
    Request,
    RequestCounts,
    StopReason,
    Succeeded,
    Usage,
)
from freight.providers.common import parse_json, retry_after
from freight.providers.protocol import ProviderError

# --- errors -----------------------------------------------------------------------------------------------------

# Canonical status names decide first (they name the cause); the HTTP status is the fallback.
_KIND_BY_STATUS_NAME: dict[str, ErrorKind] = {
    "INVALID_ARGUMENT": ErrorKind.INVALID_REQUEST,
    "FAILED_PRECONDITION": ErrorKind.INVALID_REQUEST,
    "OUT_OF_RANGE": ErrorKind.INVALID_REQUEST,
    "UNIMPLEMENTED": ErrorKind.INVALID_REQUEST,
    "ALREADY_EXISTS": ErrorKind.INVALID_REQUEST,
    "UNAUTHENTICATED": ErrorKind.AUTH,
    "PERMISSION_DENIED": ErrorKind.AUTH,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMITED,
    "UNAVAILABLE": ErrorKind.OVERLOADED,
    "INTERNAL": ErrorKind.SERVER_ERROR,
    "DATA_LOSS": ErrorKind.SERVER_ERROR,
    "ABORTED": ErrorKind.SERVER_ERROR,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
    "CANCELLED": ErrorKind.SERVER_ERROR,
    "UNKNOWN": ErrorKind.UNKNOWN,
}
_KIND_BY_HTTP: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTH,
    403: ErrorKind.AUTH,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    409: ErrorKind.SERVER_ERROR,
    413: ErrorKind.INVALID_REQUEST,
    429: ErrorKind.RATE_LIMITED,
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
}
# google.rpc.Code numbers, as a batch's per-request errors carry them.
GRPC_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_OVERFLOW_RE = re.compile(r"input token count .*exceeds the maximum", re.IGNORECASE)
_OVERFLOW_COUNTS = re.compile(
    r"input token count \((\d+)\) exceeds the maximum number of tokens allowed \((\d+)\)", re.I
)


def overflow_counts(message: str) -> tuple[int, int] | None:
    """(prompt tokens, window) from "The input token count (N) exceeds the maximum ... allowed (M)", when it says."""
    m = _OVERFLOW_COUNTS.search(message)
    return (int(m.group(1)), int(m.group(2))) if m else None


_DELAY_RE = re.compile(r"^([0-9.]+)s$")


def error_kind(
    http_status: int | None, status_name: str | None, message: str = "", reasons: tuple[str, ...] = ()
) -> ErrorKind:
    """Classify by canonical status, then HTTP status. Only an INVALID_ARGUMENT's message or reason is read further:
    Gemini gives a context overflow and a bad key no status of their own."""
    if status_name == "INVALID_ARGUMENT" and "API_KEY_INVALID" in reasons:
        return ErrorKind.AUTH
    if status_name == "INVALID_ARGUMENT" and _OVERFLOW_RE.search(message):
        return ErrorKind.CONTEXT_OVERFLOW
    if status_name and status_name in _KIND_BY_STATUS_NAME:
        return _KIND_BY_STATUS_NAME[status_name]
    if http_status is not None and http_status in _KIND_BY_HTTP:
        return _KIND_BY_HTTP[http_status]
    if http_status is not None and http_status >= 500:
        return ErrorKind.SERVER_ERROR
    return ErrorKind.UNKNOWN


def _details(body: Any) -> list[dict[str, Any]]:
    inner = body.get("error", body) if isinstance(body, dict) else {}
    found = inner.get("details") if isinstance(inner, dict) else None
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    for d in details:
        m = _DELAY_RE.match(str(d.get("retryDelay", "")))
        if d.get("@type", "").endswith("google.rpc.RetryInfo") and m:
            return float(m.group(1))
    return None


def translate(exc: BaseException) -> ProviderError | None:
    """Every `google-genai` exception (and the transport's) → a `ProviderError`; None for anything else."""
    if isinstance(exc, errors.APIError):
        details = _details(exc.details)
        reasons = tuple(str(d.get("reason", "")) for d in details)
        message = str(exc.message or "")
        raw = str(exc.status or "")
        kind = error_kind(exc.code, exc.status, message, reasons)
        headers = getattr(exc.response, "headers", None) or {}
        wait = _retry_delay(details)
        return ProviderError(
            kind,
            f"gemini: HTTP {exc.code} {raw or 'error'}: {message}",
            raw_type=raw,
            status=exc.code,
            retry_after=wait if wait is not None else retry_after(headers),
        )
    if isinstance(exc, httpx.TimeoutException | httpx2.TimeoutException):
        return ProviderError(ErrorKind.TIMEOUT, "gemini: the request timed out", raw_type="timeout")
    if isinstance(exc, httpx.TransportError | httpx2.TransportError):
        return ProviderError(
            ErrorKind.TIMEOUT,
            f"gemini: connection failed ({type(exc).__name__}); check base_url",
            raw_type="connection",
        )
    if isinstance(exc, errors.UnknownApiResponseError):
        return ProviderError(ErrorKind.UNKNOWN, f"gemini: unexpected response: {exc}", raw_type="response_validation")
    return None


# --- requests ---------------------------------------------------------------------------------------------------


def contents(request: Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in request.messages:
        role = "model" if m.role == "assistant" else "user"
        if isinstance(m.content, str):
            out.append({"role": role, "parts": [{"text": m.content}]})
            continue
        parts: list[dict[str, Any]] = []
        for b in m.content:
            if b.get("type") == "text":
                parts.append({"text": b.get("text", "")})
            elif b.get("type") == "tool_use":
                parts.append({"function_call": {"id": b.get("id"), "name": b["name"], "args": b.get("input", {})}})
            elif b.get("type") == "tool_result":
                result = b.get("content")
                text = result if isinstance(result, str) else json.dumps(result)
                parts.append(
                    {"function_response": {"id": b.get("tool_use_id"), "name": "tool", "response": {"output": text}}}
                )
        out.append({"role": role, "parts": parts or [{"text": ""}]})
    return out


def config(request: Request) -> dict[str, Any]:
    c: dict[str, Any] = {"max_output_tokens": request.max_tokens}
    if request.system is not None:
        c["system_instruction"] = request.system
    if request.temperature is not None:
        c["temperature"] = request.temperature
    if request.stop_sequences:
        c["stop_sequences"] = list(request.stop_sequences)
    if request.output_schema is not None:
        c["response_mime_type"] = "application/json"
        c["response_json_schema"] = request.output_schema
    if request.tools:
        declarations = [
            {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters_json_schema": t.get("input_schema"),
            }
            for t in request.tools
        ]
        c["tools"] = [{"function_declarations": declarations}]
    return c


def wire_request(request: Request) -> dict[str, Any]:
    """The GenerateContentRequest in its camelCase JSON form (a line of a batch input file), made from the same
    `contents` and `config` the SDK sends for `send`."""
    cfg = types.GenerateContentConfig(**config(request))
    body: dict[str, Any] = {
        "contents": [
            types.Content(**c).model_dump(mode="json", by_alias=True, exclude_none=True) for c in contents(request)
        ]
    }
    if cfg.system_instruction is not None:
        body["systemInstruction"] = {"parts": [{"text": request.system}], "role": "user"}
    generation = cfg.model_copy(update={"system_instruction": None, "tools": None})
    body["generationConfig"] = generation.model_dump(mode="json", by_alias=True, exclude_none=True)
    if cfg.tools:
        body["tools"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in cfg.tools if isinstance(t, types.Tool)
        ]
    return body


# --- responses --------------------------------------------------------------------------------------------------

_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE", "MODEL_ARMOR"}


def outcome_of_response(response: types.GenerateContentResponse, wants_json: bool) -> Succeeded | Errored:
    u = response.usage_metadata
    cached = (u.cached_content_token_count or 0) if u else 0
    usage = Usage(
        input_tokens=max(0, ((u.prompt_token_count or 0) if u else 0) - cached),
        # Thinking tokens are billed as output.
        output_tokens=((u.candidates_token_count or 0) + (u.thoughts_token_count or 0)) if u else 0,
        cache_read_tokens=cached,
    )
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = str(feedback.block_reason.value)
        return Errored(
            kind=ErrorKind.INVALID_REQUEST, raw_type=reason, message=f"prompt blocked: {reason}", usage=usage
        )
    candidate = response.candidates[0] if response.candidates else None
    finish = candidate.finish_reason.value if candidate is not None and candidate.finish_reason else "STOP"
    if finish in _BLOCKED:
        return Errored(
            kind=ErrorKind.INVALID_REQUEST, raw_type=finish, message=f"reply withheld: {finish}", usage=usage
        )
    parts = (candidate.content.parts if candidate is not None and candidate.content else None) or []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    stop = StopReason.MAX_TOKENS if finish == "MAX_TOKENS" else StopReason.END
    if any(p.function_call for p in parts):
        stop = StopReason.TOOL_USE
    return Succeeded(text=text, parsed=parse_json(text) if wants_json else None, stop_reason=stop, usage=usage)


def outcome_of_status(code: int | None, message: str) -> Errored | Canceled | Expired:
    """A batch request's google.rpc.Status. CANCELLED and DEADLINE_EXCEEDED there mean the job stopped (was
    cancelled, or its window passed) before the request ran."""
    name = GRPC_NAMES.get(code or 0, "UNKNOWN")
    if name == "CANCELLED":
        return Canceled()
    if name == "DEADLINE_EXCEEDED":
        return Expired()
    return Errored(kind=error_kind(None, name, message), raw_type=name, message=message)


def outcome_of_item(item: types.InlinedResponse) -> Succeeded | Errored | Canceled | Expired:
    if item.error is not None:
        return outcome_of_status(item.error.code, item.error.message or "")
    if item.response is None:
        return Errored(
            kind=ErrorKind.UNKNOWN, raw_type="no_response", message="a result with neither response nor error"
        )
    # A result does not say whether JSON was asked for; a reply that parses gets `parsed` (see the OpenAI adapter).
    return outcome_of_response(item.response, wants_json=True)


def outcome_of_line(line: dict[str, Any]) -> Succeeded | Errored | Canceled | Expired:
    """A line of a results file (`{"key", "response"}` or `{"key", "error"}`, camelCase JSON)."""
    error = line.get("error") or line.get("status")
    if isinstance(error, dict):
        return outcome_of_status(error.get("code"), str(error.get("message", "")))
    response = line.get("response") or {}
    if isinstance(response.get("embedding"), dict):  # an embedding batch's line: the vector, no text
        values = [float(x) for x in response["embedding"].get("values") or []]
        return Succeeded(text="", parsed=values, usage=Usage(input_tokens=int(response.get("tokenCount") or 0)))
    return outcome_of_item(
        types.InlinedResponse(response=types.GenerateContentResponse.model_validate(line.get("response") or {}))
    )


# --- embeddings -------------------------------------------------------------------------------------------------

EMBEDDING_MAX_TOKENS = 2048  # gemini-embedding-001's input limit


def embed_request(request: Request) -> dict[str, Any]:
    """An EmbedContentRequest (camelCase, as a batch file line holds it): one content of the request's texts."""
    body: dict[str, Any] = {"content": {"parts": [{"text": m.text()} for m in request.messages]}}
    if request.params.get("dimensions"):
        body["outputDimensionality"] = request.params["dimensions"]
    return body


def embed_config(request: Request) -> types.EmbedContentConfig:
    dims = request.params.get("dimensions")
    return types.EmbedContentConfig(output_dimensionality=int(dims) if dims else None)


def outcome_of_embeddings(response: types.EmbedContentResponse) -> Succeeded:
    """`models.embed_content`'s reply: the vector (the vectors, when several texts were sent)."""
    vectors = [list(e.values or []) for e in response.embeddings or []]
    return Succeeded(text="", parsed=vectors[0] if len(vectors) == 1 else vectors)


# --- batches ----------------------------------------------------------------------------------------------------

BATCH_STATE = {
    "JOB_STATE_QUEUED": BatchState.SUBMITTED,
    "JOB_STATE_PENDING": BatchState.SUBMITTED,
    "JOB_STATE_RUNNING": BatchState.IN_PROGRESS,
    "JOB_STATE_UPDATING": BatchState.IN_PROGRESS,
    "JOB_STATE_PAUSED": BatchState.IN_PROGRESS,
    "JOB_STATE_SUCCEEDED": BatchState.ENDED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": BatchState.ENDED,
    "JOB_STATE_FAILED": BatchState.FAILED,
    "JOB_STATE_CANCELLING": BatchState.CANCELING,
    "JOB_STATE_CANCELLED": BatchState.CANCELED,
    "JOB_STATE_EXPIRED": BatchState.EXPIRED,
}


def state_of(job: types.BatchJob) -> BatchState:
    return BATCH_STATE.get(job.state.value if job.state else "", BatchState.IN_PROGRESS)


def counts_of(outcomes: list[Succeeded | Errored | Canceled | Expired]) -> RequestCounts:
    by = {s: sum(1 for o in outcomes if o.status == s) for s in ("succeeded", "errored", "canceled", "expired")}
    return RequestCounts(**by)


def batch_of(job: types.BatchJob, counts: RequestCounts, window_hours: float) -> Batch:
    created: datetime | None = job.create_time
    return Batch(
        provider="gemini",
        provider_batch_id=job.name or "",
        state=state_of(job),
        counts=counts,
        created_at=created,
        # Gemini reports no deadline; its documented 48 h target stands in.
        expires_at=created + timedelta(hours=window_hours) if created else None,
        ended_at=job.end_time,
    )
