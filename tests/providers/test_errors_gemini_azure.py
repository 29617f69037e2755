"""Every error the Gemini and Azure adapters can meet, and the ErrorKind it becomes: one row per case.

The exceptions are the SDKs' own classes, built as the SDKs build them from real responses.
"""

from __future__ import annotations

import inspect
from typing import Any

import httpx2
import openai
import pytest
from google.genai import errors

from freight.domain import Canceled, Errored, ErrorKind, Expired
from freight.providers import azure as azure_adapter
from freight.providers import gemini_wire

K = ErrorKind
REQ = httpx2.Request("POST", "http://127.0.0.1:1/gemini/v1/models/m:generateContent")


def g_error(
    http: int, status: str | None, message: str = "m", details: list[dict[str, Any]] | None = None
) -> Exception:
    body: dict[str, Any] = {"error": {"code": http, "message": message, "status": status}}
    if details:
        body["error"]["details"] = details
    response = httpx2.Response(http, json=body, request=REQ)
    cls = errors.ClientError if http < 500 else errors.ServerError
    return cls(http, body, response)


KEY_INVALID = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
OVERFLOW = "The input token count (2500) exceeds the maximum number of tokens allowed (2000)."

GEMINI_ROWS: list[tuple[str, Exception, ErrorKind, str]] = [
    ("400 invalid", g_error(400, "INVALID_ARGUMENT"), K.INVALID_REQUEST, "INVALID_ARGUMENT"),
    ("400 overflow", g_error(400, "INVALID_ARGUMENT", OVERFLOW), K.CONTEXT_OVERFLOW, "INVALID_ARGUMENT"),
    ("400 bad key", g_error(400, "INVALID_ARGUMENT", "bad", KEY_INVALID), K.AUTH, "INVALID_ARGUMENT"),
    ("400 precondition", g_error(400, "FAILED_PRECONDITION"), K.INVALID_REQUEST, "FAILED_PRECONDITION"),
    ("401", g_error(401, "UNAUTHENTICATED"), K.AUTH, "UNAUTHENTICATED"),
    ("403", g_error(403, "PERMISSION_DENIED"), K.AUTH, "PERMISSION_DENIED"),
    ("404", g_error(404, "NOT_FOUND"), K.NOT_FOUND, "NOT_FOUND"),
    ("429", g_error(429, "RESOURCE_EXHAUSTED"), K.RATE_LIMITED, "RESOURCE_EXHAUSTED"),
    ("499", g_error(499, "CANCELLED"), K.SERVER_ERROR, "CANCELLED"),
    ("500", g_error(500, "INTERNAL"), K.SERVER_ERROR, "INTERNAL"),
    ("503", g_error(503, "UNAVAILABLE"), K.OVERLOADED, "UNAVAILABLE"),
    ("504", g_error(504, "DEADLINE_EXCEEDED"), K.TIMEOUT, "DEADLINE_EXCEEDED"),
    ("502 no status", g_error(502, None), K.SERVER_ERROR, ""),
    ("413 no status", g_error(413, None), K.INVALID_REQUEST, ""),
    ("418 other", g_error(418, None), K.UNKNOWN, ""),
    ("timeout", httpx2.ReadTimeout("slow", request=REQ), K.TIMEOUT, "timeout"),
    ("connection", httpx2.ConnectError("refused", request=REQ), K.TIMEOUT, "connection"),
    ("dropped body", httpx2.RemoteProtocolError("peer closed", request=REQ), K.TIMEOUT, "connection"),
    ("bad response", errors.UnknownApiResponseError("?"), K.UNKNOWN, "response_validation"),
]


@pytest.mark.parametrize(("exc", "kind", "raw_type"), [r[1:] for r in GEMINI_ROWS], ids=[r[0] for r in GEMINI_ROWS])
def test_gemini_sdk_exception_maps_to_kind(exc: Exception, kind: ErrorKind, raw_type: str) -> None:
    err = gemini_wire.translate(exc)
    assert err is not None
    assert (err.kind, err.raw_type) == (kind, raw_type)
    assert str(err).startswith("gemini: ")


