"""Split a stream of requests into batches that a provider accepts: within its request count and its byte size.

Provider-neutral: the limits come from `Provider.limits` and the size of each request from `Provider.request_bytes`,
so the bytes counted are the bytes the adapter will actually send. The input is consumed lazily and at most one open
batch per model is held in memory, so a job of millions of requests never sits in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from freight.domain import Request
from freight.providers.protocol import Limits, Provider, RequestRefused


@dataclass
class _Open:
    requests: list[Request] = field(default_factory=list)
    size: int = 0


def pack(
    requests: Iterable[Request],
    *,
    max_requests: int,
    max_bytes: int,
    size: Callable[[Request], int],
    one_model_per_batch: bool = False,
) -> Iterator[list[Request]]:
    """Yield batches (lists of requests, in input order within each) that each hold at most `max_requests` requests
    and at most `max_bytes` bytes as measured by `size`.

    Greedy and streaming: a batch is yielded as soon as the next request would not fit in it, and the rest at the end.
    Raises `RequestRefused` for a request that alone exceeds a limit, and for a custom_id seen earlier in the stream
    (results are correlated by custom_id, so two requests with one id could never be told apart).
    """
    if max_requests < 1 or max_bytes < 1:
        raise ValueError("a batch must be allowed at least one request and one byte")
    seen: set[str] = set()
    # One open batch per model when the provider wants one model per batch (OpenAI), else a single one.
    open_batches: dict[str, _Open] = {}
    for request in requests:
        if request.custom_id in seen:
            raise RequestRefused(
                request.custom_id,
                "this custom_id appears twice in the input; give every request its own custom_id",
            )
        seen.add(request.custom_id)
        n = size(request)
        if n > max_bytes:
            raise RequestRefused(
                request.custom_id,
                f"it takes {n:,} bytes, more than the {max_bytes:,} a whole batch may hold; "
                "shorten it or send it synchronously",
            )
        # A batch also serves one API (chat, responses, embeddings): a provider's batch names one endpoint.
        key = f"{request.api} {request.model}" if one_model_per_batch else request.api
        current = open_batches.setdefault(key, _Open())
        if current.requests and (len(current.requests) >= max_requests or current.size + n > max_bytes):
            yield current.requests
            current = open_batches[key] = _Open()
        current.requests.append(request)
        current.size += n
    for leftover in open_batches.values():
        if leftover.requests:
            yield leftover.requests


def pack_for(provider: Provider, requests: Iterable[Request], limits: Limits | None = None) -> Iterator[list[Request]]:
    """`pack` with the provider's own limits (or tighter ones, e.g. small batches for a sample run)."""
    limits = limits or provider.limits
    return pack(
        requests,
        max_requests=limits.max_requests_per_batch,
        max_bytes=limits.max_bytes_per_batch,
        size=provider.request_bytes,
        one_model_per_batch=limits.one_model_per_batch,
    )
