"""Anthropic's wire shapes: a Messages API body to a domain Request, an outcome to a `message` or an error."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from freight.domain import Errored, ErrorKind, Message, Request, StopReason, Succeeded
from freight.server.wire import WireError

# HTTP status and error type for each kind, as the Messages API answers.
ERRORS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.CONTEXT_OVERFLOW: (400, "invalid_request_error"),
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.VALIDATION_FAILED: (400, "invalid_request_error"),
    ErrorKind.AUTH: (401, "authentication_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.RATE_LIMITED: (429, "rate_limit_error"),
    ErrorKind.SERVER_ERROR: (500, "api_error"),
    ErrorKind.UNKNOWN: (500, "api_error"),
    ErrorKind.TIMEOUT: (504, "timeout_error"),
    ErrorKind.OVERLOADED: (529, "overloaded_error"),
}

_STOP = {
    StopReason.END: "end_turn",
    StopReason.MAX_TOKENS: "max_tokens",
    StopReason.STOP_SEQUENCE: "stop_sequence",
    StopReason.TOOL_USE: "tool_use",
}


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    raise WireError(f"{where}: expected a string or a list of content blocks")


def output_schema(params: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a Messages request asks the reply to satisfy.

    `output_config.format = {"type": "json_schema", "schema": ...}` is the SDK's structured-output parameter;
    the earlier beta spelling `output_format` is accepted too.
    """
    for fmt in ((params.get("output_config") or {}).get("format"), params.get("output_format")):
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            if not isinstance(schema, dict):
                raise WireError("output_config.format.schema: expected a JSON Schema object")
            return schema
    return None


def to_request(params: Any, custom_id: str = "sync") -> Request:
    if not isinstance(params, dict):
        raise WireError("params: expected an object")
    for key in ("model", "max_tokens", "messages"):
        if key not in params:
            raise WireError(f"{key}: Field required")
    messages = params["messages"]
    if not isinstance(messages, list) or not messages:
        raise WireError("messages: at least one message is required")
    system = params.get("system")
    try:
        return Request(
            custom_id=custom_id,
            model=str(params["model"]),
            messages=[Message(role=m.get("role"), content=m.get("content", "")) for m in messages],
            max_tokens=params["max_tokens"],
            system=None if system is None else _text(system, "system"),
            temperature=params.get("temperature"),
            stop_sequences=params.get("stop_sequences") or [],
            tools=params.get("tools") or [],
            output_schema=output_schema(params),
        )
    except (ValidationError, AttributeError, TypeError) as exc:
        raise WireError(_first_error(exc)) from None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
    return "messages: each message needs a role and content"


def message(outcome: Succeeded, model: str, stop_sequences: list[str], msg_id: str) -> dict[str, Any]:
    stop_sequence = None
    if outcome.stop_reason is StopReason.STOP_SEQUENCE:
        # Which sequence fired is not kept by the engine: the one that occurs earliest in a reply is the first listed
        # one found in it, which is what a test with one stop sequence expects.
        stop_sequence = next((s for s in stop_sequences if s), None)
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": outcome.text}],
        "stop_reason": _STOP[outcome.stop_reason],
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": outcome.usage.input_tokens,
            "output_tokens": outcome.usage.output_tokens,
            "cache_creation_input_tokens": outcome.usage.cache_write_tokens,
            "cache_read_input_tokens": outcome.usage.cache_read_tokens,
        },
    }


def error_of(outcome: Errored) -> tuple[int, dict[str, Any]]:
    status, error_type = ERRORS.get(outcome.kind, (500, "api_error"))
    return status, error_body(error_type, outcome.message or error_type)


def params_json(params: Any) -> str:
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False)
