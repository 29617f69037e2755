"""Gemini's wire shapes: a GenerateContentRequest to a domain Request, an outcome to a GenerateContentResponse or a
google.rpc.Status, and a batch row to the operation-shaped resource the `google-genai` SDK reads.

Errors over HTTP are `{"error": {"code": <HTTP status>, "message", "status": "INVALID_ARGUMENT" ..., "details"}}`;
inside a batch a failed request carries a google.rpc.Status, `{"code": <gRPC code>, "message"}`.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from starlette.responses import JSONResponse

from freight.domain import BatchState, Errored, ErrorKind, Message, Request, StopReason, Succeeded
from freight.server.wire import WireError, rfc3339

DEFAULT_MAX_TOKENS = 8192
GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}

# HTTP status and canonical status name for each kind, as the Gemini API answers.
ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.CONTEXT_OVERFLOW: (400, "INVALID_ARGUMENT"),
    ErrorKind.INVALID_REQUEST: (400, "INVALID_ARGUMENT"),
    ErrorKind.VALIDATION_FAILED: (400, "INVALID_ARGUMENT"),
    ErrorKind.AUTH: (403, "PERMISSION_DENIED"),
    ErrorKind.NOT_FOUND: (404, "NOT_FOUND"),
    ErrorKind.RATE_LIMITED: (429, "RESOURCE_EXHAUSTED"),
    ErrorKind.SERVER_ERROR: (500, "INTERNAL"),
    ErrorKind.UNKNOWN: (500, "INTERNAL"),
    ErrorKind.OVERLOADED: (503, "UNAVAILABLE"),
    ErrorKind.TIMEOUT: (504, "DEADLINE_EXCEEDED"),
}
# A batch's requests that never ran: the job was cancelled, or its window passed first.
END_STATUS = {
    "canceled": ("CANCELLED", "The batch was cancelled before this request ran."),
    "expired": ("DEADLINE_EXCEEDED", "The batch expired before this request ran."),
}
_FINISH = {
    StopReason.END: "STOP",
    StopReason.STOP_SEQUENCE: "STOP",
    StopReason.MAX_TOKENS: "MAX_TOKENS",
    StopReason.TOOL_USE: "STOP",
}
_OVERFLOW_RE = re.compile(r"(\d+) tokens > (\d+) maximum")
STATES = {
    BatchState.SUBMITTED: "BATCH_STATE_PENDING",
    BatchState.IN_PROGRESS: "BATCH_STATE_RUNNING",
    BatchState.FINALIZING: "BATCH_STATE_RUNNING",
    # Gemini shows no "cancelling" state: a cancelled job runs on until it has stopped.
    BatchState.CANCELING: "BATCH_STATE_RUNNING",
    BatchState.ENDED: "BATCH_STATE_SUCCEEDED",
    BatchState.CANCELED: "BATCH_STATE_CANCELLED",
    BatchState.EXPIRED: "BATCH_STATE_EXPIRED",
    BatchState.FAILED: "BATCH_STATE_FAILED",
}


def error_body(
    http_status: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def retry_info(seconds: float) -> dict[str, Any]:
    # Gemini says how long to wait in a RetryInfo detail, not in a retry-after header.
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds:g}s"}


def error_response(kind: ErrorKind, message: str, retry_delay: float | None = None) -> JSONResponse:
    status, name = ERRORS.get(kind, (500, "INTERNAL"))
    details = [retry_info(retry_delay)] if retry_delay is not None else None
    return JSONResponse(error_body(status, name, message, details), status_code=status)


def invalid(message: str, status: int = 400, name: str = "INVALID_ARGUMENT") -> JSONResponse:
    return JSONResponse(error_body(status, name, message), status_code=status)


def bad_key() -> JSONResponse:
    """What Gemini answers to a wrong key: 400 INVALID_ARGUMENT with the reason in an ErrorInfo detail."""
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    }
    body = error_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info])
    return JSONResponse(body, status_code=400)


def _message_of(outcome: Errored) -> str:
    m = _OVERFLOW_RE.search(outcome.message)
    if outcome.kind is ErrorKind.CONTEXT_OVERFLOW and m:
        return f"The input token count ({m.group(1)}) exceeds the maximum number of tokens allowed ({m.group(2)})."
    if outcome.kind is ErrorKind.OVERLOADED:
        return "The model is overloaded. Please try again later."
    return outcome.message or ERRORS.get(outcome.kind, (500, "INTERNAL"))[1]


def error_of(outcome: Errored) -> tuple[int, dict[str, Any]]:
    status, name = ERRORS.get(outcome.kind, (500, "INTERNAL"))
    details = [retry_info(1)] if outcome.kind is ErrorKind.RATE_LIMITED else None
    return status, error_body(status, name, _message_of(outcome), details)


def status_of(outcome: Errored) -> dict[str, Any]:
    """A failed request inside a batch: a google.rpc.Status, whose code is the gRPC one."""
    name = ERRORS.get(outcome.kind, (500, "INTERNAL"))[1]
    return {"code": GRPC_CODES[name], "message": _message_of(outcome)}


def end_status(status: str) -> dict[str, Any]:
    name, message = END_STATUS[status]
    return {"code": GRPC_CODES[name], "message": message}


def _text(content: Any, where: str) -> str:
    if not isinstance(content, dict):
        raise WireError(f"{where}: expected a Content object with parts")
    parts = content.get("parts")
    if not isinstance(parts, list):
        raise WireError(f"{where}.parts: expected a list")
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def output_schema(config: dict[str, Any]) -> dict[str, Any] | None:
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if isinstance(schema, dict):
        return schema
    if config.get("responseMimeType") == "application/json":
        return {"type": "object"}
    return None


def to_request(body: Any, custom_id: str, model: str) -> Request:
    """A GenerateContentRequest (the camelCase wire form) as a domain Request for `model`."""
    if not isinstance(body, dict):
        raise WireError("request: expected a GenerateContentRequest object")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise WireError("contents: must not be empty")
    messages = []
    for i, c in enumerate(contents):
        role = c.get("role", "user") if isinstance(c, dict) else None
        if role not in ("user", "model", "function"):
            raise WireError(f"contents[{i}].role: {role!r} is not one of user, model")
        messages.append(Message(role="assistant" if role == "model" else "user", content=_text(c, f"contents[{i}]")))
    system = body.get("systemInstruction")
    config = body.get("generationConfig") or {}
    if not isinstance(config, dict):
        raise WireError("generationConfig: expected an object")
    try:
        return Request(
            custom_id=custom_id,
            model=model.removeprefix("models/"),
            messages=messages,
            max_tokens=config.get("maxOutputTokens") or DEFAULT_MAX_TOKENS,
            system=_text(system, "systemInstruction") if system is not None else None,
            temperature=config.get("temperature"),
            stop_sequences=config.get("stopSequences") or [],
            tools=body.get("tools") or [],
            output_schema=output_schema(config),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise WireError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def response(outcome: Succeeded, model: str, response_id: str) -> dict[str, Any]:
    usage = outcome.usage
    prompt = usage.input_tokens + usage.cache_read_tokens
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": outcome.text}], "role": "model"},
                "finishReason": _FINISH[outcome.stop_reason],
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": prompt + usage.output_tokens,
            **({"cachedContentTokenCount": usage.cache_read_tokens} if usage.cache_read_tokens else {}),
        },
        "modelVersion": model,
        "responseId": response_id,
    }


def batch_view(row: sa.RowMapping, output: dict[str, Any] | None) -> dict[str, Any]:
    """A batch as the operation-shaped resource the SDK reads (`name`, everything else under `metadata`)."""
    state = BatchState(row["state"])
    done = row["n_succeeded"] + row["n_errored"] + row["n_canceled"] + row["n_expired"]
    metadata: dict[str, Any] = {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": f"models/{row['model']}",
        "displayName": (row["metadata"] or {}).get("displayName", ""),
        "state": STATES[state],
        "createTime": rfc3339(row["created_at"]),
        "updateTime": rfc3339(row["ended_at"] or row["in_progress_at"] or row["created_at"]),
        # int64 fields travel as strings in Google's JSON; the SDK (3.3) does not read these at all.
        "batchStats": {
            "requestCount": str(row["total"]),
            "successfulRequestCount": str(row["n_succeeded"]),
            "failedRequestCount": str(row["n_errored"] + row["n_canceled"] + row["n_expired"]),
            "pendingRequestCount": str(max(0, row["total"] - done)),
        },
    }
    if row["input_file_id"]:
        metadata["inputConfig"] = {"fileName": row["input_file_id"]}
    if state.terminal:
        metadata["endTime"] = rfc3339(row["ended_at"])
    if output is not None:
        metadata["output"] = output
    return {"name": f"batches/{row['id']}", "metadata": metadata, "done": state.terminal}
