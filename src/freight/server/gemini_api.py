"""The Gemini dialect, under /gemini: `models/{model}:generateContent` and batch mode, as `google-genai` calls them.

Paths are relative to `{base_url}/{api_version}/` (the SDK 3.3 defaults to `v1`; `v1beta` is accepted too):
`POST models/{model}:batchGenerateContent` with inline requests or an uploaded file's name, `GET batches`,
`GET|DELETE batches/{id}`, `POST batches/{id}:cancel`. Results come back the way the input came: inline
(`inlinedResponses`) or as a file (`responsesFile`, fetched with `files/{id}:download`), each naming its key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from freight.domain import BatchState, Errored, Expired, Request, Succeeded
from freight.server import gemini_embed, gemini_wire
from freight.server.batch_rows import get_batch, insert_requests, list_page, result_rows
from freight.server.context import Context
from freight.server.counting import count
from freight.server.gemini_files import gemini_file, result_item, write_results_file
from freight.server.openai_files import iter_lines
from freight.server.processor import request_cancel
from freight.server.responses import dumps
from freight.server.store import Store, batches, requests
from freight.server.wire import Answerer, WireError, new_id

DIALECT = "gemini"
VERSIONS = ("v1", "v1beta")
MAX_INLINE_BYTES = 20 * 1024 * 1024
WINDOW_HOURS = 48.0


class GeminiDialect:
    name = DIALECT
    response_prefix = "resp-"

    def __init__(self, store: Store, seed: int) -> None:
        self.store = store
        self.seed = seed

    def to_request(self, params: Any, custom_id: str) -> Request:
        if params.get("invalid"):
            raise WireError(params["invalid"])
        return gemini_wire.to_request(params.get("request"), custom_id, params.get("model", ""))

    def answer(
        self, answerer: Answerer, params: Any, endpoint: str | None, custom_id: str, key: tuple[object, ...], now: float
    ) -> Succeeded | Errored | Expired:
        if params.get("invalid"):
            raise WireError(params["invalid"])
        if params.get("endpoint") == gemini_embed.ENDPOINT:
            return gemini_embed.answer(answerer, params["request"], params.get("model", ""), key, now)
        return answerer.answer(self.to_request(params, custom_id), key, now)

    def load(self, batch: sa.RowMapping, now: float) -> bool:
        """Read an input file's lines into requests; a line that is not a keyed request fails as that request."""
        if not batch["input_file_id"]:
            return True  # inline requests arrived with the create call
        with self.store.write() as conn:
            rows = _file_rows(iter_lines(self.store, batch["input_file_id"]), batch["model"], batch["endpoint"])
            total = insert_requests(conn, batch["id"], self.seed, rows)
            custom_ids = conn.execute(
                sa.select(requests.c.custom_id).where(requests.c.batch_id == batch["id"]).order_by(requests.c.idx)
            ).scalars()
            # Recorded under the batch's name as the API shows it (batches/{id}), as clients know it.
            self.store.record(conn, DIALECT, f"batches/{batch['id']}", list(custom_ids), now)
            conn.execute(sa.update(batches).where(batches.c.id == batch["id"]).values(total=total))
        return True

    def on_end(self, conn: sa.Connection, batch: sa.RowMapping, now: float) -> None:
        if batch["input_file_id"]:
            file_id = write_results_file(conn, batch, now)
            conn.execute(sa.update(batches).where(batches.c.id == batch["id"]).values(output_file_id=file_id))


def _file_rows(lines: Iterator[str], model: str, endpoint: str | None) -> Iterator[tuple[int, str, str]]:
    idx = 0
    for n, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except ValueError:
            item = None
        key = item.get("key") if isinstance(item, dict) else None
        if isinstance(key, str) and isinstance(item, dict) and isinstance(item.get("request"), dict):
            params = {"model": model, "request": item["request"], "endpoint": endpoint}
        else:
            key = key if isinstance(key, str) else f"line-{n}"
            params = {"model": model, "invalid": f"line {n}: expected {{'key': ..., 'request': {{...}}}} as JSON"}
        yield idx, key, dumps(params)
        idx += 1


def _output(ctx: Context, row: sa.RowMapping) -> dict[str, Any] | None:
    state = BatchState(row["state"])
    if not state.terminal or state is BatchState.FAILED:
        return None
    if row["output_file_id"]:
        return {"responsesFile": row["output_file_id"]}
    if row["endpoint"] == gemini_embed.ENDPOINT:
        # Inline embeddings carry no key or metadata: their only correlation is the order, the requests' own.
        ordered = sorted(result_rows(ctx.store, row["id"]), key=lambda r: r.idx)
        embedded = [result_item(r, with_key=False) for r in ordered]
        return {"inlinedEmbedContentResponses": {"inlinedResponses": embedded}}
    items = [result_item(r, with_key=False) for r in result_rows(ctx.store, row["id"])]
    return {"inlinedResponses": {"inlinedResponses": items}}


