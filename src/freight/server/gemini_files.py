"""Gemini's Files API: resumable uploads (`files.upload`), file metadata, downloads, and a batch's results file.

`files.upload` starts a session with `POST upload/{version}/files` (`X-Goog-Upload-Protocol: resumable`,
`X-Goog-Upload-Command: start`, the size in `X-Goog-Upload-Header-Content-Length`); the answer's
`X-Goog-Upload-URL` names the session, and the bytes go there in 8 MB pieces (`upload`, the last `upload, finalize`),
each at its `X-Goog-Upload-Offset`, without the key. The session URL is a secret, as Google's is; sessions live in
memory, so an upload interrupted by a restart starts again (the SDK restarts it anyway).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from freight.domain import Errored, Outcome, Succeeded
from freight.server import gemini_wire
from freight.server.batch_rows import result_rows
from freight.server.context import Context
from freight.server.faults import FaultSpec
from freight.server.openai_files import get_file, iter_lines
from freight.server.responses import dumps, jsonl_stream
from freight.server.store import file_chunks, files
from freight.server.wire import new_id, rfc3339

MAX_FILE_BYTES = 2 * 1024**3
PURPOSE = "gemini"
SESSION_PREFIX = "/gemini/_upload/"  # open path: the session token in it is the credential
_OUTCOME: TypeAdapter[Any] = TypeAdapter(Outcome)


def file_view(row: sa.RowMapping, base_url: str) -> dict[str, Any]:
    return {
        "name": row["id"],
        "displayName": row["filename"],
        "mimeType": "application/jsonl",
        "sizeBytes": str(row["bytes"]),
        "createTime": rfc3339(row["created_at"]),
        "updateTime": rfc3339(row["created_at"]),
        "expirationTime": rfc3339(row["created_at"] + 48 * 3600),
        "uri": f"{base_url}/gemini/v1beta/{row['id']}",
        "state": "ACTIVE",
        "source": "GENERATED" if row["kind"] == "output" else "UPLOADED",
    }


def gemini_file(ctx: Context, name: str) -> sa.RowMapping | None:
    row = get_file(ctx.store, name)
    return row if row is not None and row["purpose"] == PURPOSE and row["kind"] in ("upload", "output") else None


def result_item(row: Any, with_key: bool) -> dict[str, Any]:
    """One request's result: `{"response"}` or `{"error": <google.rpc.Status>}`, with its key (file lines) or its
    request's metadata (inline responses)."""
    outcome = _OUTCOME.validate_json(row.outcome)
    params = json.loads(row.params)
    item: dict[str, Any]
    if isinstance(outcome, Succeeded) and params.get("endpoint") == "embeddings":
        item = {"response": {"embedding": {"values": outcome.parsed}, "tokenCount": outcome.usage.input_tokens}}
    elif isinstance(outcome, Succeeded):
        item = {"response": gemini_wire.response(outcome, params.get("model", ""), row.response_id or new_id("r"))}
    elif isinstance(outcome, Errored):
        item = {"error": gemini_wire.status_of(outcome)}
    else:
        item = {"error": gemini_wire.end_status(outcome.status)}
    if with_key:
        return {"key": row.custom_id, **item}
    if params.get("metadata") is not None:
        item["metadata"] = params["metadata"]
    return item


def write_results_file(conn: sa.Connection, batch: sa.RowMapping, now: float) -> str:
    """Register the results file of a batch that came from a file; its lines are made from the rows when read."""
    file_id = f"files/batch-{batch['id']}"
    conn.execute(
        sa.insert(files).values(
            id=file_id,
            purpose=PURPOSE,
            filename=f"{batch['id']}-responses.jsonl",
            bytes=0,
            created_at=now,
            kind="output",
            batch_id=batch["id"],
        )
    )
    return file_id


class _Sessions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str, int, int]] = {}  # token -> (file name, declared size, bytes so far)

    def start(self, name: str, size: int) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._open[token] = (name, size, 0)
        return token

    def get(self, token: str) -> tuple[str, int, int] | None:
        with self._lock:
            return self._open.get(token)

    def advance(self, token: str, received: int, final: bool) -> None:
        with self._lock:
            name, size, offset = self._open[token]
            if final:
                del self._open[token]
            else:
                self._open[token] = (name, size, offset + received)


