"""OpenAI's wire shapes: a chat-completions body to a domain Request, an outcome to a `chat.completion` or an error."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from freight.domain import Errored, ErrorKind, Message, Request, StopReason, Succeeded
from freight.server.wire import WireError

DEFAULT_MAX_TOKENS = 4096

# HTTP status, error type and code for each kind, as the OpenAI API answers.
ERRORS: dict[ErrorKind, tuple[int, str, str | None]] = {
    ErrorKind.CONTEXT_OVERFLOW: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error", None),
    ErrorKind.VALIDATION_FAILED: (400, "invalid_request_error", None),
    ErrorKind.AUTH: (401, "invalid_request_error", "invalid_api_key"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", None),
    ErrorKind.RATE_LIMITED: (429, "requests", "rate_limit_exceeded"),
    ErrorKind.SERVER_ERROR: (500, "server_error", None),
    ErrorKind.UNKNOWN: (500, "server_error", None),
    ErrorKind.TIMEOUT: (504, "server_error", "timeout"),
    ErrorKind.OVERLOADED: (503, "server_error", "overloaded"),
}

_FINISH = {
    StopReason.END: "stop",
    StopReason.STOP_SEQUENCE: "stop",
    StopReason.MAX_TOKENS: "length",
    StopReason.TOOL_USE: "tool_calls",
}
_OVERFLOW_RE = re.compile(r"(\d+) tokens > (\d+) maximum")


def error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text")
        )
    raise WireError(f"{where}: expected a string or a list of content parts", param=where)


def output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise WireError("response_format.json_schema.schema: expected a JSON Schema object", "response_format")
        return schema
    if fmt.get("type") == "json_object":
        return {"type": "object"}
    return None


def to_request(body: Any, custom_id: str = "sync") -> Request:
    if not isinstance(body, dict):
        raise WireError("body: expected an object", "body")
    if "model" not in body:
        raise WireError("you must provide a model parameter", "model")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise WireError("messages: expected a non-empty array", "messages")
    system: list[str] = []
    messages: list[Message] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise WireError(f"messages[{i}]: expected an object", f"messages[{i}]")
        role = m.get("role")
        text = _text(m.get("content"), f"messages[{i}].content")
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant", "tool"):
            messages.append(Message(role="assistant" if role == "assistant" else "user", content=text))
        else:
            raise WireError(f"messages[{i}].role: {role!r} is not one of system, developer, user, assistant, tool")
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or DEFAULT_MAX_TOKENS
    try:
        return Request(
            custom_id=custom_id,
            model=str(body["model"]),
            messages=messages,
            max_tokens=max_tokens,
            system="\n".join(system) or None,
            temperature=body.get("temperature"),
            stop_sequences=[stop] if isinstance(stop, str) else (stop or []),
            tools=body.get("tools") or [],
            output_schema=output_schema(body),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise WireError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def completion(outcome: Succeeded, model: str, completion_id: str, created: int) -> dict[str, Any]:
    usage = outcome.usage
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.text, "refusal": None},
                "finish_reason": _FINISH[outcome.stop_reason],
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": None,
    }


def error_of(outcome: Errored) -> tuple[int, dict[str, Any]]:
    status, error_type, code = ERRORS.get(outcome.kind, (500, "server_error", None))
    message = outcome.message or error_type
    param = None
    m = _OVERFLOW_RE.search(message)
    if outcome.kind is ErrorKind.CONTEXT_OVERFLOW and m:
        message = (
            f"This model's maximum context length is {m.group(2)} tokens. However, your messages resulted in "
            f"{m.group(1)} tokens. Please reduce the length of the messages."
        )
        param = "messages"
    return status, error_body(message, error_type, code, param)
