"""The ASGI app: every dialect's routes behind one gate (API key, planted API-level faults, request ids)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from freight.domain import ErrorKind
from freight.server import (
    anthropic_api,
    azure_api,
    engines,
    gemini_api,
    gemini_files,
    gemini_wire,
    openai_api,
    openai_files,
    webhooks,
)
from freight.server.config import ServerConfig
from freight.server.context import Context
from freight.server.processor import Dialect, Processor
from freight.server.responses import dialect_error
from freight.server.store import Store
from freight.server.wire import Answerer, new_id

log = logging.getLogger("freight.server")

OPEN_PATHS = ("/_freight/health",)


def dialect_of(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/openai/"):
        return "azure"
    if path.startswith("/gemini/"):
        return "gemini"
    return "openai"


def _is_api_path(path: str) -> bool:
    """The paths planted API-level faults apply to: every dialect's API, not the admin routes."""
    return path.startswith(("/v1/", "/openai/", "/gemini/"))


_GEMINI_KINDS = {
    "auth": ErrorKind.AUTH,
    "not_found": ErrorKind.NOT_FOUND,
    "invalid": ErrorKind.INVALID_REQUEST,
    "rate_limited": ErrorKind.RATE_LIMITED,
    "server_error": ErrorKind.SERVER_ERROR,
    "overloaded": ErrorKind.OVERLOADED,
    "too_large": ErrorKind.INVALID_REQUEST,
}


def error_for(
    dialect: str, status: int, kind: str, message: str, headers: dict[str, str] | None = None, retry: float = 1.0
) -> Response:
    """An error in its dialect's shape; Gemini has its own statuses, and says when to retry in a RetryInfo."""
    if dialect == "gemini":
        delay = retry if kind == "rate_limited" else None
        return gemini_wire.error_response(_GEMINI_KINDS[kind], message, delay)
    return dialect_error(dialect, status, kind, message, headers)


class Gate:
    """Refuses requests without the key, then plants the API-level faults of the SPEC, then tags a request id."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self._key = ctx.config.api_key.encode()

    def _authorized(self, headers: Headers) -> bool:
        # Anthropic: x-api-key or a bearer token; OpenAI: bearer; Azure: api-key; Gemini: x-goog-api-key.
        given = headers.get("x-api-key") or headers.get("api-key") or headers.get("x-goog-api-key") or ""
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A Gemini upload session's URL is its own credential, as Google's are: the SDK sends no key there.
        if (
            scope["type"] != "http"
            or scope["path"] in OPEN_PATHS
            or scope["path"].startswith(gemini_files.SESSION_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        dialect = dialect_of(path)
        if not self._authorized(Headers(scope=scope)):
            if dialect == "gemini":
                await gemini_wire.bad_key()(scope, receive, send)
                return
            message = "invalid x-api-key" if dialect == "anthropic" else "Incorrect API key provided."
            await dialect_error(dialect, 401, "auth", message)(scope, receive, send)
            return
        if _is_api_path(path):
            planted = await self._planted(dialect)
            if planted is not None:
                await planted(scope, receive, send)
                return
        request_id = new_id("req_")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["request-id" if dialect == "anthropic" else "x-request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)

    async def _planted(self, dialect: str) -> Response | None:
        spec = self.ctx.config.faults
        n = self.ctx.tick()
        if spec.slow and spec.draw("slow", n) < spec.slow:
            await asyncio.sleep(spec.slow_seconds)
        if spec.http429 and spec.draw("http429", n) < spec.http429:
            headers = {
                "retry-after": str(max(1, round(spec.retry_after))),
                "retry-after-ms": str(int(spec.retry_after * 1000)),
            }
            return error_for(
                dialect, 429, "rate_limited", "Rate limit exceeded (planted fault).", headers, spec.retry_after
            )
        if spec.http5xx and spec.draw("http5xx", n) < spec.http5xx:
            if spec.draw("http5xx-kind", n) < 0.5:
                status = 529 if dialect == "anthropic" else 503
                return error_for(dialect, status, "overloaded", "Overloaded (planted fault).")
            return error_for(dialect, 500, "server_error", "Internal server error (planted fault).")
        return None


def build_context(config: ServerConfig) -> tuple[Context, dict[str, Dialect]]:
    store = Store(config.db)
    engine = engines.create(config.engine, config.faults.seed, **config.engine_options)
    answerer = Answerer(engine, store, config.faults)
    dialects: dict[str, Dialect] = {
        "anthropic": anthropic_api.AnthropicDialect(),
        "openai": openai_api.OpenAIDialect(store, config.faults.seed),
        "azure": openai_api.OpenAIDialect(store, config.faults.seed, "azure", azure_api.MAX_REQUESTS),
        "gemini": gemini_api.GeminiDialect(store, config.faults.seed),
    }
    processor = Processor(config, store, answerer, dialects)
    processor.ended = lambda conn, batch, state, now: _queue_webhooks(config, conn, batch, state, now)
    return Context(config, store, answerer, processor), dialects


def _queue_webhooks(config: ServerConfig, conn: Any, batch: Any, state: Any, now: float) -> None:
    webhooks.enqueue(conn, config, batch["id"], batch["dialect"], state, now)


def create_app(config: ServerConfig) -> Starlette:
    ctx, _ = build_context(config)
    sender = webhooks.Sender(config, ctx.store)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        ctx.processor.start()
        sender.start()
        try:
            yield
        finally:
            sender.stop()
            ctx.processor.stop()
            ctx.store.close()

    async def health(_request: HttpRequest) -> Response:
        return JSONResponse({"ok": True})

    async def records(_request: HttpRequest) -> Response:
        return JSONResponse(await asyncio.to_thread(ctx.store.records))

    async def webhook_log(_request: HttpRequest) -> Response:
        return JSONResponse(await asyncio.to_thread(webhooks.deliveries, ctx.store))
    async def counts(_request: HttpRequest) -> Response:
        return JSONResponse(await asyncio.to_thread(ctx.store.counts))

    async def http_error(request: HttpRequest, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        kind = {404: "not_found", 405: "invalid"}.get(status, "server_error")
        message = f"{request.method} {request.url.path}: " + ("no such endpoint" if status in (404, 405) else "failed")
        if status == 500:
            log.exception("request failed", exc_info=exc)
        return error_for(dialect_of(request.url.path), status, kind, message)

    routes: list[Any] = [
        Route("/_freight/health", health, methods=["GET"]),
        Route("/_freight/records", records, methods=["GET"]),
        Route("/_freight/webhooks", webhook_log, methods=["GET"]),
        Route("/_freight/counts", counts, methods=["GET"]),
        *anthropic_api.routes(ctx),
        *openai_api.routes(ctx),
        *openai_files.routes(ctx),
        *azure_api.routes(ctx),
        *gemini_files.routes(ctx),
        *gemini_api.routes(ctx),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: http_error},
    )
    app.state.ctx = ctx
    app.add_middleware(Gate, ctx=ctx)
    return app


def serve(config: ServerConfig) -> None:
    import uvicorn

    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning")
