"""OpenAI's Files API: uploads kept in 1 MB chunks, and the output / error files a batch writes when it ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from freight.domain import Errored, Outcome, Succeeded
from freight.server import openai_endpoints, openai_wire
from freight.server.batch_rows import result_rows
from freight.server.context import Context
from freight.server.faults import FaultSpec
from freight.server.responses import dumps, jsonl_stream, openai_error
from freight.server.store import Store, file_chunks, files
from freight.server.wire import new_id, unix

MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")
_OUTCOME: TypeAdapter[Any] = TypeAdapter(Outcome)
_END_ERRORS = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "canceled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
}


def file_view(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": unix(row["created_at"]),
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def get_file(store: Store, file_id: str) -> sa.RowMapping | None:
    with store.read() as conn:
        return (
            conn.execute(sa.select(files).where(files.c.id == file_id, files.c.deleted.is_(False))).mappings().first()
        )


def iter_chunks(store: Store, file_id: str) -> Iterator[bytes]:
    n = 0
    while True:
        with store.read() as conn:
            data = conn.execute(
                sa.select(file_chunks.c.data).where(file_chunks.c.file_id == file_id, file_chunks.c.n == n)
            ).scalar()
        if data is None:
            return
        yield data
        n += 1


def iter_lines(store: Store, file_id: str) -> Iterator[str]:
    """The file's lines without their newline, blank lines included (validation reports them by number)."""
    rest = b""
    for chunk in iter_chunks(store, file_id):
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace").rstrip("\r")
    if rest:
        yield rest.decode("utf-8", errors="replace").rstrip("\r")


def _store_upload(ctx: Context, upload: UploadFile, purpose: str) -> Response:
    file_id, size, n = new_id("file-"), 0, 0
    with ctx.store.write() as conn:
        while True:
            data = upload.file.read(CHUNK_BYTES)
            if not data:
                break
            size += len(data)
            if purpose == "batch" and size > MAX_BATCH_FILE_BYTES:
                # The transaction rolls back with the exception below: no partial file is kept.
                raise _TooLarge()
            conn.execute(sa.insert(file_chunks).values(file_id=file_id, n=n, data=data))
            n += 1
        conn.execute(
            sa.insert(files).values(
                id=file_id,
                purpose=purpose,
                filename=upload.filename or "upload.jsonl",
                bytes=size,
                created_at=ctx.now(),
                kind="upload",
            )
        )
    row = get_file(ctx.store, file_id)
    assert row is not None
    return JSONResponse(file_view(row))


class _TooLarge(Exception):
    pass


def routes(ctx: Context, prefix: str = "/v1") -> list[Route]:
    async def upload(request: HttpRequest) -> Response:
        form = await request.form(max_part_size=1024 * 1024)
        purpose, upload_file = form.get("purpose"), form.get("file")
        if not isinstance(upload_file, UploadFile):
            return openai_error(400, "'file' is a required property", param="file")
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            return openai_error(400, f"purpose: {purpose!r} is not one of {', '.join(PURPOSES)}", param="purpose")
        try:
            return await run_in_threadpool(_store_upload, ctx, upload_file, purpose)
        except _TooLarge:
            return openai_error(
                400,
                f"File is larger than the batch input limit of {MAX_BATCH_FILE_BYTES} bytes; split it.",
                param="file",
            )
        finally:
            await form.close()

    async def retrieve(request: HttpRequest) -> Response:
        row = await run_in_threadpool(get_file, ctx.store, request.path_params["file_id"])
        if row is None:
            return _not_found(request.path_params["file_id"])
        return JSONResponse(file_view(row))

    async def content(request: HttpRequest) -> Response:
        file_id = request.path_params["file_id"]
        row = await run_in_threadpool(get_file, ctx.store, file_id)
        if row is None:
            return _not_found(file_id)
        if row["kind"] == "upload":
            lines = iter_lines(ctx.store, file_id)
            return jsonl_stream(lines, FaultSpec(), file_id, 0, "application/octet-stream")
        # Results files carry the planted results faults, keyed by their batch.
        lines = iter_lines(ctx.store, file_id)
        return jsonl_stream(lines, ctx.config.faults, row["batch_id"], ctx.tick(), "application/octet-stream")

    async def delete(request: HttpRequest) -> Response:
        file_id = request.path_params["file_id"]
        return await run_in_threadpool(_delete, ctx, file_id)

    return [
        Route(f"{prefix}/files", upload, methods=["POST"]),
        Route(f"{prefix}/files/{{file_id}}", retrieve, methods=["GET"]),
        Route(f"{prefix}/files/{{file_id}}", delete, methods=["DELETE"]),
        Route(f"{prefix}/files/{{file_id}}/content", content, methods=["GET"]),
    ]