def test_gemini_table_covers_every_api_error_class() -> None:
    raised = {c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.APIError)}
    covered = {type(r[1]) for r in GEMINI_ROWS}
    # APIError itself is raised only for a status outside 4xx/5xx, which HTTP does not give an error response.
    assert raised - covered == {errors.APIError}


def test_gemini_retry_delay_is_read_from_retry_info() -> None:
    info = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.05s"}]
    err = gemini_wire.translate(g_error(429, "RESOURCE_EXHAUSTED", details=info))
    assert err is not None and err.retry_after == 0.05


def test_gemini_overflow_needs_invalid_argument_not_just_the_text() -> None:
    err = gemini_wire.translate(g_error(500, "INTERNAL", OVERFLOW))
    assert err is not None and err.kind is K.SERVER_ERROR


def test_non_sdk_exceptions_are_not_translated() -> None:
    assert gemini_wire.translate(ValueError("x")) is None
    assert azure_adapter.azure_translate(ValueError("x")) is None


GEMINI_STATUS_ROWS: list[tuple[int, str, object]] = [
    (3, OVERFLOW, K.CONTEXT_OVERFLOW),
    (3, "bad field", K.INVALID_REQUEST),
    (8, "quota", K.RATE_LIMITED),
    (13, "oops", K.SERVER_ERROR),
    (14, "overloaded", K.OVERLOADED),
    (5, "gone", K.NOT_FOUND),
    (7, "denied", K.AUTH),
    (2, "?", K.UNKNOWN),
    (1, "cancelled", Canceled()),
    (4, "window passed", Expired()),
]


@pytest.mark.parametrize(("code", "message", "expected"), GEMINI_STATUS_ROWS)
def test_gemini_batch_status_maps_to_outcome(code: int, message: str, expected: object) -> None:
    outcome = gemini_wire.outcome_of_line({"key": "k", "error": {"code": code, "message": message}})
    if isinstance(expected, ErrorKind):
        assert isinstance(outcome, Errored)
        assert (outcome.kind, outcome.raw_type, outcome.message) == (expected, gemini_wire.GRPC_NAMES[code], message)
    else:
        assert outcome == expected


def o_status(cls: type[openai.APIStatusError], status: int, code: str | None, error_type: str = "x") -> Exception:
    body = {"message": "m", "type": error_type, "param": None, "code": code}
    return cls("Error", response=httpx2.Response(status, json=body, request=REQ), body=body)


AZURE_ROWS: list[tuple[str, Exception, ErrorKind, str]] = [
    (
        "400",
        o_status(openai.BadRequestError, 400, None, "invalid_request_error"),
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    (
        "400 overflow",
        o_status(openai.BadRequestError, 400, "context_length_exceeded"),
        K.CONTEXT_OVERFLOW,
        "context_length_exceeded",
    ),
    (
        "400 content filter",
        o_status(openai.BadRequestError, 400, "content_filter"),
        K.INVALID_REQUEST,
        "content_filter",
    ),
    ("401", o_status(openai.AuthenticationError, 401, "401"), K.AUTH, "401"),
    ("404 deployment", o_status(openai.NotFoundError, 404, "DeploymentNotFound"), K.NOT_FOUND, "DeploymentNotFound"),
    ("429", o_status(openai.RateLimitError, 429, "429"), K.RATE_LIMITED, "429"),
    ("500", o_status(openai.InternalServerError, 500, None, "server_error"), K.SERVER_ERROR, "server_error"),
    ("503", o_status(openai.InternalServerError, 503, None, "server_error"), K.OVERLOADED, "server_error"),
    ("timeout", openai.APITimeoutError(REQ), K.TIMEOUT, "timeout"),
    ("connection", openai.APIConnectionError(request=REQ), K.TIMEOUT, "connection"),
]


@pytest.mark.parametrize(("exc", "kind", "raw_type"), [r[1:] for r in AZURE_ROWS], ids=[r[0] for r in AZURE_ROWS])
def test_azure_sdk_exception_maps_to_kind(exc: Exception, kind: ErrorKind, raw_type: str) -> None:
    err = azure_adapter.azure_translate(exc)
    assert err is not None
    assert (err.kind, err.raw_type) == (kind, raw_type)
    assert str(err).startswith("azure: ") and "openai" not in str(err)
