"""Every SDK exception each adapter can meet, and the ErrorKind it becomes: one row per case, both adapters.

The exceptions are the SDKs' own classes built on real httpx2 responses, exactly as the SDKs raise them (the OpenAI
SDK unwraps `{"error": {...}}` before building its exception; the Anthropic SDK keeps the whole body).
"""

from __future__ import annotations

import inspect
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from freight.domain import Canceled, Errored, ErrorKind, Expired
from freight.providers import anthropic as anthropic_adapter
from freight.providers import openai as openai_adapter

K = ErrorKind
REQ = httpx2.Request("POST", "http://127.0.0.1:1/v1/messages")


def response(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, json=body, headers=headers or {}, request=REQ)


# --- Anthropic -------------------------------------------------------------------------------------------------


def a_body(error_type: str, message: str = "m", code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code:
        error["details"] = {"error_code": code}
    return {"type": "error", "error": error}


def a_status(cls: type[anthropic.APIStatusError], status: int, body: dict[str, Any], **headers: str) -> Exception:
    return cls("Error", response=response(status, body, headers), body=body)


ANTHROPIC_ROWS: list[tuple[str, Exception, ErrorKind, str]] = [
    (
        "400",
        a_status(anthropic.BadRequestError, 400, a_body("invalid_request_error")),
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    (
        "400 prompt is too long",
        a_status(
            anthropic.BadRequestError,
            400,
            a_body("invalid_request_error", "prompt is too long: 9000 tokens > 8192 maximum"),
        ),
        K.CONTEXT_OVERFLOW,
        "invalid_request_error",
    ),
    (
        "400 org on hold",
        a_status(anthropic.OrganizationOnHoldError, 400, a_body("invalid_request_error", code="organization_on_hold")),
        K.AUTH,
        "organization_on_hold",
    ),
    (
        "400 encoding",
        a_status(
            anthropic.RequestBodyEncodingInvalidError,
            400,
            a_body("invalid_request_error", code="request_body_encoding_invalid"),
        ),
        K.INVALID_REQUEST,
        "request_body_encoding_invalid",
    ),
    (
        "401",
        a_status(anthropic.AuthenticationError, 401, a_body("authentication_error")),
        K.AUTH,
        "authentication_error",
    ),
    ("402", a_status(anthropic.PaymentRequiredError, 402, a_body("billing_error")), K.AUTH, "billing_error"),
    ("403", a_status(anthropic.PermissionDeniedError, 403, a_body("permission_error")), K.AUTH, "permission_error"),
    ("404", a_status(anthropic.NotFoundError, 404, a_body("not_found_error")), K.NOT_FOUND, "not_found_error"),
    ("408", a_status(anthropic.RequestTimeoutError, 408, a_body("timeout_error")), K.TIMEOUT, "timeout_error"),
    ("409", a_status(anthropic.ConflictError, 409, a_body("conflict_error")), K.SERVER_ERROR, "conflict_error"),
    (
        "412",
        a_status(anthropic.PreconditionFailedError, 412, a_body("invalid_request_error")),
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    (
        "413",
        a_status(anthropic.ContentTooLargeError, 413, a_body("request_too_large")),
        K.INVALID_REQUEST,
        "request_too_large",
    ),
    (
        "422",
        a_status(anthropic.UnprocessableEntityError, 422, a_body("invalid_request_error")),
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    ("429", a_status(anthropic.RateLimitError, 429, a_body("rate_limit_error")), K.RATE_LIMITED, "rate_limit_error"),
    (
        "429 ramp",
        a_status(anthropic.RampLimitExceededError, 429, a_body("rate_limit_error", code="ramp_limit_exceeded")),
        K.RATE_LIMITED,
        "ramp_limit_exceeded",
    ),
    (
        "429 spend limit",
        a_status(
            anthropic.EnforcedSpendLimitReachedError,
            429,
            a_body("rate_limit_error", code="enforced_spend_limit_reached"),
        ),
        K.AUTH,
        "enforced_spend_limit_reached",
    ),
    (
        "429 contract spend",
        a_status(
            anthropic.ContractSpendLimitReachedError,
            429,
            a_body("rate_limit_error", code="contract_spend_limit_reached"),
        ),
        K.AUTH,
        "contract_spend_limit_reached",
    ),
    (
        "431",
        a_status(anthropic.RequestHeaderFieldsTooLargeError, 431, a_body("invalid_request_error")),
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    ("499", a_status(anthropic.ClientClosedRequestError, 499, a_body("api_error")), K.TIMEOUT, "api_error"),
    ("500", a_status(anthropic.InternalServerError, 500, a_body("api_error")), K.SERVER_ERROR, "api_error"),
    ("501", a_status(anthropic.HTTPNotImplementedError, 501, a_body("api_error")), K.INVALID_REQUEST, "api_error"),
    (
        "502 no body",
        anthropic.InternalServerError("Bad gateway", response=response(502), body=None),
        K.SERVER_ERROR,
        "",
    ),
    ("503", a_status(anthropic.ServiceUnavailableError, 503, a_body("api_error")), K.OVERLOADED, "api_error"),
    (
        "503 cmek",
        a_status(anthropic.CMEKKeyUnreachableError, 503, a_body("api_error", code="cmek_key_unreachable")),
        K.OVERLOADED,
        "cmek_key_unreachable",
    ),
    ("504", a_status(anthropic.GatewayTimeoutError, 504, a_body("timeout_error")), K.TIMEOUT, "timeout_error"),
    ("529", a_status(anthropic.OverloadedError, 529, a_body("overloaded_error")), K.OVERLOADED, "overloaded_error"),
    ("418 other status", a_status(anthropic.APIStatusError, 418, a_body("teapot_error")), K.UNKNOWN, "teapot_error"),
    ("timeout", anthropic.APITimeoutError(REQ), K.TIMEOUT, "timeout"),
    ("connection", anthropic.APIConnectionError(request=REQ), K.TIMEOUT, "connection"),
    ("bad response", anthropic.APIResponseValidationError(response(200, {}), {}), K.UNKNOWN, "response_validation"),
    ("credentials", anthropic.CredentialsError("no key"), K.AUTH, "credentials"),
    ("sdk other", anthropic.AnthropicError("boom"), K.UNKNOWN, "AnthropicError"),
]


@pytest.mark.parametrize(
    ("exc", "kind", "raw_type"), [r[1:] for r in ANTHROPIC_ROWS], ids=[r[0] for r in ANTHROPIC_ROWS]
)
def test_anthropic_sdk_exception_maps_to_kind(exc: Exception, kind: ErrorKind, raw_type: str) -> None:
    err = anthropic_adapter.translate(exc)
    assert err is not None
    assert (err.kind, err.raw_type) == (kind, raw_type)
    assert str(err).startswith("anthropic: ")


def test_anthropic_table_covers_every_exception_class_the_sdk_exports() -> None:
    exported = {
        getattr(anthropic, n)
        for n in anthropic.__all__
        if inspect.isclass(getattr(anthropic, n)) and issubclass(getattr(anthropic, n), anthropic.AnthropicError)
    }
    # Abstract bases and errors no API call raises (webhook verification, middleware opt-in, token files).
    not_raised_by_calls = {
        anthropic.APIError,
        anthropic.APIWebhookValidationError,
        anthropic.RetryableError,
        anthropic.IdentityTokenFileError,
    }
    covered = {type(r[1]) for r in ANTHROPIC_ROWS}
    missing = exported - covered - not_raised_by_calls
    # The error-code subclasses inherit their status class's row (status decides unless the code is in the table).
    missing = {
        c for c in missing if not any(issubclass(c, base) and base is not anthropic.APIStatusError for base in covered)
    }
    assert not missing, f"add rows for {sorted(c.__name__ for c in missing)}"


def test_anthropic_retry_after_is_read_from_the_response() -> None:
    exc = a_status(anthropic.RateLimitError, 429, a_body("rate_limit_error"), **{"retry-after": "7"})
    err = anthropic_adapter.translate(exc)
    assert err is not None and err.retry_after == 7.0
    exc = a_status(anthropic.RateLimitError, 429, a_body("rate_limit_error"), **{"retry-after-ms": "250"})
    err = anthropic_adapter.translate(exc)
    assert err is not None and err.retry_after == 0.25


def test_anthropic_context_overflow_needs_the_type_not_just_the_text() -> None:
    """Only an invalid_request_error's message is read; the same words in another error type change nothing."""
    exc = a_status(anthropic.InternalServerError, 500, a_body("api_error", "prompt is too long: oops"))
    err = anthropic_adapter.translate(exc)
    assert err is not None and err.kind is K.SERVER_ERROR


ANTHROPIC_RESULT_ROWS: list[tuple[dict[str, Any], object]] = [
    (
        {"type": "errored", "error": a_body("invalid_request_error", "prompt is too long: 9 tokens > 8 maximum")},
        K.CONTEXT_OVERFLOW,
    ),
    ({"type": "errored", "error": a_body("invalid_request_error", "bad field")}, K.INVALID_REQUEST),
    ({"type": "errored", "error": a_body("overloaded_error")}, K.OVERLOADED),
    ({"type": "errored", "error": a_body("api_error")}, K.SERVER_ERROR),
    ({"type": "errored", "error": a_body("rate_limit_error")}, K.RATE_LIMITED),
    ({"type": "errored", "error": a_body("timeout_error")}, K.TIMEOUT),
    ({"type": "errored", "error": a_body("authentication_error")}, K.AUTH),
    ({"type": "errored", "error": a_body("permission_error")}, K.AUTH),
    ({"type": "errored", "error": a_body("billing_error")}, K.AUTH),
    ({"type": "errored", "error": a_body("not_found_error")}, K.NOT_FOUND),
    ({"type": "errored", "error": a_body("something_new_error")}, K.UNKNOWN),
    ({"type": "canceled"}, Canceled()),
    ({"type": "expired"}, Expired()),
]


@pytest.mark.parametrize(("result", "expected"), ANTHROPIC_RESULT_ROWS)
def test_anthropic_batch_result_maps_to_outcome(result: dict[str, Any], expected: object) -> None:
    outcome = anthropic_adapter.outcome_of_result({"custom_id": "c1", "result": result})
    if isinstance(expected, ErrorKind):
        assert isinstance(outcome, Errored)
        assert outcome.kind is expected
        assert outcome.raw_type == result["error"]["error"]["type"]  # the raw type is kept beside the kind
        assert outcome.message == result["error"]["error"]["message"]
    else:
        assert outcome == expected


# --- OpenAI ----------------------------------------------------------------------------------------------------


def o_body(error_type: str | None, code: str | None = None, message: str = "m") -> dict[str, Any]:
    # What the SDK hands its exception: the inner `error` object of `{"error": {...}}`.
    return {"message": message, "type": error_type, "param": None, "code": code}


def o_status(cls: type[openai.APIStatusError], status: int, body: dict[str, Any] | None, **headers: str) -> Exception:
    return cls("Error", response=response(status, body, headers), body=body)


OPENAI_ROWS: list[tuple[str, Exception, ErrorKind, str]] = [
    (
        "400",
        o_status(openai.BadRequestError, 400, o_body("invalid_request_error")),
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    (
        "400 context_length_exceeded",
        o_status(openai.BadRequestError, 400, o_body("invalid_request_error", "context_length_exceeded")),
        K.CONTEXT_OVERFLOW,
        "context_length_exceeded",
    ),
    (
        "401",
        o_status(openai.AuthenticationError, 401, o_body("invalid_request_error", "invalid_api_key")),
        K.AUTH,
        "invalid_api_key",
    ),
    ("403", o_status(openai.PermissionDeniedError, 403, o_body("permission_error")), K.AUTH, "permission_error"),
    ("404", o_status(openai.NotFoundError, 404, o_body("invalid_request_error")), K.NOT_FOUND, "invalid_request_error"),
    (
        "404 model",
        o_status(openai.NotFoundError, 404, o_body("invalid_request_error", "model_not_found")),
        K.NOT_FOUND,
        "model_not_found",
    ),
    ("409", o_status(openai.ConflictError, 409, o_body("conflict")), K.SERVER_ERROR, "conflict"),
    (
        "422",
        o_status(openai.UnprocessableEntityError, 422, o_body("invalid_request_error")),
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    (
        "429",
        o_status(openai.RateLimitError, 429, o_body("requests", "rate_limit_exceeded")),
        K.RATE_LIMITED,
        "rate_limit_exceeded",
    ),
    (
        "429 insufficient_quota",
        o_status(openai.RateLimitError, 429, o_body("insufficient_quota", "insufficient_quota")),
        K.AUTH,
        "insufficient_quota",
    ),
    ("500", o_status(openai.InternalServerError, 500, o_body("server_error")), K.SERVER_ERROR, "server_error"),
    ("502 no body", o_status(openai.InternalServerError, 502, None), K.SERVER_ERROR, ""),
    ("503", o_status(openai.InternalServerError, 503, o_body("server_error")), K.OVERLOADED, "server_error"),
    ("504", o_status(openai.InternalServerError, 504, None), K.TIMEOUT, ""),
    ("418 other status", o_status(openai.APIStatusError, 418, o_body("teapot")), K.UNKNOWN, "teapot"),
    ("timeout", openai.APITimeoutError(REQ), K.TIMEOUT, "timeout"),
    ("connection", openai.APIConnectionError(request=REQ), K.TIMEOUT, "connection"),
    ("bad response", openai.APIResponseValidationError(response(200, {}), {}), K.UNKNOWN, "response_validation"),
    ("sdk other", openai.OpenAIError("boom"), K.UNKNOWN, "OpenAIError"),
]


@pytest.mark.parametrize(("exc", "kind", "raw_type"), [r[1:] for r in OPENAI_ROWS], ids=[r[0] for r in OPENAI_ROWS])
def test_openai_sdk_exception_maps_to_kind(exc: Exception, kind: ErrorKind, raw_type: str) -> None:
    err = openai_adapter.translate(exc)
    assert err is not None
    assert (err.kind, err.raw_type) == (kind, raw_type)
    assert str(err).startswith("openai: ")


def test_openai_status_error_message_is_the_apis_own_sentence() -> None:
    exc = o_status(openai.BadRequestError, 400, o_body("invalid_request_error", message="Unknown parameter: 'x'"))
    err = openai_adapter.translate(exc)
    assert err is not None and str(err) == "openai: HTTP 400 invalid_request_error: Unknown parameter: 'x'"


def test_openai_table_covers_every_exception_class_an_api_call_raises() -> None:
    exported = {
        getattr(openai, n)
        for n in openai.__all__
        if inspect.isclass(getattr(openai, n)) and issubclass(getattr(openai, n), openai.OpenAIError)
    }
    # Bases, helpers-only errors (structured-output parse helpers, websockets, OAuth flows) freight never calls.
    not_raised_by_calls = {
        openai.APIError,
        openai.LengthFinishReasonError,
        openai.ContentFilterFinishReasonError,
        openai.WebSocketQueueFullError,
        openai.WebSocketConnectionClosedError,
        openai.OAuthError,
    }
    missing = exported - {type(r[1]) for r in OPENAI_ROWS} - not_raised_by_calls
    assert not missing, f"add rows for {sorted(c.__name__ for c in missing)}"


def test_openai_retry_after_is_read_from_the_response() -> None:
    exc = o_status(openai.RateLimitError, 429, o_body("requests", "rate_limit_exceeded"), **{"retry-after": "2"})
    err = openai_adapter.translate(exc)
    assert err is not None and err.retry_after == 2.0


OPENAI_LINE_ROWS: list[tuple[dict[str, Any], object, str]] = [
    (
        {
            "response": {
                "status_code": 400,
                "body": {"error": o_body("invalid_request_error", "context_length_exceeded")},
            },
            "error": None,
        },
        K.CONTEXT_OVERFLOW,
        "context_length_exceeded",
    ),
    (
        {"response": {"status_code": 400, "body": {"error": o_body("invalid_request_error")}}, "error": None},
        K.INVALID_REQUEST,
        "invalid_request_error",
    ),
    (
        {"response": {"status_code": 429, "body": {"error": o_body("requests", "rate_limit_exceeded")}}, "error": None},
        K.RATE_LIMITED,
        "rate_limit_exceeded",
    ),
    (
        {"response": {"status_code": 500, "body": {"error": o_body("server_error")}}, "error": None},
        K.SERVER_ERROR,
        "server_error",
    ),
    (
        {"response": {"status_code": 503, "body": {"error": o_body("server_error")}}, "error": None},
        K.OVERLOADED,
        "server_error",
    ),
    ({"response": None, "error": {"code": "batch_expired", "message": "expired"}}, Expired(), ""),
    ({"response": None, "error": {"code": "batch_cancelled", "message": "cancelled"}}, Canceled(), ""),
    ({"response": None, "error": {"code": "something_new", "message": "?"}}, K.UNKNOWN, "something_new"),
]


@pytest.mark.parametrize(("line", "expected", "raw_type"), OPENAI_LINE_ROWS)
def test_openai_batch_line_maps_to_outcome(line: dict[str, Any], expected: object, raw_type: str) -> None:
    outcome = openai_adapter.outcome_of_line({"custom_id": "c1", **line})
    if isinstance(expected, ErrorKind):
        assert isinstance(outcome, Errored)
        assert (outcome.kind, outcome.raw_type) == (expected, raw_type)
    else:
        assert outcome == expected
