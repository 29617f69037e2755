"""The one retry policy: which failures are retried, how long it waits, and when it gives up."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from freight.domain import ErrorKind
from freight.providers.protocol import ProviderError
from freight.providers.retry import RetryPolicy, call_with_retry, stream_with_retry


def no_translation(exc: BaseException) -> ProviderError | None:
    return None


def flaky(errors: list[ProviderError], value: str = "ok") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return value

    return calls, fn


def policy(sleeps: list[float], **kw: float) -> RetryPolicy:
    return RetryPolicy(sleep=sleeps.append, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind", [ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT]
)
def test_transient_failures_are_retried_with_growing_jittered_waits(kind: ErrorKind) -> None:
    sleeps: list[float] = []
    calls, fn = flaky([ProviderError(kind, "x")] * 3)
    assert call_with_retry(fn, no_translation, policy(sleeps, initial_delay=0.5, max_delay=1.5)) == "ok"
    assert len(calls) == 4
    assert len(sleeps) == 3
    for attempt, slept in enumerate(sleeps, start=1):
        assert 0 <= slept <= min(1.5, 0.5 * 2 ** (attempt - 1))


def test_retry_after_is_waited_exactly() -> None:
    sleeps: list[float] = []
    calls, fn = flaky([ProviderError(ErrorKind.RATE_LIMITED, "slow down", status=429, retry_after=2.5)])
    assert call_with_retry(fn, no_translation, policy(sleeps)) == "ok"
    assert sleeps == [2.5]


def test_a_retry_after_too_long_to_wait_inline_surfaces_at_once() -> None:
    sleeps: list[float] = []
    calls, fn = flaky([ProviderError(ErrorKind.RATE_LIMITED, "come back in an hour", retry_after=3600)])
    with pytest.raises(ProviderError) as info:
        call_with_retry(fn, no_translation, policy(sleeps, max_retry_after=60))
    assert info.value.retry_after == 3600 and len(calls) == 1 and sleeps == []


@pytest.mark.parametrize(
    "kind",
    [ErrorKind.INVALID_REQUEST, ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.CONTEXT_OVERFLOW, ErrorKind.UNKNOWN],
)
def test_permanent_failures_surface_at_once(kind: ErrorKind) -> None:
    sleeps: list[float] = []
    calls, fn = flaky([ProviderError(kind, "no")])
    with pytest.raises(ProviderError) as info:
        call_with_retry(fn, no_translation, policy(sleeps))
    assert info.value.kind is kind and len(calls) == 1 and sleeps == []


def test_a_timeout_is_not_retried_on_a_call_that_creates_something() -> None:
    """Whether the server created the batch is unknown after a timeout; sending again could bill it twice."""
    calls, fn = flaky([ProviderError(ErrorKind.TIMEOUT, "timed out")])
    with pytest.raises(ProviderError):
        call_with_retry(fn, no_translation, policy([]), idempotent=False)
    assert len(calls) == 1
    calls, fn = flaky([ProviderError(ErrorKind.OVERLOADED, "529")])
    assert call_with_retry(fn, no_translation, policy([]), idempotent=False) == "ok"


def test_giving_up_after_the_last_attempt_raises_the_last_error() -> None:
    sleeps: list[float] = []
    calls, fn = flaky([ProviderError(ErrorKind.OVERLOADED, f"try {i}") for i in range(10)])
    with pytest.raises(ProviderError, match="try 2"):
        call_with_retry(fn, no_translation, policy(sleeps, attempts=3))
    assert len(calls) == 3 and len(sleeps) == 2


def test_sdk_exceptions_are_translated_and_others_pass_through() -> None:
    def translate(exc: BaseException) -> ProviderError | None:
        return ProviderError(ErrorKind.AUTH, "bad key") if isinstance(exc, PermissionError) else None

    def denied() -> None:
        raise PermissionError("401")

    with pytest.raises(ProviderError) as info:
        call_with_retry(denied, translate, policy([]))
    assert info.value.kind is ErrorKind.AUTH and isinstance(info.value.__cause__, PermissionError)

    def buggy() -> None:
        raise KeyError("a bug, not an API failure")

    with pytest.raises(KeyError):
        call_with_retry(buggy, translate, policy([]))


def test_a_stream_that_breaks_midway_is_reread_without_losing_or_repeating_items() -> None:
    opened: list[int] = []

    def open_stream() -> Iterator[str]:
        opened.append(1)
        yield "a"
        yield "b"
        if len(opened) == 1:
            raise ProviderError(ErrorKind.TIMEOUT, "connection dropped")
        yield "c"

    sleeps: list[float] = []
    items = list(stream_with_retry(open_stream, key=lambda s: s, translate=no_translation, policy=policy(sleeps)))
    assert items == ["a", "b", "c"]
    assert len(opened) == 2 and len(sleeps) == 1
