"""The Anthropic dialect: POST /v1/messages and the Message Batches API, shaped as the `anthropic` SDK expects."""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from freight.domain import CUSTOM_ID_PATTERN, BatchState, Errored, ErrorKind, Expired, Outcome, Request, Succeeded
from freight.server import anthropic_wire
from freight.server.batch_rows import get_batch, insert_requests, is_ended, list_page, result_rows
from freight.server.context import Context
from freight.server.counting import count
from freight.server.processor import request_cancel
from freight.server.responses import anthropic_error, dumps, jsonl_stream
from freight.server.store import batches, requests
from freight.server.wire import Answerer, WireError, new_id, rfc3339

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)
_OUTCOME: TypeAdapter[Any] = TypeAdapter(Outcome)


class AnthropicDialect:
    name = "anthropic"
    response_prefix = "msg_"

    def to_request(self, params: Any, custom_id: str) -> Request:
        return anthropic_wire.to_request(params, custom_id)

    def answer(
        self, answerer: Answerer, params: Any, endpoint: str | None, custom_id: str, key: tuple[object, ...], now: float
    ) -> Succeeded | Errored | Expired:
        return answerer.answer(self.to_request(params, custom_id), key, now)

    def load(self, batch: sa.RowMapping, now: float) -> bool:
        return True  # the requests arrived with the create call

    def on_end(self, conn: sa.Connection, batch: sa.RowMapping, now: float) -> None:
        return None


def batch_view(row: sa.RowMapping, base_url: str) -> dict[str, Any]:
    state = BatchState(row["state"])
    ended = state.terminal
    status = "ended" if ended else "canceling" if state is BatchState.CANCELING else "in_progress"
    if ended:
        counts = {
            "processing": 0,
            "succeeded": row["n_succeeded"],
            "errored": row["n_errored"],
            "canceled": row["n_canceled"],
            "expired": row["n_expired"],
        }
    else:
        # As the SDK documents: requests count as processing until the whole batch has ended.
        counts = {"processing": row["total"], "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    return {
        "id": row["id"],
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": rfc3339(row["created_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "ended_at": rfc3339(row["ended_at"]) if ended else None,
        "cancel_initiated_at": rfc3339(row["cancel_initiated_at"]),
        "archived_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{row['id']}/results" if ended else None,
    }


def _base(request: HttpRequest) -> str:
    return str(request.base_url).rstrip("/")