def _not_found(file_id: str) -> Response:
    return openai_error(404, f"No such File object: {file_id}", param="id")


def _delete(ctx: Context, file_id: str) -> Response:
    if get_file(ctx.store, file_id) is None:
        return _not_found(file_id)
    with ctx.store.write() as conn:
        conn.execute(sa.update(files).where(files.c.id == file_id).values(deleted=True))
        conn.execute(sa.delete(file_chunks).where(file_chunks.c.file_id == file_id))
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def write_results_files(conn: sa.Connection, store: Store, batch: sa.RowMapping, now: float) -> dict[str, str]:
    """Write a batch's output file (succeeded lines) and error file (everything else); return their ids by kind."""
    written: dict[str, str] = {}
    for kind in ("output", "error"):
        file_id, size, n, buf = new_id("file-"), 0, 0, bytearray()
        for row in result_rows(store, batch["id"], conn=conn):
            line = _output_line(row, kind, batch["id"], openai_endpoints.kind_of(batch["endpoint"]))
            if line is None:
                continue
            buf += (line + "\n").encode()
            if len(buf) >= CHUNK_BYTES:
                conn.execute(sa.insert(file_chunks).values(file_id=file_id, n=n, data=bytes(buf)))
                size, n, buf = size + len(buf), n + 1, bytearray()
        if buf:
            conn.execute(sa.insert(file_chunks).values(file_id=file_id, n=n, data=bytes(buf)))
            size, n = size + len(buf), n + 1
        if n == 0:
            continue  # like the real service: no file when it would be empty
        conn.execute(
            sa.insert(files).values(
                id=file_id,
                purpose="batch_output",
                filename=f"{batch['id']}_{kind}.jsonl",
                bytes=size,
                created_at=now,
                kind=kind,
                batch_id=batch["id"],
            )
        )
        written[kind] = file_id
    return written


def _output_line(row: Any, kind: str, batch_id: str, endpoint: str) -> str | None:
    outcome = _OUTCOME.validate_json(row.outcome)
    request_id = "req_" + (row.response_id or new_id(""))[-24:]
    line_id = f"batch_req_{batch_id[-8:]}{row.idx:08d}"
    if isinstance(outcome, Succeeded):
        if kind != "output":
            return None
        params = json.loads(row.params)
        body = openai_endpoints.render(endpoint, outcome, params, row.response_id, unix(row.finished_at) or 0)
        response: dict[str, Any] | None = {"status_code": 200, "request_id": request_id, "body": body}
        return dumps({"id": line_id, "custom_id": row.custom_id, "response": response, "error": None})
    if kind != "error":
        return None
    if isinstance(outcome, Errored):
        status, err = openai_wire.error_of(outcome)
        response = {"status_code": status, "request_id": request_id, "body": err}
        return dumps({"id": line_id, "custom_id": row.custom_id, "response": response, "error": None})
    code, message = _END_ERRORS[outcome.status]
    return dumps(
        {"id": line_id, "custom_id": row.custom_id, "response": None, "error": {"code": code, "message": message}}
    )
