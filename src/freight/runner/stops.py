"""When the runner stops a job: errors that cannot heal, and transient ones that kept failing past their bound.

A revoked key, a batch id the provider does not know, a batch refused as a whole: polling again changes nothing, so
the job is stopped (`JobState.STOPPED`, resumable) and the run raises `JobStopped` with the provider's own message and
what to check. Which variable holds the key and where requests go is asked of the adapter (`key_env`, `base_url`):
no provider is named here.
"""

from __future__ import annotations

from collections import Counter

from freight.domain import ErrorKind
from freight.providers import Provider, ProviderError

# Errors that will fail the same way however often they are retried.
UNHEALABLE = frozenset({ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.INVALID_REQUEST})


def unhealable(exc: ProviderError) -> bool:
    return exc.kind in UNHEALABLE


def advice(provider: Provider, exc: ProviderError, job_id: str) -> str:
    """What to check, for this kind of error, in the user's own terms (variable, URL, command)."""
    where = provider.base_url or f"{provider.name}'s own API"
    resume = f"then `freight resume {job_id}`"
    if exc.kind is ErrorKind.AUTH:
        return f"check the key in {provider.key_env} (revoked, expired, or of another account?) for {where}; {resume}"
    if exc.kind is ErrorKind.NOT_FOUND:
        return (
            f"the provider at {where} does not know it: is {provider.key_env} the key of the account that submitted "
            f"it, and is the base URL the one it was submitted to? {resume}"
        )
    return f"the provider at {where} refused it as a whole; fix the cause it names, {resume}"


class Strikes:
    """Consecutive transient failures per operation (polling one batch, reading its results): reset on success,
    and past `limit` the job stops rather than retrying forever."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()

    def fail(self, key: str) -> bool:
        """Count one failure; True when this was one too many."""
        self._counts[key] += 1
        return self._counts[key] > self.limit

    def ok(self, key: str) -> None:
        self._counts.pop(key, None)
