"""The one retry policy for every provider call: exponential backoff with full jitter, honouring retry-after.

The SDKs' own retries are switched off (`max_retries=0`) in every adapter, so a call is retried here or nowhere: one
place decides how long freight waits, the waits are visible to tests (the sleep is injected), and a provider asking for
a very long pause makes us give up at once instead of blocking a worker for minutes.

Adapters translate each SDK exception into a `ProviderError` first; this module only reads `kind` and `retry_after`,
so it never names a provider.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from freight.domain import ErrorKind
from freight.providers.protocol import ProviderError

T = TypeVar("T")

# Failures of the service, not of the request: sending the same bytes again can succeed. UNKNOWN is retryable for the
# runner (later, as a new attempt) but not here: an error nobody recognizes is not worth hammering the API with.
TRANSIENT = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT})

Translate = Callable[[BaseException], ProviderError | None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    initial_delay: float = 1.0
    max_delay: float = 60.0
    # A retry-after longer than this is not waited out inline: the error surfaces and the runner comes back later.
    max_retry_after: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, error: ProviderError) -> float:
        """How long to wait after failed attempt number `attempt` (1-based)."""
        if error.retry_after is not None and error.retry_after >= 0:
            return error.retry_after
        ceiling = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def should_retry(self, error: BaseException, *, idempotent: bool) -> bool:
        if not isinstance(error, ProviderError) or error.kind not in TRANSIENT:
            return False
        # A timeout or dropped connection leaves it unknown whether the server acted; re-sending a call that creates
        # something (a batch) could create it twice and bill twice, so only idempotent calls retry those.
        if error.kind is ErrorKind.TIMEOUT and not idempotent:
            return False
        return error.retry_after is None or error.retry_after <= self.max_retry_after


def _translated(fn: Callable[[], T], translate: Translate) -> T:
    try:
        return fn()
    except ProviderError:
        raise
    except Exception as exc:
        err = translate(exc)
        if err is None:
            raise
        raise err from exc


def call_with_retry(fn: Callable[[], T], translate: Translate, policy: RetryPolicy, *, idempotent: bool = True) -> T:
    """Call `fn`, retrying transient failures; any failure left over surfaces as a `ProviderError`."""

    def wait(state: RetryCallState) -> float:
        assert state.outcome is not None
        err = state.outcome.exception()
        assert isinstance(err, ProviderError)
        return policy.delay(state.attempt_number, err)

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception(lambda e: policy.should_retry(e, idempotent=idempotent)),
        sleep=policy.sleep,
        reraise=True,
    )
    try:
        return cast(T, retrying(_translated, fn, translate))
    except ProviderError as err:
        if idempotent or err.kind is not ErrorKind.TIMEOUT:
            raise
        raise ProviderError(
            err.kind,
            f"{err}; it may have taken effect anyway: list the provider's batches before submitting these requests "
            "again, or they may run (and be billed) twice",
            raw_type=err.raw_type,
            status=err.status,
        ) from err


def stream_with_retry(
    open_stream: Callable[[], Iterable[T]], key: Callable[[T], str], translate: Translate, policy: RetryPolicy
) -> Iterator[T]:
    """Iterate a stream that may break midway: reopen it and skip the items (by key) an earlier pass yielded.

    Results streams are re-readable from the start, so a dropped connection costs a re-read, never a lost or doubled
    result. A key repeated within one pass is passed on as it came: the provider really sent it twice, and the caller
    reports that rather than have it vanish here. Only keys are remembered, not items.
    """
    delivered: set[str] = set()  # by earlier passes
    attempt = 1
    while True:
        this_pass: set[str] = set()
        try:
            for item in _translated(lambda: iter(open_stream()), translate):
                k = key(item)
                again = k in delivered and k not in this_pass
                this_pass.add(k)
                if not again:
                    yield item
            return
        except Exception as exc:
            delivered |= this_pass
            err = exc if isinstance(exc, ProviderError) else translate(exc)
            if err is None:
                raise
            if attempt >= policy.attempts or not policy.should_retry(err, idempotent=True):
                if err is exc:
                    raise
                raise err from exc
            policy.sleep(policy.delay(attempt, err))
            attempt += 1
