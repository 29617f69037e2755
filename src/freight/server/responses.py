"""Response helpers shared by the dialects: error envelopes, and result streams with their planted faults."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from starlette.responses import JSONResponse, StreamingResponse

from freight.server import anthropic_wire, openai_wire
from freight.server.faults import FaultSpec


class DroppedConnection(Exception):
    """Raised inside a results stream to cut the connection mid-body (the `drop_results` fault)."""


def anthropic_error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(anthropic_wire.error_body(error_type, message), status_code=status, headers=headers)


def openai_error(
    status: int,
    message: str,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(openai_wire.error_body(message, error_type, code, param), status_code=status, headers=headers)


def dialect_error(
    dialect: str, status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error in the shape of the dialect a path belongs to; `kind` is one of the keys of _ERROR_TYPES."""
    a_type, o_type, o_code = _ERROR_TYPES[kind]
    if dialect == "anthropic":
        return anthropic_error(status, a_type, message, headers)
    return openai_error(status, message, o_type, o_code, headers=headers)


_ERROR_TYPES: dict[str, tuple[str, str, str | None]] = {
    "auth": ("authentication_error", "invalid_request_error", "invalid_api_key"),
    "not_found": ("not_found_error", "invalid_request_error", None),
    "invalid": ("invalid_request_error", "invalid_request_error", None),
    "rate_limited": ("rate_limit_error", "requests", "rate_limit_exceeded"),
    "server_error": ("api_error", "server_error", None),
    "overloaded": ("overloaded_error", "server_error", "overloaded"),
    "too_large": ("request_too_large", "invalid_request_error", None),
}


def jsonl_stream(
    lines: Iterator[str],
    spec: FaultSpec,
    batch_id: str,
    download: int,
    media_type: str,
    total: int | None = None,
) -> StreamingResponse:
    """Stream JSON lines (no blank lines), with `malformed_results` (per batch) and `drop_results` (per download)."""
    malformed = spec.malformed_results > 0 and spec.draw("malformed", batch_id) < spec.malformed_results
    drop = spec.drop_results > 0 and spec.draw("drop", batch_id, download) < spec.drop_results
    duplicate = spec.duplicate_results > 0 and spec.draw("duplicate", batch_id) < spec.duplicate_results
    foreign = spec.foreign_results > 0 and spec.draw("foreign", batch_id) < spec.foreign_results
    drop_after = max(1, (total or 2) // 2)

    def body() -> Iterator[bytes]:
        first: str | None = None
        # Lines go out in ~64 KB pieces: each piece of a sync iterator costs a thread hop in Starlette.
        buf = bytearray()
        for n, line in enumerate(lines):
            if drop and n == drop_after:
                yield bytes(buf)
                raise DroppedConnection(f"planted fault: results of {batch_id} dropped after {n} lines")
            if n == 0:
                first = line
                if malformed:
                    line = line[: len(line) // 2]  # cut mid-object: not JSON
            buf += (line + "\n").encode()
            if len(buf) >= 65536:
                yield bytes(buf)
                buf.clear()
        if first is not None and duplicate:
            buf += (first + "\n").encode()
        if first is not None and foreign:
            buf += (_foreign(first) + "\n").encode()
        if buf:
            yield bytes(buf)

    return StreamingResponse(body(), media_type=media_type)


def _foreign(line: str) -> str:
    """A copy of a result line answering a request the batch never had (the `foreign_results` fault)."""
    obj = json.loads(line)
    for holder in (obj, obj.get("metadata") or {}):
        for key in ("custom_id", "key"):
            if isinstance(holder, dict) and key in holder:
                holder[key] = "not-in-this-batch"
    return dumps(obj)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def paged(fetch: Callable[[tuple[int, int] | None], list[Any]]) -> Iterator[Any]:
    """Rows in keyset pages: `fetch(after)` returns the rows after an (order_key, idx) key (None = from the start).

    Each page is its own short read, so a 100,000-line download never holds the rows in memory or a transaction open.
    """
    after: tuple[int, int] | None = None
    while True:
        page = fetch(after)
        if not page:
            return
        yield from page
        after = (page[-1][0], page[-1][1])
