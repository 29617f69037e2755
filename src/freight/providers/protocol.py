"""What every provider adapter implements. Nothing outside `freight.providers` names a provider.

Adapters are discovered through the `freight.providers` entry-point group (see pyproject.toml), so a new provider is
a new module plus one line of packaging, not a branch in the runner.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from freight.domain import Batch, Errored, ErrorKind, FreightError, Request, Result, Succeeded


class ProviderError(FreightError):
    """An API call failed after the adapter's own retries. `kind.retryable` says whether to try again later."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        raw_type: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.raw_type = raw_type
        self.status = status
        # Seconds the provider asked us to wait (its retry-after header), when it said.
        self.retry_after = retry_after


class RequestRefused(FreightError):
    """A request that this path can never carry (too large for a batch, tools in a batch ...)."""

    def __init__(self, custom_id: str, reason: str) -> None:
        super().__init__(f"request {custom_id}: {reason}")
        self.custom_id = custom_id
        self.reason = reason


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_requests_per_batch: int
    max_bytes_per_batch: int
    custom_id_pattern: str
    window_hours: float
    # Per model; `default_*` applies to a model the table does not list.
    context_window: dict[str, int] = {}
    max_output_tokens: dict[str, int] = {}
    default_context_window: int = 200_000
    default_max_output_tokens: int = 8_192
    batch_supports_tools: bool = False  # no provider runs a multi-turn tool loop inside a batch
    one_model_per_batch: bool = False

    def context_for(self, model: str) -> int:
        return self.context_window.get(model, self.default_context_window)

    def max_output_for(self, model: str) -> int:
        return self.max_output_tokens.get(model, self.default_max_output_tokens)


class TokenCount(BaseModel):
    """A request's input tokens: from the provider's own counter, or - where it has none - an estimate, said so."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int
    estimated: bool = False
    how: str = ""  # "anthropic messages.count_tokens", "estimate: 4 characters per token" ...


class Provider(Protocol):
    name: str
    # The environment variable that holds this provider's API key: asked of the adapter (a class attribute, so it is
    # read without building a client), so a plugin provider is resolved exactly like a built-in one.
    key_env: str
    limits: Limits
    # Where it sends requests (None: the provider's own API): with key_env, what an error that cannot heal tells the
    # user to check.
    base_url: str | None

    def send(self, request: Request) -> Succeeded | Errored:
        """One synchronous call. A request-level failure is an `Errored`; an API that cannot be reached raises."""
        ...

    def count_tokens(self, request: Request) -> TokenCount:
        """The input tokens of `request` as built for sending, by the provider's own counting endpoint (free, and
        never an inference); an estimate marked `estimated` where the provider has none."""
        ...

    def request_bytes(self, request: Request) -> int:
        """The size this request takes in a batch body / input file, for packing."""
        ...

    def submit_batch(self, requests: Sequence[Request], ref: str | None = None) -> Batch:
        """Submit requests already packed within the limits. Raises RequestRefused for a request a batch can't carry.

        `ref` is the caller's own name for the batch; the adapter leaves it where `find_batch` can see it (metadata,
        where the provider has any)."""
        ...

    def find_batches(self, ref: str, n_requests: int, since: datetime) -> list[Batch]:
        """Batches that may be the one submitted with `ref`: the one carrying it in its metadata, or, where the
        provider keeps no metadata, every batch of `n_requests` created since `since`. How a run that died between
        submitting and recording finds its batch again (the caller rules out the batches it knows)."""
        ...

    def get_batch(self, batch_id: str) -> Batch: ...

    def iter_results(self, batch_id: str) -> Iterator[Result]:
        """Stream an ended batch's results, in whatever order the provider returns them."""
        ...

    def cancel_batch(self, batch_id: str) -> Batch: ...