def routes(ctx: Context) -> list[Route]:
    sessions = _Sessions()

    async def start(request: HttpRequest) -> Response:
        if request.headers.get("x-goog-upload-protocol") != "resumable":
            return gemini_wire.invalid("freight serve takes uploads with X-Goog-Upload-Protocol: resumable only")
        try:
            size = int(request.headers.get("x-goog-upload-header-content-length") or "")
        except ValueError:
            return gemini_wire.invalid("X-Goog-Upload-Header-Content-Length: the file size is required")
        if size > MAX_FILE_BYTES:
            return gemini_wire.invalid(f"File of {size} bytes exceeds the limit of {MAX_FILE_BYTES} bytes; split it.")
        try:
            meta = (json.loads(await request.body() or b"{}") or {}).get("file") or {}
        except (ValueError, AttributeError):
            meta = {}
        name = "files/" + new_id("", 8)
        display = str(meta.get("display_name") or meta.get("displayName") or name)
        with ctx.store.write() as conn:
            conn.execute(
                sa.insert(files).values(
                    id=name, purpose=PURPOSE, filename=display, bytes=size, created_at=ctx.now(), kind="partial"
                )
            )
        token = sessions.start(name, size)
        url = f"{str(request.base_url).rstrip('/')}{SESSION_PREFIX}{token}"
        return JSONResponse({}, headers={"x-goog-upload-url": url, "x-goog-upload-status": "active"})

    async def chunk(request: HttpRequest) -> Response:
        token = request.path_params["token"]
        session = sessions.get(token)
        # Every answer names the upload status: without one the SDK retries the chunk on its own.
        if session is None:
            return JSONResponse(
                gemini_wire.error_body(404, "NOT_FOUND", "No such upload session; start the upload again."),
                status_code=404,
                headers={"x-goog-upload-status": "final"},
            )
        name, size, offset = session
        command = {c.strip() for c in (request.headers.get("x-goog-upload-command") or "").split(",")}
        data = await request.body()
        if int(request.headers.get("x-goog-upload-offset") or 0) != offset or offset + len(data) > size:
            body = gemini_wire.error_body(400, "INVALID_ARGUMENT", f"Upload offset mismatch: expected {offset}.")
            return JSONResponse(body, status_code=400, headers={"x-goog-upload-status": "active"})
        final = "finalize" in command
        await run_in_threadpool(_append, ctx, name, offset, data, final)
        sessions.advance(token, len(data), final)
        if not final:
            return Response(b"", headers={"x-goog-upload-status": "active"})
        row = gemini_file(ctx, name)
        assert row is not None
        return JSONResponse({"file": file_view(row, _base(request))}, headers={"x-goog-upload-status": "final"})

    async def retrieve(request: HttpRequest) -> Response:
        name = "files/" + request.path_params["file_id"]
        row = await run_in_threadpool(gemini_file, ctx, name)
        if row is None:
            return _not_found(name)
        return JSONResponse(file_view(row, _base(request)))

    async def delete(request: HttpRequest) -> Response:
        name = "files/" + request.path_params["file_id"]
        if await run_in_threadpool(gemini_file, ctx, name) is None:
            return _not_found(name)
        with ctx.store.write() as conn:
            conn.execute(sa.update(files).where(files.c.id == name).values(deleted=True))
            conn.execute(sa.delete(file_chunks).where(file_chunks.c.file_id == name))
        return JSONResponse({})

    async def download(request: HttpRequest) -> Response:
        name = "files/" + request.path_params["file_id"]
        row = await run_in_threadpool(gemini_file, ctx, name)
        if row is None:
            return _not_found(name)
        if row["kind"] == "upload":
            return jsonl_stream(iter_lines(ctx.store, name), FaultSpec(), name, 0, "application/octet-stream")
        # A results file carries the planted results faults, keyed by its batch.
        lines: Iterator[str] = (dumps(result_item(r, True)) for r in result_rows(ctx.store, row["batch_id"]))
        return jsonl_stream(lines, ctx.config.faults, row["batch_id"], ctx.tick(), "application/octet-stream")

    return [
        Route("/gemini/upload/{version}/files", start, methods=["POST"]),
        Route(SESSION_PREFIX + "{token}", chunk, methods=["POST", "PUT"]),
        Route("/gemini/{version}/files/{file_id}:download", download, methods=["GET"]),
        Route("/gemini/{version}/files/{file_id}", retrieve, methods=["GET"]),
        Route("/gemini/{version}/files/{file_id}", delete, methods=["DELETE"]),
    ]


def _base(request: HttpRequest) -> str:
    return str(request.base_url).rstrip("/")


def _not_found(name: str) -> Response:
    return gemini_wire.invalid(f"File {name} not found or not accessible.", 404, "NOT_FOUND")


def _append(ctx: Context, name: str, offset: int, data: bytes, final: bool) -> None:
    with ctx.store.write() as conn:
        if data:
            n = conn.execute(
                sa.select(sa.func.count()).select_from(file_chunks).where(file_chunks.c.file_id == name)
            ).scalar_one()
            conn.execute(sa.insert(file_chunks).values(file_id=name, n=n, data=data))
        if final:
            conn.execute(sa.update(files).where(files.c.id == name).values(kind="upload", bytes=offset + len(data)))