def routes(ctx: Context) -> list[Route]:
    async def generate(request: HttpRequest) -> Response:
        if request.path_params["version"] not in VERSIONS:
            return _no_version(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return gemini_wire.invalid("Invalid JSON payload received.")
        return await run_in_threadpool(_generate, ctx, body, request.path_params["model"])

    async def count_tokens(request: HttpRequest) -> Response:
        if request.path_params["version"] not in VERSIONS:
            return _no_version(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return gemini_wire.invalid("Invalid JSON payload received.")
        return await run_in_threadpool(_count_tokens, ctx, body, request.path_params["model"])

    async def create(request: HttpRequest) -> Response:
        if request.path_params["version"] not in VERSIONS:
            return _no_version(request)
        raw = await request.body()
        if len(raw) > MAX_INLINE_BYTES:
            return gemini_wire.invalid(
                f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes. "
                "Upload the requests as a JSONL file and pass its name instead."
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return gemini_wire.invalid("Invalid JSON payload received.")
        del raw
        endpoint = gemini_embed.ENDPOINT if request.url.path.endswith(gemini_embed.BATCH_SUFFIX) else None
        return await run_in_threadpool(_create, ctx, body, request.path_params["model"], endpoint)

    async def embed(request: HttpRequest) -> Response:
        if request.path_params["version"] not in VERSIONS:
            return _no_version(request)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return gemini_wire.invalid("Invalid JSON payload received.")
        many = request.url.path.endswith(":batchEmbedContents")
        return await run_in_threadpool(gemini_embed.sync, ctx, body, request.path_params["model"], many)

    async def list_batches(request: HttpRequest) -> Response:
        q = request.query_params
        try:
            size = int(q.get("pageSize", "50"))
        except ValueError:
            size = 0
        if not 1 <= size <= 1000:
            return gemini_wire.invalid("pageSize must be between 1 and 1000")
        page = await run_in_threadpool(list_page, ctx.store, DIALECT, size, q.get("pageToken") or None, None)
        if page is None:
            return gemini_wire.invalid("Invalid page token.")
        rows, has_more = page
        out: dict[str, Any] = {"operations": [gemini_wire.batch_view(r, _output(ctx, r)) for r in rows]}
        if has_more and rows:
            out["nextPageToken"] = rows[-1]["id"]
        return JSONResponse(out)

    async def retrieve(request: HttpRequest) -> Response:
        row = await run_in_threadpool(get_batch, ctx.store, DIALECT, request.path_params["batch_id"])
        if row is None:
            return _not_found(request.path_params["batch_id"])
        return JSONResponse(await run_in_threadpool(lambda: gemini_wire.batch_view(row, _output(ctx, row))))

    async def cancel(request: HttpRequest) -> Response:
        return await run_in_threadpool(_cancel, ctx, request.path_params["batch_id"])

    async def delete(request: HttpRequest) -> Response:
        batch_id = request.path_params["batch_id"]
        if await run_in_threadpool(get_batch, ctx.store, DIALECT, batch_id) is None:
            return _not_found(batch_id)
        # Like google.longrunning's delete: the client loses interest in the job; a running one is not cancelled.
        with ctx.store.write() as conn:
            conn.execute(sa.update(batches).where(batches.c.id == batch_id).values(deleted=True))
        return JSONResponse({})

    return [
        Route("/gemini/{version}/models/{model}:generateContent", generate, methods=["POST"]),
        Route("/gemini/{version}/models/{model}:countTokens", count_tokens, methods=["POST"]),
        Route("/gemini/{version}/models/{model}:batchGenerateContent", create, methods=["POST"]),
        Route("/gemini/{version}/models/{model}" + gemini_embed.BATCH_SUFFIX, create, methods=["POST"]),
        Route("/gemini/{version}/models/{model}:embedContent", embed, methods=["POST"]),
        Route("/gemini/{version}/models/{model}:batchEmbedContents", embed, methods=["POST"]),
        Route("/gemini/{version}/batches", list_batches, methods=["GET"]),
        Route("/gemini/{version}/batches/{batch_id}:cancel", cancel, methods=["POST"]),
        Route("/gemini/{version}/batches/{batch_id}", retrieve, methods=["GET"]),
        Route("/gemini/{version}/batches/{batch_id}", delete, methods=["DELETE"]),
    ]


def _no_version(request: HttpRequest) -> Response:
    version = request.path_params["version"]
    return gemini_wire.invalid(f"API version {version!r} not found; use one of {', '.join(VERSIONS)}", 404, "NOT_FOUND")


def _not_found(batch_id: str) -> Response:
    return gemini_wire.invalid(f"Batch batches/{batch_id} not found.", 404, "NOT_FOUND")


def _generate(ctx: Context, body: Any, model: str) -> Response:
    try:
        request = gemini_wire.to_request(body, "sync", model)
    except WireError as exc:
        return gemini_wire.invalid(exc.message)
    now = ctx.now()
    with ctx.store.write() as conn:
        ctx.store.record(conn, DIALECT, None, [None], now)
    outcome = ctx.answerer.answer(request, ("sync", ctx.tick()), now, in_batch=False)
    if isinstance(outcome, Succeeded):
        return JSONResponse(gemini_wire.response(outcome, request.model, new_id("resp-")))
    assert isinstance(outcome, Errored)
    status, err = gemini_wire.error_of(outcome)
    return JSONResponse(err, status_code=status)


def _inline_rows(items: list[Any], model: str, endpoint: str | None) -> tuple[list[tuple[int, str, str]], str | None]:
    rows: list[tuple[int, str, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
            return [], f"batch.inputConfig.requests.requests[{i}].request: required"
        metadata = item.get("metadata")
        key = metadata.get("key") if isinstance(metadata, dict) else None
        params = {"model": model, "request": item["request"], "metadata": metadata, "endpoint": endpoint}
        rows.append((i, key if isinstance(key, str) else f"request-{i + 1}", dumps(params)))
    return rows, None


def _create(ctx: Context, body: Any, model: str, endpoint: str | None = None) -> Response:
    batch = body.get("batch") if isinstance(body, dict) else None
    config = batch.get("inputConfig") if isinstance(batch, dict) else None
    if not isinstance(batch, dict) or not isinstance(config, dict):
        return gemini_wire.invalid("batch.inputConfig: required")
    model = model.removeprefix("models/")
    # Proto JSON takes either spelling; google-genai's create_embeddings sends `file_name` as it is.
    file_name = config.get("fileName", config.get("file_name"))
    rows: list[tuple[int, str, str]] = []
    if isinstance(file_name, str):
        source = gemini_file(ctx, file_name)
        if source is None or source["kind"] != "upload":
            return gemini_wire.invalid(f"File {file_name} not found or not accessible.", 404, "NOT_FOUND")
    else:
        items = (config.get("requests") or {}).get("requests")
        if not isinstance(items, list) or not items:
            return gemini_wire.invalid("batch.inputConfig: give requests.requests (non-empty) or fileName")
        rows, problem = _inline_rows(items, model, endpoint)
        if problem:
            return gemini_wire.invalid(problem)
    now, cfg = ctx.now(), ctx.config
    window = cfg.faults.window if cfg.faults.window is not None else WINDOW_HOURS * 3600
    batch_id = new_id("", 10)
    with ctx.store.write() as conn:
        conn.execute(
            sa.insert(batches).values(
                id=batch_id,
                dialect=DIALECT,
                state=BatchState.SUBMITTED.value,
                created_at=now,
                start_at=now + cfg.real(cfg.timings.queue),
                expires_at=now + cfg.real(window),
                total=len(rows),
                input_file_id=file_name if isinstance(file_name, str) else None,
                model=model,
                endpoint=endpoint,
                metadata={"displayName": str(batch.get("displayName") or "")},
            )
        )
        if rows:
            insert_requests(conn, batch_id, cfg.faults.seed, iter(rows))
            ctx.store.record(conn, DIALECT, f"batches/{batch_id}", [r[1] for r in rows], now)
        row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).mappings().one()
    ctx.processor.wake()
    return JSONResponse(gemini_wire.batch_view(row, None))


def _cancel(ctx: Context, batch_id: str) -> Response:
    row = get_batch(ctx.store, DIALECT, batch_id)
    if row is None:
        return _not_found(batch_id)
    state = BatchState(row["state"])
    if state.terminal:
        return gemini_wire.invalid(f"Batch batches/{batch_id} has already ended.", 400, "FAILED_PRECONDITION")
    if state is not BatchState.CANCELING:
        now, cfg = ctx.now(), ctx.config
        until = now + cfg.real(cfg.timings.cancel + cfg.faults.stuck_canceling)
        state = request_cancel(ctx.store, row["id"], now, until)
        if state.terminal:  # it ended between the read above and the cancel: as if it had ended before
            return gemini_wire.invalid(f"Batch batches/{batch_id} has already ended.", 400, "FAILED_PRECONDITION")
        ctx.processor.wake()
    return JSONResponse({})  # google.protobuf.Empty, as the real cancel answers


def _count_tokens(ctx: Context, body: Any, model: str) -> Response:
    """POST models/{model}:countTokens: `contents` (or a whole `generateContentRequest`), by the engine's tokenizer."""
    inner = body.get("generateContentRequest") if isinstance(body, dict) else None
    try:
        request = gemini_wire.to_request(inner or body, "count", model)
    except WireError as exc:
        return gemini_wire.invalid(exc.message)
    return JSONResponse({"totalTokens": count(ctx, DIALECT, request)})
