"""The OpenAI dialect: POST /v1/chat/completions and the Batch API, shaped as the `openai` SDK expects."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from freight.domain import BatchState, Errored, ErrorKind, Expired, Request, Succeeded
from freight.server import openai_endpoints, openai_wire
from freight.server.batch_rows import get_batch, insert_requests, list_page
from freight.server.context import Context
from freight.server.counting import count
from freight.server.openai_files import get_file, iter_lines, write_results_files
from freight.server.processor import request_cancel, set_state
from freight.server.responses import dumps, openai_error
from freight.server.store import Store, batches, requests
from freight.server.wire import Answerer, WireError, new_id, unix

MAX_REQUESTS = 50_000
ENDPOINTS = openai_endpoints.OPENAI_ENDPOINTS
MAX_ERRORS = 100  # a failed batch lists at most this many errors
_STATUS = {
    BatchState.SUBMITTED: "validating",
    BatchState.IN_PROGRESS: "in_progress",
    BatchState.FINALIZING: "finalizing",
    BatchState.CANCELING: "cancelling",
    BatchState.ENDED: "completed",
    BatchState.CANCELED: "cancelled",
    BatchState.EXPIRED: "expired",
    BatchState.FAILED: "failed",
}


class OpenAIDialect:
    """OpenAI's batches; also Azure OpenAI's (`name="azure"`), which keeps its batches apart under its own name."""

    response_prefix = "chatcmpl-"

    def __init__(self, store: Store, seed: int, name: str = "openai", max_requests: int = MAX_REQUESTS) -> None:
        self.store = store
        self.seed = seed
        self.name = name
        self.max_requests = max_requests

    def to_request(self, params: Any, custom_id: str) -> Request:
        return openai_wire.to_request(params, custom_id)

    def answer(
        self, answerer: Answerer, params: Any, endpoint: str | None, custom_id: str, key: tuple[object, ...], now: float
    ) -> Succeeded | Errored | Expired:
        return openai_endpoints.answer(answerer, openai_endpoints.kind_of(endpoint), params, custom_id, key, now)

    def load(self, batch: sa.RowMapping, now: float) -> bool:
        """Validate the input file line by line, storing its requests; a bad file fails the batch with its errors."""
        check = _LineCheck(batch["endpoint"])
        with self.store.write() as conn:
            total = insert_requests(
                conn, batch["id"], self.seed, check.lines(iter_lines(self.store, batch["input_file_id"]))
            )
            if total > self.max_requests:
                check.error(
                    "too_many_requests", f"The file has {total} requests; a batch takes at most {self.max_requests}."
                )
            if total == 0 and not check.errors:
                check.error("empty_file", "The input file has no requests.")
            if check.errors:
                conn.execute(sa.delete(requests).where(requests.c.batch_id == batch["id"]))
                errors = {"object": "list", "data": check.errors[:MAX_ERRORS]}
                set_state(conn, batch, BatchState.FAILED, ended_at=now, errors=errors)
                return False
            custom_ids = conn.execute(
                sa.select(requests.c.custom_id).where(requests.c.batch_id == batch["id"]).order_by(requests.c.idx)
            ).scalars()
            self.store.record(conn, self.name, batch["id"], list(custom_ids), now)
            conn.execute(sa.update(batches).where(batches.c.id == batch["id"]).values(total=total, model=check.model))
        return True

    def on_end(self, conn: sa.Connection, batch: sa.RowMapping, now: float) -> None:
        ids = write_results_files(conn, self.store, batch, now)
        conn.execute(
            sa.update(batches)
            .where(batches.c.id == batch["id"])
            .values(output_file_id=ids.get("output"), error_file_id=ids.get("error"))
        )


class _LineCheck:
    """The real service's input-file validation, one line at a time, collecting `errors` as it goes."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.errors: list[dict[str, Any]] = []
        self.model: str | None = None
        self._seen: set[str] = set()

    def error(self, code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        self.errors.append({"code": code, "message": message, "param": param, "line": line})

    def lines(self, raw: Iterator[str]) -> Iterator[tuple[int, str, str]]:
        idx = 0
        for n, text in enumerate(raw, start=1):
            if not text.strip():
                continue
            item = self._check(n, text)
            if item is not None:
                yield idx, item[0], item[1]
                idx += 1

    def _check(self, n: int, text: str) -> tuple[str, str] | None:
        try:
            item = json.loads(text)
        except ValueError:
            self.error("invalid_json_line", "This line is not parseable as valid JSON.", n)
            return None
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            self.error("missing_required_parameter", "Missing required parameter: 'custom_id'.", n, "custom_id")
            return None
        custom_id = item["custom_id"]
        if custom_id in self._seen:
            self.error(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is a duplicate of another request; each custom_id must be unique.",
                n,
                "custom_id",
            )
            return None
        self._seen.add(custom_id)
        if item.get("method") != "POST":
            self.error("invalid_method", "The method of this request must be POST.", n, "method")
            return None
        if item.get("url") != self.endpoint:
            self.error(
                "invalid_url", f"The url of this request must match the batch endpoint {self.endpoint}.", n, "url"
            )
            return None
        body = item.get("body")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self.error("missing_required_parameter", "Missing required parameter: 'body.model'.", n, "body.model")
            return None
        if self.model is None:
            self.model = body["model"]
        elif body["model"] != self.model:
            self.error(
                "mismatched_model",
                f"This line's model {body['model']!r} differs from {self.model!r}; a batch takes one model.",
                n,
                "body.model",
            )
            return None
        return custom_id, dumps(body)


def batch_view(row: sa.RowMapping) -> dict[str, Any]:
    state = BatchState(row["state"])
    ended = row["ended_at"]
    return {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": row["errors"],
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": _STATUS[state],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "created_at": unix(row["created_at"]),
        "in_progress_at": unix(row["in_progress_at"]),
        "expires_at": unix(row["expires_at"]),
        "finalizing_at": unix(row["finalizing_at"]),
        "completed_at": unix(ended) if state is BatchState.ENDED else None,
        "failed_at": unix(ended) if state is BatchState.FAILED else None,
        "expired_at": unix(ended) if state is BatchState.EXPIRED else None,
        "cancelling_at": unix(row["cancel_initiated_at"]),
        "cancelled_at": unix(ended) if state is BatchState.CANCELED else None,
        "request_counts": {
            "total": row["total"],
            "completed": row["n_succeeded"],
            "failed": row["n_errored"],
        },
        "metadata": row["metadata"],
        "model": row["model"],
        "usage": {
            "input_tokens": row["input_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": row["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": row["input_tokens"] + row["output_tokens"],
        },
    }


def routes(
    ctx: Context,
    dialect: str = "openai",
    prefix: str = "/v1",
    sync_prefix: str | None = None,
    endpoints: tuple[str, ...] = ENDPOINTS,
) -> list[Route]:
    """The routes under `prefix`, their batches kept under `dialect` (Azure mounts these same handlers twice, its
    synchronous endpoints under `sync_prefix`, /openai/deployments/{deployment})."""

    def sync(kind: str) -> Callable[[HttpRequest], Awaitable[Response]]:
        async def handle(request: HttpRequest) -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return openai_error(400, "We could not parse the JSON body of your request.")
            if isinstance(body, dict) and body.get("stream"):
                return openai_error(400, "freight serve does not stream; omit stream", param="stream")
            if isinstance(body, dict) and "deployment" in request.path_params:
                # Azure: the deployment in the path is the model, whatever the body says.
                body["model"] = request.path_params["deployment"]
            return await run_in_threadpool(_sync, ctx, body, dialect, kind)

        return handle

    async def input_tokens(request: HttpRequest) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return openai_error(400, "We could not parse the JSON body of your request.")
        return await run_in_threadpool(_input_tokens, ctx, body, dialect)

    async def create(request: HttpRequest) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return openai_error(400, "We could not parse the JSON body of your request.")
        return await run_in_threadpool(_create, ctx, body if isinstance(body, dict) else {}, dialect, endpoints)

    async def list_batches(request: HttpRequest) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return openai_error(400, "limit must be an integer between 1 and 100", param="limit")
        page = await run_in_threadpool(list_page, ctx.store, dialect, limit, q.get("after"), None)
        if page is None:
            return openai_error(404, f"No such Batch object: {q.get('after')}", param="after")
        rows, has_more = page
        data = [batch_view(r) for r in rows]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }
        )

    async def retrieve(request: HttpRequest) -> Response:
        row = await run_in_threadpool(get_batch, ctx.store, dialect, request.path_params["batch_id"])
        if row is None:
            return _not_found(request.path_params["batch_id"])
        return JSONResponse(batch_view(row))

    async def cancel(request: HttpRequest) -> Response:
        return await run_in_threadpool(_cancel, ctx, request.path_params["batch_id"], dialect)

    return [
        Route(f"{prefix}/responses/input_tokens", input_tokens, methods=["POST"]),
        *(
            Route(f"{sync_prefix or prefix}{path}", sync(kind), methods=["POST"])
            for path, kind in openai_endpoints.KINDS.items()
        ),
        # AzureOpenAI sends Responses to /openai/responses: that API is not under a deployment (the body names it).
        *([Route(f"{prefix}/responses", sync(openai_endpoints.RESPONSES), methods=["POST"])] if sync_prefix else []),
        Route(f"{prefix}/batches", create, methods=["POST"]),
        Route(f"{prefix}/batches", list_batches, methods=["GET"]),
        Route(f"{prefix}/batches/{{batch_id}}", retrieve, methods=["GET"]),
        Route(f"{prefix}/batches/{{batch_id}}/cancel", cancel, methods=["POST"]),
    ]


def _not_found(batch_id: str) -> Response:
    return openai_error(404, f"No such Batch object: {batch_id}", param="id")


def _sync(ctx: Context, body: Any, dialect: str, kind: str) -> Response:
    now = ctx.now()
    try:
        outcome = openai_endpoints.answer(ctx.answerer, kind, body, "sync", ("sync", ctx.tick()), now, in_batch=False)
    except WireError as exc:
        return openai_error(400, exc.message, param=exc.param)
    with ctx.store.write() as conn:
        ctx.store.record(conn, dialect, None, [None], now)
    if isinstance(outcome, Succeeded):
        return JSONResponse(openai_endpoints.render(kind, outcome, body, new_id("chatcmpl-"), int(now)))
    assert isinstance(outcome, Errored)
    status, err = openai_wire.error_of(outcome)
    headers = {"retry-after": "1"} if outcome.kind is ErrorKind.RATE_LIMITED else None
    return JSONResponse(err, status_code=status, headers=headers)


def _create(ctx: Context, body: dict[str, Any], dialect: str, endpoints: tuple[str, ...]) -> Response:
    for key in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(key), str):
            return openai_error(
                400, f"Missing required parameter: '{key}'.", code="missing_required_parameter", param=key
            )
    if body["completion_window"] != "24h":
        return openai_error(400, "completion_window: only '24h' is supported.", param="completion_window")
    if body["endpoint"] not in endpoints:
        return openai_error(400, f"endpoint: freight serve supports {', '.join(endpoints)} so far.", param="endpoint")
    source = get_file(ctx.store, body["input_file_id"])
    if source is None:
        return openai_error(404, f"No such File object: {body['input_file_id']}", param="input_file_id")
    if source["purpose"] != "batch":
        return openai_error(
            400,
            f"File {source['id']} has purpose {source['purpose']!r}; upload it with purpose 'batch'.",
            param="input_file_id",
        )
    now, cfg = ctx.now(), ctx.config
    batch_id = new_id("batch_")
    with ctx.store.write() as conn:
        conn.execute(
            sa.insert(batches).values(
                id=batch_id,
                dialect=dialect,
                state=BatchState.SUBMITTED.value,
                created_at=now,
                start_at=now + cfg.real(cfg.timings.validate),
                expires_at=now + cfg.window_seconds,
                total=0,
                input_file_id=source["id"],
                endpoint=body["endpoint"],
                completion_window="24h",
                metadata=body.get("metadata"),
            )
        )
        row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().one()
    ctx.processor.wake()
    return JSONResponse(batch_view(row))