def routes(ctx: Context) -> list[Route]:
    async def create_message(request: HttpRequest) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return anthropic_error(400, "invalid_request_error", "The request body is not valid JSON.")
        if isinstance(body, dict) and body.get("stream"):
            return anthropic_error(400, "invalid_request_error", "stream: freight serve does not stream; omit stream")
        return await run_in_threadpool(_sync_message, ctx, body)

    async def count_tokens(request: HttpRequest) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return anthropic_error(400, "invalid_request_error", "The request body is not valid JSON.")
        return await run_in_threadpool(_count_tokens, ctx, body)

    async def create_batch(request: HttpRequest) -> Response:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BYTES:
            return anthropic_error(413, "request_too_large", f"Request exceeds the maximum size of {MAX_BYTES} bytes.")
        raw = await request.body()
        if len(raw) > MAX_BYTES:
            return anthropic_error(413, "request_too_large", f"Request exceeds the maximum size of {MAX_BYTES} bytes.")
        try:
            body = json.loads(raw)
        except ValueError:
            return anthropic_error(400, "invalid_request_error", "The request body is not valid JSON.")
        del raw
        return await run_in_threadpool(_create_batch, ctx, body, _base(request))

    async def list_batches(request: HttpRequest) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return anthropic_error(400, "invalid_request_error", "limit: must be an integer between 1 and 1000")
        if q.get("after_id") and q.get("before_id"):
            return anthropic_error(400, "invalid_request_error", "use either before_id or after_id, not both")
        page = await run_in_threadpool(list_page, ctx.store, "anthropic", limit, q.get("after_id"), q.get("before_id"))
        if page is None:
            return anthropic_error(404, "not_found_error", "the batch named by the pagination cursor does not exist")
        rows, has_more = page
        data = [batch_view(r, _base(request)) for r in rows]
        return JSONResponse(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def retrieve(request: HttpRequest) -> Response:
        row = await run_in_threadpool(get_batch, ctx.store, "anthropic", request.path_params["batch_id"])
        if row is None:
            return _not_found(request.path_params["batch_id"])
        return JSONResponse(batch_view(row, _base(request)))

    async def cancel(request: HttpRequest) -> Response:
        return await run_in_threadpool(_cancel, ctx, request.path_params["batch_id"], _base(request))

    async def delete(request: HttpRequest) -> Response:
        return await run_in_threadpool(_delete, ctx, request.path_params["batch_id"])

    async def results(request: HttpRequest) -> Response:
        batch_id = request.path_params["batch_id"]
        row = await run_in_threadpool(get_batch, ctx.store, "anthropic", batch_id)
        if row is None:
            return _not_found(batch_id)
        if not is_ended(row):
            return anthropic_error(
                400, "invalid_request_error", f"Batch {batch_id} has not ended yet; results exist once it has ended."
            )
        lines = (_result_line(r) for r in result_rows(ctx.store, batch_id))
        return jsonl_stream(lines, ctx.config.faults, batch_id, ctx.tick(), "application/x-jsonl", row["total"])

    return [
        Route("/v1/messages", create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/messages/batches", create_batch, methods=["POST"]),
        Route("/v1/messages/batches", list_batches, methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}", retrieve, methods=["GET"]),
        Route("/v1/messages/batches/{batch_id}", delete, methods=["DELETE"]),
        Route("/v1/messages/batches/{batch_id}/cancel", cancel, methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}/results", results, methods=["GET"]),
    ]


def _not_found(batch_id: str) -> Response:
    return anthropic_error(404, "not_found_error", f"No message batch with id {batch_id!r}.")


def _sync_message(ctx: Context, body: Any) -> Response:
    try:
        request = anthropic_wire.to_request(body)
    except WireError as exc:
        return anthropic_error(400, "invalid_request_error", exc.message)
    now = ctx.now()
    with ctx.store.write() as conn:
        ctx.store.record(conn, "anthropic", None, [None], now)
    outcome = ctx.answerer.answer(request, ("sync", ctx.tick()), now, in_batch=False)
    if isinstance(outcome, Succeeded):
        return JSONResponse(anthropic_wire.message(outcome, request.model, request.stop_sequences, new_id("msg_")))
    assert isinstance(outcome, Errored)
    status, body_out = anthropic_wire.error_of(outcome)
    headers = {"retry-after": "1"} if outcome.kind is ErrorKind.RATE_LIMITED else None
    return JSONResponse(body_out, status_code=status, headers=headers)


def _count_tokens(ctx: Context, body: Any) -> Response:
    if not isinstance(body, dict):
        return anthropic_error(400, "invalid_request_error", "body: expected an object")
    try:
        # count_tokens takes no max_tokens: the request is otherwise a Messages request.
        request = anthropic_wire.to_request({"max_tokens": 1, **body})
    except WireError as exc:
        return anthropic_error(400, "invalid_request_error", exc.message)
    return JSONResponse({"input_tokens": count(ctx, "anthropic", request)})


def _create_batch(ctx: Context, body: Any, base_url: str) -> Response:
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        return anthropic_error(400, "invalid_request_error", "requests: a non-empty list of requests is required")
    if len(items) > MAX_REQUESTS:
        return anthropic_error(
            400, "invalid_request_error", f"requests: {len(items)} requests exceed the limit of {MAX_REQUESTS}"
        )
    seen: set[str] = set()
    for i, item in enumerate(items):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            return anthropic_error(
                400,
                "invalid_request_error",
                f"requests.{i}.custom_id: {custom_id!r} must be 1-64 characters of letters, digits, '_' and '-'",
            )
        if custom_id in seen:
            return anthropic_error(
                400, "invalid_request_error", f"requests.{i}.custom_id: {custom_id!r} is used more than once"
            )
        seen.add(custom_id)
        if not isinstance(item.get("params"), dict):
            return anthropic_error(400, "invalid_request_error", f"requests.{i}.params: Field required")
    now, cfg = ctx.now(), ctx.config
    batch_id = new_id("msgbatch_")
    with ctx.store.write() as conn:
        conn.execute(
            sa.insert(batches).values(
                id=batch_id,
                dialect="anthropic",
                state=BatchState.SUBMITTED.value,
                created_at=now,
                start_at=now + cfg.real(cfg.timings.queue),
                expires_at=now + cfg.window_seconds,
                total=len(items),
            )
        )
        rows = ((i, it["custom_id"], anthropic_wire.params_json(it["params"])) for i, it in enumerate(items))
        insert_requests(conn, batch_id, cfg.faults.seed, rows)
        ctx.store.record(conn, "anthropic", batch_id, [it["custom_id"] for it in items], now)
        row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().one()
    ctx.processor.wake()
    return JSONResponse(batch_view(row, base_url))


def _cancel(ctx: Context, batch_id: str, base_url: str) -> Response:
    row = get_batch(ctx.store, "anthropic", batch_id)
    if row is None:
        return _not_found(batch_id)
    state = BatchState(row["state"])
    ended = anthropic_error(400, "invalid_request_error", f"Batch {batch_id} has already ended; nothing to cancel.")
    if state.terminal:
        return ended
    if state is not BatchState.CANCELING:
        now, cfg = ctx.now(), ctx.config
        until = now + cfg.real(cfg.timings.cancel + cfg.faults.stuck_canceling)
        state = request_cancel(ctx.store, row["id"], now, until)
        if state.terminal:  # it ended between the read above and the cancel: as if it had ended before
            return ended
        ctx.processor.wake()
        row = get_batch(ctx.store, "anthropic", batch_id)
        assert row is not None
    return JSONResponse(batch_view(row, base_url))


def _delete(ctx: Context, batch_id: str) -> Response:
    row = get_batch(ctx.store, "anthropic", batch_id)
    if row is None:
        return _not_found(batch_id)
    if not is_ended(row):
        return anthropic_error(
            400, "invalid_request_error", f"Batch {batch_id} is still processing; cancel it, then delete it once ended."
        )
    with ctx.store.write() as conn:
        conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(deleted=True))
        conn.execute(sa.delete(requests).where(requests.c.batch_id == batch_id))
    return JSONResponse({"id": batch_id, "type": "message_batch_deleted"})


def _result_line(row: Any) -> str:
    outcome = _OUTCOME.validate_json(row.outcome)
    result: dict[str, Any]
    if isinstance(outcome, Succeeded):
        params = json.loads(row.params)
        msg = anthropic_wire.message(
            outcome, str(params.get("model", "")), params.get("stop_sequences") or [], row.response_id or new_id("msg_")
        )
        result = {"type": "succeeded", "message": msg}
    elif isinstance(outcome, Errored):
        result = {"type": "errored", "error": anthropic_wire.error_of(outcome)[1]}
    else:
        result = {"type": outcome.status}
    return dumps({"custom_id": row.custom_id, "result": result})
