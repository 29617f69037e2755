"""Small provider-neutral helpers the adapters share (no provider is named here)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from freight.domain import Batch, Errored, ErrorKind, Outcome, Request, Result
from freight.providers.protocol import Limits, ProviderError, RequestRefused


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a response asks us to wait: `retry-after-ms` (more precise, sent by both providers) or `retry-after`.
    An HTTP-date form is ignored (the backoff applies instead): neither provider sends one."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None


def parse_json(text: str) -> Any:
    """The JSON value of a reply, or None when it does not parse (validation against the schema is the runner's)."""
    stripped = text.strip()
    # Models sometimes wrap JSON in a Markdown fence even when asked for JSON only.
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        return json.loads(stripped)
    except ValueError:
        return None


def check_ended(batch: Batch) -> None:
    """Results exist once a batch is over; asking earlier is the caller's mistake, not a transient failure."""
    if not batch.state.terminal:
        raise ProviderError(
            ErrorKind.INVALID_REQUEST,
            f"{batch.provider}: batch {batch.provider_batch_id} has not ended yet (it is {batch.state.value}); "
            "read its results once get_batch says it has ended",
            raw_type="not_ended",
        )


def refuse_for_batch(requests: Sequence[Request], limits: Limits) -> None:
    """Raise `RequestRefused` for the first request a batch of this provider cannot carry."""
    if not requests:
        raise ValueError("a batch needs at least one request")
    if len(requests) > limits.max_requests_per_batch:
        raise RequestRefused(
            requests[limits.max_requests_per_batch].custom_id,
            f"the batch holds {len(requests):,} requests, more than the {limits.max_requests_per_batch:,} allowed; "
            "pack it with freight.providers.packing",
        )
    seen: set[str] = set()
    first_model = requests[0].model
    for request in requests:
        reason = request.needs_sync()
        if reason is not None and not limits.batch_supports_tools:
            raise RequestRefused(request.custom_id, f"cannot go in a batch because {reason}; send it synchronously")
        if request.custom_id in seen:
            raise RequestRefused(
                request.custom_id, "this custom_id appears twice in the batch; custom_ids must be unique"
            )
        seen.add(request.custom_id)
        if limits.one_model_per_batch and request.model != first_model:
            raise RequestRefused(
                request.custom_id,
                f"its model {request.model!r} differs from the batch's {first_model!r}; this provider takes one "
                "model per batch (pack with one_model_per_batch)",
            )


# --- results files ----------------------------------------------------------------------------------------------

log = logging.getLogger(__name__)


def _id_in_line(field: str) -> re.Pattern[str]:
    return re.compile(rf'"{field}"\s*:\s*"([A-Za-z0-9_-]{{1,64}})"')


Line = tuple[str, dict[str, Any] | None]


def decode_lines(lines: Iterable[str | bytes], id_field: str = "custom_id") -> Iterator[Line]:
    """Each JSONL results line as (id, object); a line that is not valid JSON as (id, None) when its id can still
    be read off it, so the request is reported instead of silently missing. `id_field` names the line's id
    (`custom_id` for Anthropic and OpenAI, `key` for Gemini)."""
    id_in_line = _id_in_line(id_field)
    for raw in lines:
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get(id_field), str):
            yield obj[id_field], obj
            continue
        found = id_in_line.search(text)
        if found:
            yield found.group(1), None
        else:
            log.warning("skipped a results line that is not valid JSON and names no %s: %.80r", id_field, text)


def line_key(line: Line) -> str:
    """Dedup key across re-reads of a results stream; a broken line must not hide a good line for the same id."""
    custom_id, obj = line
    return custom_id if obj is not None else "broken:" + custom_id


OverflowCounts = Callable[[str], "tuple[int, int] | None"]
OutcomeT = TypeVar("OutcomeT", bound=Outcome)


def with_overflow(outcome: OutcomeT, counts: OverflowCounts | None) -> OutcomeT:
    """A context overflow with the (prompt tokens, window) its adapter read from the provider's message."""
    if counts is None or not isinstance(outcome, Errored) or outcome.kind is not ErrorKind.CONTEXT_OVERFLOW:
        return outcome
    found = counts(outcome.message)
    if found is None:
        return outcome
    return outcome.model_copy(update={"prompt_tokens": found[0], "context_window": found[1]})


def correlate(
    lines: Iterable[Line], outcome: Callable[[dict[str, Any]], Outcome], overflow: OverflowCounts | None = None
) -> Iterator[Result]:
    """Results from decoded lines; ids whose only line was broken come last, as a retryable `Errored`."""
    done: set[str] = set()
    broken: dict[str, None] = {}
    for custom_id, obj in lines:
        if obj is None:
            broken[custom_id] = None
            continue
        done.add(custom_id)
        yield Result(custom_id=custom_id, outcome=with_overflow(outcome(obj), overflow))
    for custom_id in broken:
        if custom_id not in done:
            yield Result(
                custom_id=custom_id,
                outcome=Errored(
                    kind=ErrorKind.UNKNOWN,
                    raw_type="malformed_result",
                    message="the provider's results line for this request was not valid JSON; send the request again",
                ),
            )