def _cancel(ctx: Context, batch_id: str, dialect: str) -> Response:
    row = get_batch(ctx.store, dialect, batch_id)
    if row is None:
        return _not_found(batch_id)
    state = BatchState(row["state"])
    if state.terminal:
        return openai_error(400, f"Cannot cancel a batch with status '{_STATUS[state]}'.")
    if state is not BatchState.CANCELING:
        now, cfg = ctx.now(), ctx.config
        until = now + cfg.real(cfg.timings.cancel + cfg.faults.stuck_canceling)
        state = request_cancel(ctx.store, row["id"], now, until)
        if state.terminal:  # it ended between the read above and the cancel: as if it had ended before
            return openai_error(400, f"Cannot cancel a batch with status '{_STATUS[state]}'.")
        ctx.processor.wake()
        row = get_batch(ctx.store, dialect, batch_id)
        assert row is not None
    return JSONResponse(batch_view(row))


def _input_tokens(ctx: Context, body: Any, dialect: str) -> Response:
    """POST /responses/input_tokens: a Responses request's `input` (a string or message items) and `instructions`,
    counted by the engine's tokenizer."""
    if not isinstance(body, dict) or not body.get("model"):
        return openai_error(400, "you must provide a model parameter", param="model")
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        return openai_error(400, "input: expected a string or a non-empty array of input items", param="input")
    messages: list[Any] = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    messages += [{"role": i.get("role"), "content": i.get("content")} for i in items if isinstance(i, dict)]
    try:
        request = openai_wire.to_request({"model": body["model"], "messages": messages})
    except WireError as exc:
        return openai_error(400, exc.message, param=exc.param)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": count(ctx, dialect, request)})
